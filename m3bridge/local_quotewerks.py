"""`make run QUOTEWERKS=db`: a local QuoteWerks database instead of the QuoteWerks simulator.

A SQLite file with the schema subset the SQL connector reads and writes (`shared.quotewerks.sql.metadata`), seeded
with a few of the simulator's scenario quotes (the same documents the simulator serves, so their customers and
parts exist in the ION/M3 simulator's seeded data). There are no webhooks: quote-ingest finds approvals by polling,
and an approval is what QuoteWerks' save does to the header, a new DocStatus and a new change stamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.quotewerks.schema import DEFAULT_CHANGE_COLUMN, DOCUMENT_HEADERS, DOCUMENT_ITEMS, HEADERS_TABLE, metadata

DATABASE_FILE = "quotewerks.db"
#: Scenario quotes of the simulator copied into the database, the demo's first: each has a customer (CMAccountNo)
#: and active parts of the M3 simulator's seeded data.
DEMO_SCENARIOS = ("ordinary", "options-group", "json-escape", "lines-20")
#: How SQLAlchemy keeps a DateTime in SQLite; a hand-made stamp must look the same, or the write-back's
#: optimistic-concurrency compare (the stamp as read, bound again) never matches the stored text.
SQLITE_STAMP = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


@dataclass(frozen=True)
class IngestView:
    """What quote-ingest will be configured with, read by its own settings class (env, .env, secrets)."""

    approved_status: str
    order_field: str
    status_field: str


def ingest_view() -> IngestView:
    from services.quote_ingest.app import QuoteIngestSettings  # imported here: only this mode needs it

    settings = QuoteIngestSettings()
    return IngestView(
        approved_status=(settings.approved_statuses or ["Accepted"])[0],
        order_field=settings.writeback_order_field,
        status_field=settings.writeback_status_field,
    )


#: quote-ingest's poll interval against this database (M3B_POLL_INTERVAL_S overrides it): the poll is its only way in.
POLL_INTERVAL_S = "3"
#: What quote-ingest is told about this database (it is the bridge's own: stamps in UTC, the shipped change column).
INGEST_ENV = {"M3B_QUOTEWERKS_SQL_TIME_ZONE": "UTC", "M3B_QUOTEWERKS_SQL_CHANGE_COLUMN": DEFAULT_CHANGE_COLUMN}


def database_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # the connector's stamps: naive, in UTC


def _stamp(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def scenario_documents(approved: set[str]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The demo quotes as rows of the schema subset: the simulator's scenario documents, their party phone
    numbers in the COM API's column (`SoldToPhone`), empty texts as NULL, none of them approved yet."""
    from simulators.quotewerks.config import QwSimConfig
    from simulators.quotewerks.data import QwStore

    store = QwStore(QwSimConfig(extra_documents=0))
    header_columns = {c.name for c in DOCUMENT_HEADERS.columns} - {"ID"}
    item_columns = {c.name for c in DOCUMENT_ITEMS.columns} - {"ID", "DocID"}
    documents = []
    for scenario in DEMO_SCENARIOS:
        found = store.document(store.scenarios[scenario])
        assert found is not None, scenario
        source, items = found
        header: dict[str, Any] = {}
        for name, value in source.items():
            name = name.replace("PhoneNumber", "Phone")
            if name in header_columns:
                header[name] = None if value == "" else value
        if str(header.get("DocStatus") or "").casefold() in approved:
            header["DocStatus"] = "Quoted"
        header["DocDate"] = datetime.combine(date.fromisoformat(source["DocDate"]), datetime.min.time())
        header[DEFAULT_CHANGE_COLUMN] = _stamp(source["LastModified"])
        documents.append((header, [{k: v for k, v in item.items() if k in item_columns} for item in items]))
    return documents


async def create(path: Path, *, keep: bool, approved: set[str]) -> list[str]:
    """The database file with the schema and the demo quotes (recreated unless `keep` and it has documents);
    returns the demo quotes' DocNos."""
    if not keep:
        for stale in path.parent.glob(f"{path.name}*"):
            stale.unlink()
    documents = await asyncio.to_thread(scenario_documents, approved)
    engine = create_async_engine(database_url(path))
    try:
        async with engine.connect() as connection:
            # Write-ahead log: quote-ingest's polls read while catalog-sync writes products, and the other way round.
            await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            if not (await connection.execute(select(func.count()).select_from(DOCUMENT_HEADERS))).scalar_one():
                for header, items in documents:
                    result = await connection.execute(
                        insert(DOCUMENT_HEADERS).values(header).returning(DOCUMENT_HEADERS.c.ID)
                    )
                    doc_id = int(result.scalar_one())
                    if items:
                        await connection.execute(insert(DOCUMENT_ITEMS), [{**item, "DocID": doc_id} for item in items])
    finally:
        await engine.dispose()
    return [str(header["DocNo"]) for header, _ in documents]


class LocalQuoteWerks:
    """The demo's side of the database: approve a quote as a save in QuoteWerks does, read its header back."""

    def __init__(self, path: Path, view: IngestView) -> None:
        self.path = path
        self.view = view
        self.engine: AsyncEngine = create_async_engine(database_url(path), connect_args={"timeout": 30})

    async def aclose(self) -> None:
        await self.engine.dispose()

    async def header(self, doc_no: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(DOCUMENT_HEADERS).where(DOCUMENT_HEADERS.c.DocNo == doc_no))).first()
        return dict(row._mapping) if row is not None else None

    async def first_open(self, doc_nos: list[str]) -> str | None:
        """The first of `doc_nos` with no order number and not approved yet (with --keep-state, earlier runs
        ordered some)."""
        for doc_no in doc_nos:
            header = await self.header(doc_no)
            if header is None or header.get(self.view.order_field):
                continue
            if str(header.get("DocStatus") or "").casefold() != self.view.approved_status.casefold():
                return doc_no
        return None

    async def approve(self, doc_no: str) -> None:
        values = {"DocStatus": self.view.approved_status, DEFAULT_CHANGE_COLUMN: utc_now()}
        async with self.engine.begin() as connection:
            await connection.execute(update(DOCUMENT_HEADERS).where(DOCUMENT_HEADERS.c.DocNo == doc_no).values(values))


def approve_by_hand(path: Path, doc_no: str, view: IngestView) -> str:
    """How to approve a quote by hand: a `sqlite3` command line, or the SQL statement when there is no sqlite3."""

    def literal(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    # Printed for a person to run, never executed here.
    sql = (
        f"UPDATE {HEADERS_TABLE} SET DocStatus = {literal(view.approved_status)}, "  # noqa: S608
        f"{DEFAULT_CHANGE_COLUMN} = {SQLITE_STAMP} WHERE DocNo = {literal(doc_no)}"
    )
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd())
    if shutil.which("sqlite3"):
        quoted = f'"{sql}"' if not set(sql) & set('"$`\\!') else shlex.quote(sql)
        # A busy timeout: catalog-sync's full load writes the products table while this runs.
        return f"sqlite3 -cmd '.timeout 10000' {shlex.quote(str(path))} {quoted}"
    return f"{sql};  (in {path})"
