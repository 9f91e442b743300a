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

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    Column,
    MetaData,
    Table,
    inspect,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeEngine

from shared.quotewerks import (
    QuoteWerksConflictError,
    QuoteWerksError,
    quotewerks_retries,
)
from shared.quotewerks.errors import QuoteWerksConfigError
from shared.quotewerks.schema import (
    BRIDGE_PRODUCTS,
    DEFAULT_CHANGE_COLUMN,
    DOCUMENT_HEADERS,
    DOCUMENT_ITEMS,
    HEADERS_TABLE,
    ITEMS_TABLE,
    PARTY_PREFIXES,
    PRODUCTS_DDL_FILE,
    PRODUCTS_TABLE,
    REQUIRED_HEADER_COLUMNS,
    REQUIRED_ITEM_COLUMNS,
    ProductStatements,
    ProductValueError,
    Statements,
    product_values,
)

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 3
"""How often a write-back re-reads the document and tries again when it changed between the read and the write."""
#: Part numbers per `IN (...)` look-up of a product batch (SQL Server takes at most 2,100 parameters a statement).
PRODUCT_BATCH_PARAMETERS = 500


# --- rows ------------------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A database value as the HTTP adapter would give it (dates as ISO text, decimals as numbers)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, str):
        return value.rstrip()  # fixed-width (NCHAR) columns pad with blanks
    return value


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise QuoteWerksConfigError(f"unknown time zone {name!r} for the QuoteWerks database") from None


@dataclass(frozen=True)
class _Schema:
    statements: Statements
    lengths: Mapping[str, int | None]


class QuoteWerksSqlClient:
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
        self.engine = engine
        self.writable = dict(writable)
        self.change_column = change_column
        self.zone = _zone(time_zone)
        self.schema = schema or None
        self._schema: _Schema | None = None
        self._products: ProductStatements | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.engine.dispose()

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

    def _connect(self) -> Any:
        return _Guarded(self.engine, write=False)

    def _begin(self) -> Any:
        return _Guarded(self.engine, write=True)

    # --- time ------------------------------------------------------------------------------------------------------
    def _stamp_out(self, value: Any) -> str | None:
        """A change stamp as the contract's `LastModified`: ISO 8601 in UTC."""
        if not isinstance(value, datetime):
            return None if value is None else str(value)
        aware = value if value.tzinfo else value.replace(tzinfo=self.zone)
        return aware.astimezone(UTC).isoformat()

    def _stamp_in(self, value: datetime) -> datetime:
        """A point in time as the database keeps its stamps: naive, in the database's zone."""
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(self.zone).replace(tzinfo=None)

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

    # --- products: the bridge's own table ----------------------------------------------------------------------------
    async def _products_ready(self) -> ProductStatements:
        if self._products is None:
            async with self._lock:
                if self._products is None:
                    async with self._connect() as connection:
                        self._products = await connection.run_sync(self._check_products)
        return self._products

    def _check_products(self, connection: Connection) -> ProductStatements:
        try:
            found = {c["name"] for c in inspect(connection).get_columns(PRODUCTS_TABLE, schema=self.schema)}
        except NoSuchTableError:
            found = set()
        missing = [c.name for c in BRIDGE_PRODUCTS.columns if c.name not in found]
        if missing:
            what = f"has no table {PRODUCTS_TABLE}" if not found else f"{PRODUCTS_TABLE} lacks {', '.join(missing)}"
            raise QuoteWerksError(
                f"the QuoteWerks database {what} (or this login may not see it): have the DBA create it with "
                f"{PRODUCTS_DDL_FILE}",
                retryable=False,
            )
        table = BRIDGE_PRODUCTS if self.schema is None else BRIDGE_PRODUCTS.to_metadata(MetaData(), schema=self.schema)
        return ProductStatements(table)

    @quotewerks_retries
    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool:
        """Create or replace the product's row in the bridge's table (the pushed fields only); True when created.
        Two writers inserting the same new part at once: the loser's INSERT fails on the key and it updates."""
        statements = await self._products_ready()
        try:
            values = {**product_values(part, fields), "LastModified": datetime.now(UTC).replace(tzinfo=None)}
        except ProductValueError as exc:
            raise QuoteWerksError(str(exc), retryable=False) from None
        new_row = {"Description": part, "UnitOfMeasure": "", "Price": Decimal(0), "Active": True, "Availability": 0}
        for _ in range(2):
            try:
                async with self._begin() as connection:
                    changed = (await connection.execute(statements.replace(part, values))).rowcount
                    if changed == 1:
                        return False
                    if changed != 0:
                        raise QuoteWerksError(
                            f"product {part}: the database reported {changed} rows changed (SET NOCOUNT ON for this "
                            "login?); the write cannot be confirmed",
                            retryable=False,
                        )
                    await connection.execute(statements.add(part, {**new_row, **values}))
                    return True
            except QuoteWerksError as exc:
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
                log.info("product %s was created by another writer meanwhile: updating it", part)
        raise QuoteWerksError(f"product {part}: neither updated nor inserted (key conflicts)", retryable=True)

    async def put_products(self, products: Mapping[str, Mapping[str, object]]) -> set[str]:
        """Create or replace many products' rows in one transaction (all or none): the rows there are updated and
        the others inserted, each kind in one executemany; the parts that were created. A key conflict (another
        writer inserted one of them meanwhile) writes them one by one instead."""
        statements = await self._products_ready()
        stamp = datetime.now(UTC).replace(tzinfo=None)
        try:
            rows = {part: {**product_values(part, fields), "LastModified": stamp} for part, fields in products.items()}
        except ProductValueError as exc:
            raise QuoteWerksError(str(exc), retryable=False) from None
        new_row = {"Description": "", "UnitOfMeasure": "", "Price": Decimal(0), "Active": True, "Availability": 0}
        try:
            return await self._write_products(statements, rows, new_row)
        except QuoteWerksError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        log.info("%d products: another writer created some of them meanwhile: writing them one by one", len(rows))
        return {part for part, fields in products.items() if await self.put_product(part, fields)}

    @quotewerks_retries
    async def _write_products(
        self, statements: ProductStatements, rows: Mapping[str, Mapping[str, Any]], new_row: Mapping[str, Any]
    ) -> set[str]:
        parts = list(rows)
        async with self._begin() as connection:
            existing: set[str] = set()
            for start in range(0, len(parts), PRODUCT_BATCH_PARAMETERS):
                chunk = parts[start : start + PRODUCT_BATCH_PARAMETERS]
                existing.update(str(p) for p in (await connection.execute(statements.known_parts(chunk))).scalars())
            by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for part in parts:
                if part in existing:
                    values = rows[part]
                    by_columns.setdefault(tuple(sorted(values)), []).append(
                        {"the_part": part, **{f"new_{name}": value for name, value in values.items()}}
                    )
            for columns, parameters in by_columns.items():
                await connection.execute(statements.replace_each(columns), parameters)
            created = [part for part in parts if part not in existing]
            if created:
                await connection.execute(
                    statements.add_each(),
                    [
                        {**new_row, "Description": part, **rows[part], "ManufacturerPartNumber": part}
                        for part in created
                    ],
                )
        return set(created)

    @quotewerks_retries
    async def find_product(self, part: str) -> dict[str, Any] | None:
        """The product's row in the bridge's table, or None."""
        statements = await self._products_ready()
        async with self._connect() as connection:
            row = (await connection.execute(statements.by_part(part))).mappings().first()
        if row is None:
            return None
        return self._product(row)

    @quotewerks_retries
    async def all_products(self) -> list[dict[str, Any]]:
        """Every row of the bridge's product table."""
        statements = await self._products_ready()
        async with self._connect() as connection:
            rows = (await connection.execute(statements.every())).mappings().all()
        return [self._product(row) for row in rows]

    def _product(self, row: Any) -> dict[str, Any]:
        product = {name: _plain(value) for name, value in row.items()}
        product["Active"] = bool(row["Active"])
        product["LastModified"] = self._stamp_out(row["LastModified"].replace(tzinfo=UTC))
        return product


