"""The SQL connector against the QuoteWerks schema subset, created in SQLite and in the test PostgreSQL: the same
reads and guarded writes a SQL Server installation gets (their SQL Server form is checked in
tests/unit/test_quotewerks_sql_mssql.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Column, Integer, MetaData, Table, Unicode, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql import Update

from services.quote_ingest.ingest import Ingest, IngestRules
from shared.contracts import OrderResult, OrderStatusChanged
from shared.platform.outbox import Outbox
from shared.quotewerks import QuoteWerksConflictError, QuoteWerksError, quote_from_document
from shared.quotewerks.connect import quotewerks_client
from shared.quotewerks.sql import QuoteWerksSqlClient
from tests.conftest import _create_database, _drop_database
from tests.quotewerks_db import create_schema, header, insert_quote, product_line, save

T0 = datetime(2026, 12, 1, 9, 30, 0, 250000)  # as QuoteWerks keeps it: naive (here UTC), with fractions
WRITABLE = {"CustomText01": False, "CustomText02": True}


@pytest.fixture(params=["sqlite", "postgresql"])
def qw_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A QuoteWerks database with the schema subset and nothing in it (PostgreSQL: a database of its own)."""
    name = ""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'quotewerks.db'}"
    else:
        base: str = request.getfixturevalue("postgres_url")
        name = f"m3b_qw_{uuid.uuid4().hex[:12]}"
        asyncio.run(_create_database(name))
        url = base.rsplit("/", 1)[0] + f"/{name}"

    async def create() -> None:
        engine = create_async_engine(url)
        try:
            await create_schema(engine)
        finally:
            await engine.dispose()

    asyncio.run(create())
    try:
        yield url
    finally:
        if name:
            asyncio.run(_drop_database(name))


@pytest.fixture
async def db(qw_url: str) -> AsyncIterator[AsyncEngine]:
    """The test's own connection to the QuoteWerks database (what QuoteWerks itself does to it)."""
    engine = create_async_engine(qw_url)
    yield engine
    await engine.dispose()


def connect(url: str, **options: Any) -> QuoteWerksSqlClient:
    client = quotewerks_client(url, SecretStr(""), http=httpx.AsyncClient(), writable=WRITABLE, **options)
    assert isinstance(client, QuoteWerksSqlClient)
    return client


@pytest.fixture
async def qw(qw_url: str) -> AsyncIterator[QuoteWerksSqlClient]:
    client = connect(qw_url)
    yield client
    await client.aclose()


async def test_an_approved_quote_reads_as_the_document_quote_from_document_expects(
    qw: QuoteWerksSqlClient, db: AsyncEngine
) -> None:
    lines = [
        product_line("ITM000002", 3, 20.5, sort=2),
        {"SortOrder": 3, "LineType": 2, "Description": "Delivery in two parts"},
        product_line("ITM000001", 2, 10.0, sort=1, DiscountPercent=10.0),
    ]
    doc_id = await insert_quote(
        db, "AAAQ2001", status="Accepted", stamp=T0, lines=lines, SoldToContact="Ann Lee", SoldToPhone="+1 555 0100"
    )
    document = await qw.document("AAAQ2001")
    head, items = document["DocumentHeader"], document["DocumentItems"]
    assert head["ID"] == doc_id
    assert head["DocNo"] == "AAAQ2001"
    assert head["DocStatus"] == "Accepted"
    assert head["LastModified"] == "2026-12-01T09:30:00.250000+00:00"
    assert head["CustomText01"] is None
    assert [i["SortOrder"] for i in items] == [1, 2, 3]
    assert {i["DocID"] for i in items} == {doc_id}
    quote = quote_from_document(document, approval_event="poller", approved_at=datetime.now(UTC))
    assert quote.doc_no == "AAAQ2001"
    assert quote.sold_to.company == "Acme Corp"
    assert quote.sold_to.contact == "Ann Lee"
    assert quote.sold_to.cm_account_no == "C000001"
    assert quote.sold_to.phone_number == "+1 555 0100"  # QuoteWerks' SoldToPhone
    assert [(ln.manufacturer_part_number, ln.qty_total) for ln in quote.lines][:2] == [
        ("ITM000001", 2),
        ("ITM000002", 3),
    ]
    assert quote.lines[0].discount_percent == 10
    assert quote.lines[2].line_type == 2
    assert quote.ship_via == "UPS Ground"


async def test_an_unknown_document_is_a_404(qw: QuoteWerksSqlClient) -> None:
    with pytest.raises(QuoteWerksError) as caught:
        await qw.document("AAAQ404")
    assert caught.value.status == 404
    assert not caught.value.retryable


