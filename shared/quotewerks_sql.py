"""QuoteWerks through its own database: read quotes from `DocumentHeaders` / `DocumentItems`, write the M3 order
number back onto the header, with optimistic concurrency on the document's change stamp.

QuoteWerks' developer notes say outside applications may read its database "and even make changes"; the SQL Server
backend keeps documents in `DocumentHeaders` (one row a document) and `DocumentItems` (`DocID` → `DocumentHeaders.ID`).
This module is the one place that knows those tables. `QuoteWerksSqlClient` answers the same calls as the HTTP
`QuoteWerksClient` for what quote-ingest needs (`document`, `documents`, `update_document`), returning the same
`{"DocumentHeader": {...}, "DocumentItems": [...]}` shape, so `quote_from_document` and the services do not know
which transport they use. `quotewerks_client()` chooses by URL: http(s) → the HTTP adapter, a SQLAlchemy database
URL (`mssql+aioodbc://`, and `postgresql+asyncpg://` / `sqlite+aiosqlite://` for tests) → this connector.

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
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import SecretStr
from sqlalchemy import (
    Column,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    MetaData,
    Select,
    Table,
    Unicode,
    Update,
    and_,
    cast,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.expression import TableClause, column, table
from sqlalchemy.types import TypeEngine

from shared.quotewerks import QuoteWerksClient, QuoteWerksConflictError, QuoteWerksError

log = logging.getLogger(__name__)

HEADERS_TABLE = "DocumentHeaders"
ITEMS_TABLE = "DocumentItems"
DEFAULT_CHANGE_COLUMN = "LastModified"
WRITE_ATTEMPTS = 3
"""How often a write-back re-reads the document and tries again when it changed between the read and the write."""
LIST_LIMIT = 1000
"""Most headers one `documents()` call returns (oldest change first; the poller continues from the newest seen)."""


class QuoteWerksConfigError(Exception):
    """The configured QuoteWerks connection cannot do what the service needs; raised at start-up."""


# --- the QuoteWerks schema subset ----------------------------------------------------------------------------------
# What the bridge reads and writes, as SQLAlchemy tables: the tests create them in PostgreSQL and SQLite, and the
# SQL Server compilation test compiles against them. Types and lengths are the bridge's choice where QuoteWerks does
# not publish them (docs/quotewerks-interface.md, "SQL Server schema"); a real database keeps its own.

# The party columns as the QuoteWerks COM API names them (Avalara's returns.vb copies them between documents):
# `SoldToPhone`, not the simulator's `SoldToPhoneNumber`, which the connector adds for `quote_from_document`.
PARTY_FIELDS = (
    "Company", "Contact", "Title", "Address1", "Address2", "Address3", "City", "State", "PostalCode", "Country",
    "Phone", "Email", "CMAccountNo",
)  # fmt: skip
PARTY_PREFIXES = ("SoldTo", "ShipTo", "BillTo")

metadata = MetaData()


def _text(name: str, length: int = 255) -> Column[str]:
    return Column(name, Unicode(length), nullable=True)


def _number(name: str) -> Column[float]:
    return Column(name, Float, nullable=True)


DOCUMENT_HEADERS = Table(
    HEADERS_TABLE,
    metadata,
    Column("ID", Integer, primary_key=True, autoincrement=True),
    _text("DocNo", 50),
    _text("DocType", 20),
    _text("DocName"),
    _text("DocStatus", 50),
    Column("DocDate", DateTime, nullable=True),
    _text("SalesRep", 50),
    _text("ShipVia", 50),
    _text("Terms", 50),
    _text("CustomerPONumber", 50),
    *(_text(f"{prefix}{name}") for prefix in PARTY_PREFIXES for name in PARTY_FIELDS),
    _number("SubTotal"),
    _number("TotalTax"),
    _number("ShippingAmount"),
    _number("GrandTotal"),
    _text("AlternateCurrencyIdentifier", 10),
    *(_text(f"CustomText{n:02d}") for n in range(1, 25)),
    Column(DEFAULT_CHANGE_COLUMN, DateTime, nullable=True),
)

DOCUMENT_ITEMS = Table(
    ITEMS_TABLE,
    metadata,
    Column("ID", Integer, primary_key=True, autoincrement=True),
    Column("DocID", Integer, nullable=False, index=True),
    Column("SortOrder", Integer, nullable=True),
    Column("LineType", Integer, nullable=True),
    Column("LineAttributes", Integer, nullable=True),
    _text("ManufacturerPartNumber"),
    Column("Description", Unicode(), nullable=True),  # NVARCHAR(max) on SQL Server
    _number("QtyTotal"),
    _number("UnitPrice"),
    _number("UnitList"),
    _number("UnitCost"),
    _number("DiscountPercent"),
    _text("UnitOfMeasure", 20),
    _text("Vendor"),
    _text("Manufacturer"),
    _number("ExtendedPrice"),
)

REQUIRED_HEADER_COLUMNS = ("ID", "DocNo", "DocType", "DocStatus")
REQUIRED_ITEM_COLUMNS = ("ID", "DocID")


# --- statements ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Statements:
    """Every statement the connector issues, built from the columns the database has (reflected, or the shipped
    subset in tests), so a unit test can compile each for SQL Server."""

    headers: TableClause
    items: TableClause
    change_column: str
    dialect: str

    @classmethod
    def for_tables(cls, headers: Table, items: Table, *, change_column: str, dialect: str) -> Statements:
        def clause(source: Table) -> TableClause:
            return table(source.name, *(column(c.name, c.type) for c in source.columns), schema=source.schema)

        return cls(clause(headers), clause(items), change_column, dialect)

    def _h(self, name: str) -> ColumnElement[Any]:
        return self.headers.c[name]

    def _stamp_equals(self, value: Any) -> ColumnElement[bool]:
        stamp = self._h(self.change_column)
        if value is None:
            return stamp.is_(None)
        # SQL Server: compare in the column's own type. A DATETIME read back and bound as DATETIME2 can differ in
        # the last digit (.003 vs .0033333 at compatibility level 130+), so an unchanged row would look changed.
        return stamp == (cast(value, stamp.type) if self.dialect == "mssql" else value)

    def header_by_doc_no(self, doc_no: str) -> Select[Any]:
        """The header of one document; two rows at most, to tell a duplicated DocNo from a unique one."""
        return select(self.headers).where(self._h("DocNo") == doc_no).limit(2)

    def items_of(self, doc_id: int) -> Select[Any]:
        order = [self.items.c[name] for name in ("SortOrder", "ID") if name in self.items.c]
        return select(self.items).where(self.items.c.DocID == doc_id).order_by(*order)

    def headers_changed(self, doc_type: str, status: str, since: datetime | None) -> Select[Any]:
        stamp = self._h(self.change_column)
        query = select(self.headers).where(self._h("DocType") == doc_type, self._h("DocStatus") == status)
        if since is not None:
            query = query.where(stamp >= since)
        return query.order_by(stamp, self._h("ID")).limit(LIST_LIMIT)

    def write_target(self, doc_no: str, columns: Collection[str]) -> Select[Any]:
        """What a write-back needs to read first: the row's identity, its change stamp and the columns it sets."""
        wanted = ["ID", self.change_column, *(c for c in columns if c not in ("ID", self.change_column))]
        return select(*(self._h(name) for name in wanted)).where(self._h("DocNo") == doc_no).limit(2)

    def guarded_update(self, doc_id: int, stamp: Any, read: Mapping[str, Any], values: Mapping[str, str]) -> Update:
        """Set `values` on the header only if it still has the change stamp and the column values it had when read:
        nothing QuoteWerks (or a person) saved in between is overwritten."""
        guards = [self._h("ID") == doc_id, self._stamp_equals(stamp)]
        for name, value in read.items():
            guards.append(self._h(name).is_(None) if value is None else self._h(name) == value)
        return update(self.headers).where(and_(*guards)).values({self._h(k): v for k, v in values.items()})


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


