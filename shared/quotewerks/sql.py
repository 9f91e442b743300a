"""QuoteWerks through its own database: read quotes from `DocumentHeaders` / `DocumentItems`, write the M3 order
number back onto the header, with optimistic concurrency on the document's change stamp.

QuoteWerks' developer notes say outside applications may read its database "and even make changes"; the SQL Server
backend keeps documents in `DocumentHeaders` (one row a document) and `DocumentItems` (`DocID` → `DocumentHeaders.ID`).
`QuoteWerksSqlClient` answers the same calls as the HTTP
`QuoteWerksClient` for what quote-ingest needs (`document`, `documents`, `update_document`), returning the same
`{"DocumentHeader": {...}, "DocumentItems": [...]}` shape, so `quote_from_document` and the services do not know
which transport they use, and writes catalog-sync's products into the bridge's own table (`find_product`,
`put_product`). The tables and statements are in `shared.quotewerks.schema`. `quotewerks_client()` chooses by URL:
http(s) → the HTTP adapter, a SQLAlchemy database URL (`mssql+aioodbc://`, and `postgresql+asyncpg://` /
`sqlite+aiosqlite://` for tests) → this connector.

Column names QuoteWerks does not document verbatim (see docs/quotewerks-interface.md) are not assumed: the tables
are reflected on first use and only the columns that exist are read; the columns the bridge cannot work without
(`ID`, `DocNo`, `DocType`, `DocStatus`, `DocID`, the change stamp and the write-back columns) must exist, or every
call fails with a non-retryable error that names them.

Driver: `mssql+aioodbc` (aioodbc over pyodbc and an ODBC driver, e.g. Debian's FreeTDS `tdsodbc`), SQLAlchemy's
asyncio dialect for SQL Server, so no call blocks the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    MetaData,
    Table,
    inspect,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeEngine

from shared.quotewerks import (
    QuoteWerksConflictError,
    QuoteWerksError,
    quotewerks_retries,
)
from shared.quotewerks.schema import (
    DEFAULT_CHANGE_COLUMN,
    DOCUMENT_HEADERS,
    DOCUMENT_ITEMS,
    HEADERS_TABLE,
    ITEMS_TABLE,
    PARTY_PREFIXES,
    REQUIRED_HEADER_COLUMNS,
    REQUIRED_ITEM_COLUMNS,
    Statements,
)
from shared.quotewerks.sql_base import _plain
from shared.quotewerks.sql_products import BridgeProductTable

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 3
"""How often a write-back re-reads the document and tries again when it changed between the read and the write."""


@dataclass(frozen=True)
class _Schema:
    statements: Statements
    lengths: Mapping[str, int | None]


class QuoteWerksSqlClient(BridgeProductTable):
    """QuoteWerks through its database (`shared.quotewerks.QuoteWerks`, like the HTTP client). Contacts are not read
    or written by this connector: `quotewerks_client()` refuses a service that needs them, and a call answers an
    error. Products go into the bridge's own table, `M3BridgeProducts`, never into a QuoteWerks table."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        writable: Mapping[str, bool],
        change_column: str = DEFAULT_CHANGE_COLUMN,
        time_zone: str = "UTC",
        schema: str | None = None,
    ) -> None:
        """`writable`: the header columns the bridge may set, each with whether a too long value may be cut (the
        outcome text may; an order number may not). `time_zone`: the zone the database's change stamps are in."""
        super().__init__(engine, time_zone=time_zone, schema=schema)
        self.writable = dict(writable)
        self.change_column = change_column
        self._schema: _Schema | None = None

    # --- schema ----------------------------------------------------------------------------------------------------
    def _reflect(self, connection: Connection) -> _Schema:
        inspector = inspect(connection)
        found: dict[str, dict[str, TypeEngine[Any]]] = {}
        for name in (HEADERS_TABLE, ITEMS_TABLE):
            try:
                found[name] = {c["name"]: c["type"] for c in inspector.get_columns(name, schema=self.schema)}
            except NoSuchTableError:
                found[name] = {}
        headers, items = found[HEADERS_TABLE], found[ITEMS_TABLE]
        missing = [f"{HEADERS_TABLE}.{c}" for c in self._required_headers() if c not in headers]
        missing += [f"{ITEMS_TABLE}.{c}" for c in REQUIRED_ITEM_COLUMNS if c not in items]
        if missing:
            raise QuoteWerksError(
                "the QuoteWerks database lacks " + ", ".join(missing) + " (or this login may not see them); check "
                "M3B_QUOTEWERKS_URL, M3B_QUOTEWERKS_SQL_CHANGE_COLUMN and the write-back column settings",
                retryable=False,
            )
        known_headers = {c.name for c in DOCUMENT_HEADERS.columns} | set(self._required_headers())
        known_items = {c.name for c in DOCUMENT_ITEMS.columns}
        absent = sorted(known_headers - headers.keys()) + sorted(known_items - items.keys())
        if absent:
            log.info("QuoteWerks database has no column(s) %s: read as empty", ", ".join(absent))

        def subset(name: str, columns: Mapping[str, TypeEngine[Any]], known: set[str]) -> Table:
            return Table(
                name,
                MetaData(),
                *(Column(c, t) for c, t in columns.items() if c in known),
                schema=self.schema,
            )

        header_table = subset(HEADERS_TABLE, headers, known_headers)
        statements = Statements.for_tables(
            header_table,
            subset(ITEMS_TABLE, items, known_items),
            change_column=self.change_column,
            dialect=connection.dialect.name,
        )
        lengths = {c.name: getattr(c.type, "length", None) for c in header_table.columns}
        return _Schema(statements, lengths)

    def _required_headers(self) -> list[str]:
        return [*REQUIRED_HEADER_COLUMNS, self.change_column, *self.writable]

    async def _ready(self) -> _Schema:
        if self._schema is None:
            async with self._lock:
                if self._schema is None:
                    async with self._connect() as connection:
                        self._schema = await connection.run_sync(self._reflect)
        return self._schema

    def _header(self, row: Mapping[str, Any]) -> dict[str, Any]:
        header = {name: _plain(value) for name, value in row.items()}
        for prefix in PARTY_PREFIXES:
            if f"{prefix}Phone" in header and f"{prefix}PhoneNumber" not in header:
                header[f"{prefix}PhoneNumber"] = header[f"{prefix}Phone"]
        header["LastModified"] = self._stamp_out(row.get(self.change_column))
        return header

    # --- reads -----------------------------------------------------------------------------------------------------
    async def _one_header(self, connection: Any, statements: Statements, doc_no: str) -> Mapping[str, Any]:
        rows = (await connection.execute(statements.header_by_doc_no(doc_no))).mappings().all()
        if not rows:
            raise QuoteWerksError(f"document {doc_no}: no such document", retryable=False, status=404)
        if len(rows) > 1:
            raise QuoteWerksError(f"document {doc_no}: DocNo is not unique in {HEADERS_TABLE}", retryable=False)
        return dict(rows[0])

    @quotewerks_retries
    async def document(self, doc_no: str) -> dict[str, Any]:
        schema = await self._ready()
        async with self._connect() as connection:
            header = await self._one_header(connection, schema.statements, doc_no)
            items = (await connection.execute(schema.statements.items_of(header["ID"]))).mappings().all()
        return {
            "DocumentHeader": self._header(header),
            "DocumentItems": [{name: _plain(value) for name, value in row.items()} for row in items],
        }

    @quotewerks_retries
    async def documents(self, *, doc_type: str, status: str, modified_since: datetime | None) -> list[dict[str, Any]]:
        schema = await self._ready()
        since = self._stamp_in(modified_since) if modified_since is not None else None
        async with self._connect() as connection:
            rows = (await connection.execute(schema.statements.headers_changed(doc_type, status, since))).mappings()
            return [self._header(row) for row in rows.all()]

    # --- writes ----------------------------------------------------------------------------------------------------
    def _values(self, schema: _Schema, fields: Mapping[str, str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for name, value in fields.items():
            if name not in self.writable:
                raise QuoteWerksError(
                    f"{name} is not a write-back column of the SQL connector (it writes only "
                    f"{', '.join(sorted(self.writable))})",
                    retryable=False,
                )
            limit = schema.lengths.get(name)
            if limit is not None and len(value) > limit:
                if not self.writable[name]:
                    raise QuoteWerksError(
                        f"{value!r} does not fit {HEADERS_TABLE}.{name} ({limit} characters)", retryable=False
                    )
                value = value[:limit]
            values[name] = value
        return values

    @quotewerks_retries
    async def update_document(self, doc_no: str, fields: Mapping[str, str]) -> None:
        """Set the write-back columns, guarded by the change stamp and the values as read, so nothing saved in
        QuoteWerks between the read and the write is overwritten. A save in between that left the write-back columns
        alone: read again and retry (WRITE_ATTEMPTS in all, then QuoteWerksConflictError, which the caller retries
        later). A save in between that changed a write-back column (someone typed into it): give up at once with a
        non-retryable QuoteWerksError (409), since writing would overwrite that edit; a person decides."""
        schema = await self._ready()
        values = self._values(schema, fields)
        if not values:
            return
        statements = schema.statements
        first: dict[str, Any] | None = None
        for _ in range(WRITE_ATTEMPTS):
            async with self._begin() as connection:
                rows = (await connection.execute(statements.write_target(doc_no, values))).mappings().all()
                if not rows:
                    raise QuoteWerksError(f"document {doc_no}: no such document", retryable=False, status=404)
                if len(rows) > 1:
                    raise QuoteWerksError(f"document {doc_no}: DocNo is not unique", retryable=False)
                row = rows[0]
                read = {name: row[name] for name in values}
                if all(read[name] == value for name, value in values.items()):
                    return  # already written (a redelivered result, or a concurrent write of the same values)
                if first is None:
                    first = read
                elif read != first:
                    changed = sorted(name for name in values if read[name] != first[name])
                    raise QuoteWerksError(
                        f"document {doc_no}: {', '.join(changed)} changed in QuoteWerks while the bridge was writing "
                        f"it; not overwritten (now {', '.join(repr(read[n]) for n in changed)})",
                        retryable=False,
                        status=409,
                    )
                result = await connection.execute(
                    statements.guarded_update(row["ID"], row[self.change_column], read, values)
                )
                if result.rowcount == 1:
                    return
                if result.rowcount != 0:
                    raise QuoteWerksError(
                        f"document {doc_no}: the database reported {result.rowcount} rows changed (SET NOCOUNT ON "
                        "for this login?); the write cannot be confirmed",
                        retryable=False,
                    )
            log.info("document %s was saved while its order result was written: reading it again", doc_no)
        raise QuoteWerksConflictError(
            f"document {doc_no} kept changing in QuoteWerks while the bridge wrote {', '.join(values)}; "
            f"gave up after {WRITE_ATTEMPTS} attempts without overwriting anything"
        )

    # --- what this connector does not do -----------------------------------------------------------------------------
    def _unsupported(self, what: str) -> QuoteWerksError:
        return QuoteWerksError(
            f"{what}: not supported by the SQL connector (the tables of QuoteWerks' contact manager are not "
            "published, so contacts are not read or written through the database; use the HTTP adapter form of "
            "M3B_QUOTEWERKS_URL for them)",
            retryable=False,
            status=501,
        )

    async def customer(self, account: str) -> dict[str, Any]:
        raise self._unsupported(f"customer {account}")

    async def find_customer(self, account: str) -> dict[str, Any] | None:
        raise self._unsupported(f"customer {account}")

    async def customers(self) -> list[dict[str, Any]]:
        raise self._unsupported("customer list")

    async def put_customer(
        self, account: str, fields: Mapping[str, str], *, read_as: str | None = None, new: bool = False
    ) -> bool:
        raise self._unsupported(f"customer {account}")