async def test_documents_lists_quotes_of_a_status_changed_since_a_point_oldest_first(
    qw: QuoteWerksSqlClient, db: AsyncEngine
) -> None:
    line = [product_line("ITM000001", 1, 5.0, sort=1)]
    await insert_quote(db, "AAAQ3002", status="Accepted", stamp=T0 + timedelta(minutes=10), lines=line)
    await insert_quote(db, "AAAQ3001", status="Accepted", stamp=T0, lines=line)
    await insert_quote(db, "AAAQ3003", status="Draft", stamp=T0 + timedelta(minutes=20), lines=line)
    await insert_quote(
        db, "AAAO3004", status="Accepted", stamp=T0 + timedelta(minutes=30), lines=line, doc_type="ORDER"
    )
    everything = await qw.documents(doc_type="QUOTE", status="Accepted", modified_since=None)
    assert [h["DocNo"] for h in everything] == ["AAAQ3001", "AAAQ3002"]
    since = (T0 + timedelta(minutes=10)).replace(tzinfo=UTC)  # inclusive: the poller's overlap relies on it
    assert [h["DocNo"] for h in await qw.documents(doc_type="QUOTE", status="Accepted", modified_since=since)] == [
        "AAAQ3002"
    ]
    later = since + timedelta(seconds=1)
    assert await qw.documents(doc_type="QUOTE", status="Accepted", modified_since=later) == []
    assert everything[1]["LastModified"] == "2026-12-01T09:40:00.250000+00:00"


async def test_change_stamps_in_local_time_are_read_and_queried_in_utc(qw_url: str, db: AsyncEngine) -> None:
    local = datetime(2026, 12, 1, 10, 0, 0)  # 10:00 in Berlin (CET) = 09:00 UTC
    await insert_quote(db, "AAAQ4001", status="Accepted", stamp=local, lines=[product_line("P1", 1, 1.0, sort=1)])
    client = connect(qw_url, time_zone="Europe/Berlin")
    try:
        (listed,) = await client.documents(
            doc_type="QUOTE", status="Accepted", modified_since=datetime(2026, 12, 1, 8, 59, tzinfo=UTC)
        )
        assert listed["LastModified"] == "2026-12-01T09:00:00+00:00"
        after = datetime(2026, 12, 1, 9, 0, 1, tzinfo=UTC)
        assert await client.documents(doc_type="QUOTE", status="Accepted", modified_since=after) == []
    finally:
        await client.aclose()


async def test_the_write_back_sets_only_the_configured_columns(qw: QuoteWerksSqlClient, db: AsyncEngine) -> None:
    await insert_quote(db, "AAAQ5001", status="Accepted", stamp=T0, lines=[product_line("P1", 1, 1.0, sort=1)])
    before = await header(db, "AAAQ5001")
    await qw.update_document("AAAQ5001", {"CustomText01": "0000123456", "CustomText02": "M3 order 0000123456"})
    after = await header(db, "AAAQ5001")
    assert after["CustomText01"] == "0000123456"
    assert after["CustomText02"] == "M3 order 0000123456"
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"CustomText01", "CustomText02"}  # not even the change stamp: QuoteWerks' own column
    with pytest.raises(QuoteWerksError, match="DocStatus is not a write-back column") as caught:
        await qw.update_document("AAAQ5001", {"DocStatus": "Won", "CustomText01": "x"})
    assert not caught.value.retryable
    assert await header(db, "AAAQ5001") == after


async def test_a_too_long_outcome_is_cut_and_a_too_long_order_number_refused(
    qw: QuoteWerksSqlClient, db: AsyncEngine
) -> None:
    await insert_quote(db, "AAAQ5002", status="Accepted", stamp=T0, lines=[product_line("P1", 1, 1.0, sort=1)])
    await qw.update_document("AAAQ5002", {"CustomText02": "held: " + "x" * 400})
    assert len((await header(db, "AAAQ5002"))["CustomText02"]) == 255
    with pytest.raises(QuoteWerksError, match="does not fit") as caught:
        await qw.update_document("AAAQ5002", {"CustomText01": "9" * 300})
    assert not caught.value.retryable
    assert (await header(db, "AAAQ5002"))["CustomText01"] is None


async def test_writing_an_unknown_document_is_a_404(qw: QuoteWerksSqlClient) -> None:
    with pytest.raises(QuoteWerksError) as caught:
        await qw.update_document("AAAQ404", {"CustomText01": "1"})
    assert caught.value.status == 404


