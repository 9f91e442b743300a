"""Quote to order through the QuoteWerks database, with no QuoteWerks simulator: a quote row is saved in the
QuoteWerks schema (in the test PostgreSQL), its DocStatus set to an approved status → quote-ingest's poll finds it
→ Kafka → order-writer → token-service → ION/M3 simulator → the result written into the quote's CustomText01 /
CustomText02 by the SQL connector. Every box is its own process."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import create_async_engine

from shared.m3 import M3Client
from shared.m3.lease import LeaseClient, Priority
from simulators.processes import Captured, wait_until
from simulators.stack import IonSim, start_ion, start_service, start_token_service
from tests.conftest import _create_database, _drop_database
from tests.quotewerks_db import create_schema, header, insert_quote, product_line, save

KEYS = {"order-writer": "ow-key-123456", "inspector": "inspector-key-123456"}


@dataclass
class Stack:
    ion: IonSim
    token_service: Any
    ingest: tuple[Captured, str]
    writer: tuple[Captured, str]
    quotewerks_url: str


@pytest.fixture(scope="module")
def quotewerks_db(postgres_url: str) -> Iterator[str]:
    """A QuoteWerks database (the schema subset) of its own in the test PostgreSQL."""
    name = f"m3b_qw_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(name))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"

    async def create() -> None:
        engine = create_async_engine(url)
        try:
            await create_schema(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(create())
        yield url
    finally:
        asyncio.run(_drop_database(name))


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, module_postgres_url: str, quotewerks_db: str
) -> Iterator[Stack]:
    with contextlib.ExitStack() as started:
        ion = start_ion(tmp_path_factory.mktemp("ion"))
        started.callback(ion.stop)
        token_service = start_token_service(ion, kafka_bootstrap, KEYS)
        started.callback(token_service.stop)
        common = {"M3B_STATE_URL": module_postgres_url, "M3B_KAFKA_SESSION_TIMEOUT_MS": "6000"}
        ingest = start_service("quote-ingest", kafka_bootstrap, {
            **common, "M3B_QUOTEWERKS_URL": quotewerks_db, "M3B_POLL_INTERVAL_S": "1",
            "M3B_APPROVED_STATUSES": '["3-Manager Approved"]',
        })  # fmt: skip
        started.callback(ingest[0].kill_all)
        writer = start_service("order-writer", kafka_bootstrap, {
            **common, "M3B_TOKEN_SERVICE_URL": token_service.url, "M3B_TOKEN_SERVICE_KEY": KEYS["order-writer"],
        })  # fmt: skip
        started.callback(writer[0].kill_all)
        yield Stack(ion, token_service, ingest, writer, quotewerks_db)


async def m3_call(stack: Stack, program: str, transaction: str, fields: dict[str, str]) -> list[dict[str, Any]]:
    http = httpx.AsyncClient()
    leases = LeaseClient(stack.token_service.url, "inspector", SecretStr(KEYS["inspector"]), http=http)
    async with http:
        client = M3Client(leases, http, company=100)
        return await client.execute(program, transaction, fields, priority=Priority.INTERACTIVE, maxrecs=0)


async def _header(stack: Stack, doc_no: str) -> dict[str, Any]:
    engine = create_async_engine(stack.quotewerks_url)
    try:
        return await header(engine, doc_no)
    finally:
        await engine.dispose()


def written_back(stack: Stack, doc_no: str, timeout_s: float = 60) -> dict[str, Any]:
    """Waits until the quote row carries an M3 outcome (CustomText02) and returns it."""
    deadline = time.monotonic() + timeout_s
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:
        row = asyncio.run(_header(stack, doc_no))
        if row.get("CustomText02"):
            return row
        time.sleep(0.3)
    raise AssertionError(f"{doc_no} never got its M3 outcome written back: {row}\n{stack.ingest[0].output[-3000:]}")


async def _save_quote(stack: Stack, doc_no: str, lines: list[dict[str, Any]]) -> None:
    engine = create_async_engine(stack.quotewerks_url)
    try:
        await insert_quote(engine, doc_no, status="1-In Progress", stamp=_now(), lines=lines)
    finally:
        await engine.dispose()


async def _set_status(stack: Stack, doc_no: str, status: str) -> None:
    engine = create_async_engine(stack.quotewerks_url)
    try:
        await save(engine, doc_no, _now(), DocStatus=status)
    finally:
        await engine.dispose()


def counted(url: str, name: str, **labels: str) -> float:
    """The sum of a service's `/metrics` samples `name` with these labels (0 before anything was counted)."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text)
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def poll_published(stack: Stack) -> float:
    return counted(stack.ingest[1], "m3bridge_quote_poll_published_total")