class _Guarded:
    """A connection (or transaction) whose database failures become QuoteWerksError: connection loss, time-outs
    and deadlocks are retryable, anything else (a refused permission, a wrong column) is not."""

    def __init__(self, engine: AsyncEngine, *, write: bool) -> None:
        self._context = engine.begin() if write else engine.connect()

    async def __aenter__(self) -> Any:
        try:
            return await self._context.__aenter__()
        except SQLAlchemyError as exc:
            raise _database_error(exc) from exc
        except OSError as exc:
            raise QuoteWerksError(f"QuoteWerks database unreachable: {exc}", retryable=True) from exc

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        try:
            result = await self._context.__aexit__(*exc_info)
        except SQLAlchemyError as exc:
            raise _database_error(exc) from exc
        if isinstance(exc_info[1], SQLAlchemyError):
            raise _database_error(exc_info[1]) from exc_info[1]
        if isinstance(exc_info[1], OSError):
            raise QuoteWerksError(f"QuoteWerks database unreachable: {exc_info[1]}", retryable=True) from exc_info[1]
        return result


_RETRYABLE_SQLSTATES = ("08", "40", "HYT")  # connection, transaction rollback (deadlock), time-out


def _database_error(exc: SQLAlchemyError) -> QuoteWerksError:
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
    retryable = isinstance(exc, DBAPIError) and (
        exc.connection_invalidated
        or type(exc).__name__ in ("OperationalError", "InterfaceError")
        or any(text.lstrip("('").startswith(state) for state in _RETRYABLE_SQLSTATES)
    )
    return QuoteWerksError(f"QuoteWerks database: {type(exc).__name__}: {text}", retryable=retryable)