class _SaveBeforeUpdate:
    """The connector's transaction, with a QuoteWerks save made (on another connection) right before each of its
    UPDATEs, after its read: the race the change stamp guards against."""

    def __init__(self, context: Any, edit: Callable[[], Awaitable[None]], counter: list[int]) -> None:
        self._context, self._edit, self._counter = context, edit, counter

    async def __aenter__(self) -> Any:
        connection = await self._context.__aenter__()
        edit, counter = self._edit, self._counter

        class Connection:
            async def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
                if isinstance(statement, Update):
                    counter.append(1)
                    await edit()
                return await connection.execute(statement, *args, **kwargs)

        return Connection()

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._context.__aexit__(*exc_info)


def save_during_writes(
    monkeypatch: pytest.MonkeyPatch, qw: QuoteWerksSqlClient, edit: Callable[[int], Awaitable[None]], times: int
) -> list[int]:
    updates: list[int] = []
    original = qw._begin

    async def edit_some() -> None:
        if len(updates) <= times:
            await edit(len(updates))

    monkeypatch.setattr(qw, "_begin", lambda: _SaveBeforeUpdate(original(), edit_some, updates))
    return updates


async def test_a_save_between_read_and_write_is_read_again_not_overwritten(
    qw: QuoteWerksSqlClient, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await insert_quote(db, "AAAQ6001", status="Accepted", stamp=T0, lines=[product_line("P1", 1, 1.0, sort=1)])

    async def rename(n: int) -> None:
        await save(db, "AAAQ6001", T0 + timedelta(seconds=n), DocName=f"Renamed {n}")

    updates = save_during_writes(monkeypatch, qw, rename, times=1)
    await qw.update_document("AAAQ6001", {"CustomText01": "0000777"})
    after = await header(db, "AAAQ6001")
    assert len(updates) == 2  # the first UPDATE found the document saved meanwhile and changed nothing
    assert after["DocName"] == "Renamed 1"
    assert after["LastModified"] == T0 + timedelta(seconds=1)
    assert after["CustomText01"] == "0000777"


async def test_a_document_saved_on_every_attempt_is_given_up_without_writing(
    qw: QuoteWerksSqlClient, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await insert_quote(db, "AAAQ6002", status="Accepted", stamp=T0, lines=[product_line("P1", 1, 1.0, sort=1)])

    async def rename(n: int) -> None:
        await save(db, "AAAQ6002", T0 + timedelta(seconds=n), DocName=f"Renamed {n}")

    updates = save_during_writes(monkeypatch, qw, rename, times=99)
    with pytest.raises(QuoteWerksConflictError, match="gave up after 3 attempts") as caught:
        await qw.update_document("AAAQ6002", {"CustomText01": "0000778"})
    assert caught.value.retryable
    assert len(updates) == 3
    after = await header(db, "AAAQ6002")
    assert after["CustomText01"] is None
    assert after["DocName"] == "Renamed 3"


async def test_a_write_back_column_typed_into_meanwhile_is_not_overwritten(
    qw: QuoteWerksSqlClient, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await insert_quote(db, "AAAQ6003", status="Accepted", stamp=T0, lines=[product_line("P1", 1, 1.0, sort=1)])

    async def type_in(n: int) -> None:
        await save(db, "AAAQ6003", T0 + timedelta(seconds=n), CustomText01="typed by a person")

    save_during_writes(monkeypatch, qw, type_in, times=1)
    with pytest.raises(QuoteWerksError, match="CustomText01 changed in QuoteWerks") as caught:
        await qw.update_document("AAAQ6003", {"CustomText01": "0000779"})
    assert caught.value.status == 409
    assert not caught.value.retryable  # retrying later would overwrite it: a person decides
    assert (await header(db, "AAAQ6003"))["CustomText01"] == "typed by a person"


async def test_a_repeated_write_back_changes_nothing(
    qw: QuoteWerksSqlClient, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await insert_quote(db, "AAAQ6004", status="Accepted", stamp=T0, lines=[product_line("P1", 1, 1.0, sort=1)])
    await qw.update_document("AAAQ6004", {"CustomText01": "0000780"})

    async def never(_: int) -> None:
        raise AssertionError("no UPDATE expected")

    updates = save_during_writes(monkeypatch, qw, never, times=99)
    await qw.update_document("AAAQ6004", {"CustomText01": "0000780"})
    assert updates == []


async def test_a_database_without_a_required_column_is_refused_by_name(qw_url: str) -> None:
    engine = create_async_engine(qw_url)
    other = MetaData()
    Table("DocumentHeaders", other, Column("ID", Integer, primary_key=True), Column("DocNo", Unicode(50)))
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql('DROP TABLE "DocumentHeaders"')
            await connection.run_sync(other.create_all)
    finally:
        await engine.dispose()
    client = connect(qw_url)
    try:
        with pytest.raises(QuoteWerksError) as caught:
            await client.document("AAAQ1")
    finally:
        await client.aclose()
    assert not caught.value.retryable
    for name in ("DocumentHeaders.DocType", "DocumentHeaders.DocStatus", "DocumentHeaders.LastModified"):
        assert name in str(caught.value)
    assert "DocumentHeaders.CustomText01" in str(caught.value)


async def test_a_configured_change_column_is_used_for_polling_and_reported_as_last_modified(
    qw_url: str, db: AsyncEngine
) -> None:
    """Sites whose change stamp has another name set M3B_QUOTEWERKS_SQL_CHANGE_COLUMN (here a DocDate stand-in)."""
    await insert_quote(
        db, "AAAQ7001", status="Accepted", stamp=T0, lines=[], DocDate=T0 + timedelta(hours=1), LastModified=None
    )
    client = connect(qw_url, change_column="DocDate")
    try:
        (listed,) = await client.documents(
            doc_type="QUOTE", status="Accepted", modified_since=(T0 + timedelta(minutes=59)).replace(tzinfo=UTC)
        )
        assert listed["LastModified"] == "2026-12-01T10:30:00.250000+00:00"
        await client.update_document("AAAQ7001", {"CustomText01": "0000781"})
        assert (await header(db, "AAAQ7001"))["CustomText01"] == "0000781"
    finally:
        await client.aclose()


async def test_an_unreachable_database_is_a_retryable_error() -> None:
    client = connect("postgresql+asyncpg://nobody@127.0.0.1:1/quotewerks")
    try:
        with pytest.raises(QuoteWerksError) as caught:
            await client.document("AAAQ1")
    finally:
        await client.aclose()
    assert caught.value.retryable


# --- the bridge's product table ------------------------------------------------------------------------------------
PUSHED = {"Description": "Widget, blue", "UnitOfMeasure": "EA", "Price": 12.5, "Active": True, "Availability": 7}


async def test_a_product_is_created_then_replaced_in_the_bridges_table(qw: QuoteWerksSqlClient) -> None:
    assert await qw.find_product("ITM000001") is None
    assert await qw.put_product("ITM000001", PUSHED) is True
    found = await qw.find_product("ITM000001")
    assert found is not None
    assert {k: found[k] for k in PUSHED} == PUSHED
    assert found["LastModified"].endswith("+00:00")
    assert await qw.put_product("ITM000001", {**PUSHED, "Price": 13.25, "Active": False, "Availability": 0}) is False
    again = await qw.find_product("ITM000001")
    assert again is not None
    assert (again["Price"], again["Active"], again["Availability"]) == (13.25, False, 0)
    assert again["Description"] == "Widget, blue"
    [listed] = await qw.all_products()  # what a catalog reconciliation compares with M3
    assert (listed["ManufacturerPartNumber"], listed["Price"], listed["Active"]) == ("ITM000001", 13.25, False)


async def test_a_batch_of_products_creates_the_new_and_replaces_the_known_in_one_transaction(
    qw: QuoteWerksSqlClient, db: AsyncEngine
) -> None:
    await qw.put_product("ITM000010", PUSHED)
    batch = {f"ITM{n:06d}": {**PUSHED, "Price": float(n), "Availability": n} for n in range(10, 1210)}
    assert await qw.put_products(batch) == set(batch) - {"ITM000010"}
    assert await qw.put_products({"ITM000010": {"Price": 99.0, "Active": False}, "ITM000011": PUSHED}) == set()
    known = await qw.find_product("ITM000010")
    other = await qw.find_product("ITM001209")
    assert known is not None
    assert other is not None
    assert (known["Price"], known["Active"], known["Availability"]) == (99.0, False, 10)
    assert known["Description"] == "Widget, blue"
    assert (other["Price"], other["Availability"]) == (1209.0, 1209)
    async with db.connect() as connection:
        rows = (await connection.execute(text('SELECT COUNT(*) FROM "M3BridgeProducts"'))).scalar_one()
    assert rows == 1200


async def test_a_batch_with_one_value_the_table_cannot_hold_writes_nothing(qw: QuoteWerksSqlClient) -> None:
    with pytest.raises(QuoteWerksError, match="ITM000022") as caught:
        await qw.put_products({"ITM000021": PUSHED, "ITM000022": {**PUSHED, "Availability": -1}})
    assert not caught.value.retryable
    assert await qw.find_product("ITM000021") is None


async def test_a_batch_racing_another_writer_over_a_new_product_still_writes_each_once(
    qw: QuoteWerksSqlClient, db: AsyncEngine
) -> None:
    batch = {f"ITM{n:06d}": PUSHED for n in range(30, 40)}
    results = await asyncio.gather(qw.put_products(batch), qw.put_product("ITM000035", PUSHED),
                                   qw.put_products(batch))  # fmt: skip
    created = [part for result in (results[0], results[2]) for part in result]
    assert sorted(created + (["ITM000035"] if results[1] else [])) == sorted(batch)
    async with db.connect() as connection:
        rows = (await connection.execute(text('SELECT COUNT(*) FROM "M3BridgeProducts"'))).scalar_one()
    assert rows == 10


async def test_concurrent_creates_of_one_product_leave_one_row(qw: QuoteWerksSqlClient, db: AsyncEngine) -> None:
    created = await asyncio.gather(*(qw.put_product("ITM000002", {**PUSHED, "Availability": n}) for n in range(4)))
    assert sorted(created) == [False, False, False, True]
    async with db.connect() as connection:
        rows = (await connection.execute(text('SELECT COUNT(*) FROM "M3BridgeProducts"'))).scalar_one()
    assert rows == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"Price": "twelve"}, "Price 'twelve' is not a number"),
        ({"Price": 1e16}, "does not fit DECIMAL"),
        ({"Availability": -1}, "not a whole number"),
        ({"Active": "yes"}, "not true or false"),
        ({"UnitOfMeasure": "x" * 21}, "longer than 20"),
        ({"Vendor": "Acme"}, "Vendor is not a column of M3BridgeProducts"),
    ],
)
async def test_a_product_value_the_table_cannot_hold_is_refused_and_nothing_written(
    qw: QuoteWerksSqlClient, fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(QuoteWerksError, match=reason) as caught:
        await qw.put_product("ITM000003", {**PUSHED, **fields})
    assert not caught.value.retryable
    assert await qw.find_product("ITM000003") is None


async def test_a_database_without_the_product_table_names_the_ddl_to_run(qw_url: str, db: AsyncEngine) -> None:
    async with db.begin() as connection:
        await connection.execute(text('DROP TABLE "M3BridgeProducts"'))
    client = connect(qw_url)
    try:
        with pytest.raises(QuoteWerksError, match=r"deploy/quotewerks/m3bridge-products\.sql") as caught:
            await client.put_product("ITM000001", PUSHED)
    finally:
        await client.aclose()
    assert not caught.value.retryable


async def test_an_order_result_and_a_status_change_written_at_once_both_land(
    qw: QuoteWerksSqlClient, db: AsyncEngine
) -> None:
    """Results and status changes come on different topics: written at the same moment, the second must not take
    the first's write for an edit made in QuoteWerks (a false conflict would dead-letter it)."""
    await insert_quote(db, "AAAQ8001", status="Accepted", stamp=T0, lines=[])
    rules = IngestRules(
        approval_events=[], approved_statuses=["Accepted"], order_number_field="CustomText01",
        order_status_field="CustomText02", created_doc_status="",
    )  # fmt: skip

    async def no_publish(*_: Any) -> None:
        raise AssertionError("a write-back publishes nothing")

    engine = create_async_engine("sqlite+aiosqlite://")
    writing = {"now": 0, "most": 0}
    update_document = qw.update_document

    async def watched(doc_no: str, fields: Mapping[str, str]) -> None:
        writing["now"] += 1
        writing["most"] = max(writing["most"], writing["now"])
        for _ in range(20):  # let the other write start here, if nothing keeps it out
            await asyncio.sleep(0)
        try:
            await update_document(doc_no, fields)
        finally:
            writing["now"] -= 1

    qw.update_document = watched  # type: ignore[method-assign]
    ingest = Ingest(qw, engine, Outbox(engine, no_publish, max_bytes=1_048_576), rules)
    now = datetime.now(UTC)
    result = OrderResult(doc_no="AAAQ8001", outcome="created", order_number="1000000042", order_status="22",
                         customer_number="C000001", decided_at=now)  # fmt: skip
    change = OrderStatusChanged(order_number="1000000042", customer_order_number="AAAQ8001", status="33",
                                customer_number="C000001", changed_at=now)  # fmt: skip
    for _ in range(5):
        await asyncio.gather(ingest.write_back(result), ingest.write_status(change))
    written = await header(db, "AAAQ8001")
    assert written["CustomText01"] == "1000000042"
    assert written["CustomText02"].startswith("M3 order 1000000042 for customer C000001, status ")
    assert writing["most"] == 1  # one write-back of a document at a time