def two_more_polls(stack: Stack) -> None:
    """Waits until two polls have finished after this call: the one running now may have read the database before
    the caller's last change, the next one started after it."""
    ok = counted(stack.ingest[1], "m3bridge_quote_polls_total", outcome="ok")
    wait_until(
        "two more polls",
        lambda: counted(stack.ingest[1], "m3bridge_quote_polls_total", outcome="ok") >= ok + 2,
        30,
        dump=lambda: stack.ingest[0].output[-3000:],
    )


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # the connector's default: stamps in UTC


def test_a_quote_approved_in_the_database_becomes_an_m3_order_numbered_on_the_quote(stack: Stack) -> None:
    doc_no = "AAAQ9001"
    lines = [
        product_line("ITM000001", 2, 10.0, sort=1),
        {"SortOrder": 2, "LineType": 2, "Description": "Deliver to the back door"},
        product_line("ITM000002", 3, 20.0, sort=3),
    ]
    published = poll_published(stack)
    asyncio.run(_save_quote(stack, doc_no, lines))
    two_more_polls(stack)  # they saw the quote: one not yet approved is not published
    assert poll_published(stack) == published
    before = asyncio.run(_header(stack, doc_no))
    assert before["CustomText02"] is None

    asyncio.run(_set_status(stack, doc_no, "3-Manager Approved"))
    row = written_back(stack, doc_no)
    order_number = row["CustomText01"]
    assert order_number, row["CustomText02"]
    assert order_number.startswith("1000"), row["CustomText02"]
    assert order_number in row["CustomText02"]
    assert row["DocStatus"] == "3-Manager Approved"  # M3B_WRITEBACK_DOC_STATUS is empty: left alone
    assert row["DocName"] == before["DocName"]
    assert row["LastModified"] > before["LastModified"]  # the save that approved it; the bridge leaves it
    head = asyncio.run(m3_call(stack, "OIS100MI", "GetHead", {"ORNO": order_number}))[0]
    assert head["CUOR"] == doc_no
    assert head["CUNO"] == "C000001"
    ordered = asyncio.run(m3_call(stack, "OIS100MI", "LstLine", {"ORNO": order_number}))
    assert [(str(r["ITNO"]), Decimal(str(r["ORQT"]))) for r in ordered] == [
        ("ITM000001", Decimal(2)),
        ("ITM000002", Decimal(3)),
    ]

    # The approval was published by the poll (no webhooks here); it counts it once that poll is finished.
    wait_until("the poll counted the approval", lambda: poll_published(stack) == published + 1, 30)
    # The next polls see the quote again (its write-back is a change) but it was claimed: not published again.
    two_more_polls(stack)
    assert poll_published(stack) == published + 1
    orders = asyncio.run(m3_call(stack, "OIS100MI", "LstHead", {"CUNO": "C000001"}))
    assert [o["ORNO"] for o in orders if o.get("CUOR") == doc_no] == [order_number]
    assert asyncio.run(_header(stack, doc_no))["CustomText01"] == order_number


def test_the_poll_looks_back_only_as_far_as_configured(stack: Stack) -> None:
    """A quote approved long before the first poll's look-back (a day) is not picked up by this database's poll."""
    doc_no = "AAAQ9002"

    async def old_quote() -> None:
        engine = create_async_engine(stack.quotewerks_url)
        try:
            stamp = _now() - timedelta(days=3)
            await insert_quote(engine, doc_no, status="3-Manager Approved", stamp=stamp, lines=[
                product_line("ITM000001", 1, 10.0, sort=1),
            ])  # fmt: skip
        finally:
            await engine.dispose()

    published = poll_published(stack)
    asyncio.run(old_quote())
    two_more_polls(stack)
    assert poll_published(stack) == published
    assert asyncio.run(_header(stack, doc_no))["CustomText02"] is None