class QuoteWerksSqlClient(QuoteWerksClient):
    """QuoteWerks documents through its database. A subclass of the HTTP client only so the services' type hints
    hold: every public call is answered here, from the database, and none goes over HTTP. Contacts and products are
    not read or written by this connector (yet): `quotewerks_client()` refuses a service that needs them."""

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

    async def document(self, doc_no: str) -> dict[str, Any]:
        schema = await self._ready()
        async with self._connect() as connection:
            header = await self._one_header(connection, schema.statements, doc_no)
            items = (await connection.execute(schema.statements.items_of(header["ID"]))).mappings().all()
        return {
            "DocumentHeader": self._header(header),
            "DocumentItems": [{name: _plain(value) for name, value in row.items()} for row in items],
        }

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
                if all(read[name] == value for name, value in values.items()):
                    return  # already written (a redelivered result): nothing to change
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
    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise QuoteWerksError(f"{method} {path}: the SQL connector makes no HTTP calls", retryable=False)

    def _unsupported(self, what: str) -> QuoteWerksError:
        return QuoteWerksError(
            f"{what}: not supported by the SQL connector yet (QuoteWerks contacts and products are not read or "
            "written through the database; use the HTTP adapter form of M3B_QUOTEWERKS_URL for them)",
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

    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool:
        raise self._unsupported(f"product {part}")

    async def find_product(self, part: str) -> dict[str, Any] | None:
        raise self._unsupported(f"product {part}")


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


# --- choosing the transport ------------------------------------------------------------------------------------------
def is_database_url(url: str) -> bool:
    return not url.lower().startswith(("http://", "https://"))


def create_quotewerks_engine(url: str, password: SecretStr | None = None) -> AsyncEngine:
    """An async engine for the QuoteWerks database; a password given apart from the URL is put into it here, so
    the URL in the settings (and in logs) need not carry it."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise QuoteWerksConfigError(f"M3B_QUOTEWERKS_URL is neither http(s) nor a database URL: {url!r}") from None
    if password is not None and password.get_secret_value() and not parsed.password:
        parsed = parsed.set(password=password.get_secret_value())
    if parsed.get_backend_name() == "sqlite":
        return create_async_engine(parsed, connect_args={"timeout": 30})
    return create_async_engine(parsed, pool_pre_ping=True, pool_size=4, max_overflow=4)


def quotewerks_client(
    url: str,
    api_key: SecretStr,
    *,
    http: httpx.AsyncClient,
    needs: Collection[str] = ("documents",),
    writable: Mapping[str, bool] | None = None,
    change_column: str = DEFAULT_CHANGE_COLUMN,
    time_zone: str = "UTC",
    sql_password: SecretStr | None = None,
) -> QuoteWerksClient:
    """The QuoteWerks client `url` asks for. `needs` says what the service uses ("documents", "customers",
    "products"): the SQL connector reads and writes documents only, so a service needing more is refused here,
    at start-up, with QuoteWerksConfigError rather than failing message by message."""
    if not is_database_url(url):
        return QuoteWerksClient(url, api_key, http=http)
    unsupported = sorted(set(needs) - {"documents"})
    if unsupported:
        raise QuoteWerksConfigError(
            f"QuoteWerks {' and '.join(unsupported)}: not supported by the SQL connector yet; this service needs "
            "them, so point M3B_QUOTEWERKS_URL at a QuoteWerks HTTP adapter (or the simulator) instead of a database"
        )
    return QuoteWerksSqlClient(
        create_quotewerks_engine(url, sql_password),
        writable=writable or {},
        change_column=change_column,
        time_zone=time_zone,
    )
