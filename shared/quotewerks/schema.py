"""The QuoteWerks tables the bridge reads and writes, as SQLAlchemy tables, and every statement it issues on them.

`DocumentHeaders` / `DocumentItems` are QuoteWerks' own (the subset the bridge uses; a real database is reflected
and keeps its own types); `M3BridgeProducts` is the bridge's. The tests create these tables in PostgreSQL and
SQLite, and compile every statement for SQL Server (tests/unit/test_quotewerks_sql_mssql.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Float,
    Insert,
    Integer,
    MetaData,
    Numeric,
    Select,
    Table,
    Unicode,
    Update,
    and_,
    bindparam,
    cast,
    insert,
    select,
    update,
)
from sqlalchemy.sql.expression import TableClause, column, table

HEADERS_TABLE = "DocumentHeaders"
ITEMS_TABLE = "DocumentItems"
DEFAULT_CHANGE_COLUMN = "LastModified"
LIST_LIMIT = 1000
"""Most headers one `documents()` call returns (oldest change first; the poller continues from the newest seen)."""


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

# The bridge's own product table, which QuoteWerks links as a product database (docs/quotewerks-interface.md §4,
# "Products"). The bridge owns it, so its shape is fixed: the DBA creates it from PRODUCTS_DDL_FILE (this table
# compiled for SQL Server; a unit test keeps the two equal) and the bridge never creates or alters tables. The
# columns are the fields catalog-sync pushes (`Product.fields()`), named as QuoteWerks' product fields.
PRODUCTS_TABLE = "M3BridgeProducts"
PRODUCTS_DDL_FILE = "deploy/quotewerks/m3bridge-products.sql"
BRIDGE_PRODUCTS = Table(
    PRODUCTS_TABLE,
    metadata,
    Column("ManufacturerPartNumber", Unicode(50), primary_key=True),  # the M3 item number (ITNO, 15 characters)
    Column("Description", Unicode(255), nullable=False),
    Column("UnitOfMeasure", Unicode(20), nullable=False),
    Column("Price", Numeric(19, 4), nullable=False),
    Column("Active", Boolean, nullable=False),
    Column("Availability", Integer, nullable=False),
    Column("LastModified", DateTime, nullable=False),  # when the bridge last wrote the row, UTC
)
PRODUCT_FIELDS = ("Description", "UnitOfMeasure", "Price", "Active", "Availability")


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


@dataclass(frozen=True)
class ProductStatements:
    """The statements on the bridge's product table (compiled for SQL Server in a unit test too)."""

    products: Table = BRIDGE_PRODUCTS

    def by_part(self, part: str) -> Select[Any]:
        return select(self.products).where(self.products.c.ManufacturerPartNumber == part)

    def every(self) -> Select[Any]:
        return select(self.products).order_by(self.products.c.ManufacturerPartNumber)

    def replace(self, part: str, values: Mapping[str, Any]) -> Update:
        return update(self.products).where(self.products.c.ManufacturerPartNumber == part).values(dict(values))

    def add(self, part: str, values: Mapping[str, Any]) -> Insert:
        return insert(self.products).values({**values, "ManufacturerPartNumber": part})

    def known_parts(self, parts: Collection[str]) -> Select[Any]:
        """Which of `parts` have a row (keep `parts` to a few hundred: SQL Server takes 2,100 parameters)."""
        column = self.products.c.ManufacturerPartNumber
        return select(column).where(column.in_(list(parts)))

    def replace_each(self, columns: Collection[str]) -> Update:
        """Executed with one parameter set per product: `the_part` and `new_<column>` for each of the `columns`
        (a bound name may not be a column's own)."""
        return (
            update(self.products)
            .where(self.products.c.ManufacturerPartNumber == bindparam("the_part"))
            .values({name: bindparam(f"new_{name}") for name in columns})
        )

    def add_each(self) -> Insert:
        """Executed with one parameter set (every column) per product."""
        return insert(self.products)


class ProductValueError(ValueError):
    """A pushed product value the bridge's table cannot hold; the message says which and why."""


def product_values(part: str, fields: Mapping[str, object]) -> dict[str, Any]:
    """The pushed fields as column values, checked: a value the table cannot hold is refused, not cut."""
    unknown = sorted(set(fields) - set(PRODUCT_FIELDS))
    if unknown:
        raise ProductValueError(f"product {part}: {', '.join(unknown)} is not a column of {PRODUCTS_TABLE}")
    problems: list[str] = []
    if not part or len(part) > BRIDGE_PRODUCTS.c.ManufacturerPartNumber.type.length:  # type: ignore[attr-defined]
        problems.append(f"part number {part!r} is empty or longer than 50 characters")
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name in ("Description", "UnitOfMeasure"):
            text = "" if value is None else str(value).strip()
            limit = BRIDGE_PRODUCTS.c[name].type.length  # type: ignore[attr-defined]
            values[name] = text[:limit] if name == "Description" else text
            if len(values[name]) > limit:
                problems.append(f"{name} {text!r} is longer than {limit} characters")
        elif name == "Price":
            try:
                price = Decimal(str(value)).quantize(Decimal("0.0001"))
            except (ArithmeticError, ValueError):
                problems.append(f"Price {value!r} is not a number")
                continue
            if not price.is_finite() or abs(price) >= Decimal(10) ** 15:
                problems.append(f"Price {value!r} does not fit DECIMAL(19, 4)")
            values[name] = price
        elif name == "Active":
            if not isinstance(value, bool):
                problems.append(f"Active {value!r} is not true or false")
            values[name] = value
        else:  # Availability
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
                problems.append(f"Availability {value!r} is not a whole number from 0")
            values[name] = value
    if problems:
        raise ProductValueError(f"product {part}: " + "; ".join(problems))
    return values
