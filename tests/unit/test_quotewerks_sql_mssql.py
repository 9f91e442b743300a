"""Every statement the SQL connector issues, compiled for SQL Server (no SQL Server runs here): bracketed names,
TOP, the change-stamp comparison in the column's own type, NVARCHAR parameters; the shipped schema's DDL; and a
check, on SQLite, that the connector issues no statement besides those."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Column, Integer, MetaData, Table, Unicode, event
from sqlalchemy.dialects import mssql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql import ClauseElement

from shared.quotewerks import QuoteWerksError
from shared.quotewerks.connect import quotewerks_client
from shared.quotewerks.errors import QuoteWerksConfigError
from shared.quotewerks.schema import (
    BRIDGE_PRODUCTS,
    DOCUMENT_HEADERS,
    DOCUMENT_ITEMS,
    PRODUCTS_DDL_FILE,
    ProductStatements,
    Statements,
)
from shared.quotewerks.sql import QuoteWerksSqlClient
from tests.quotewerks_db import create_schema, insert_quote, product_line

MSSQL_URL = "mssql+aioodbc://bridge@127.0.0.1:1/QuoteWerks?driver=FreeTDS&TDS_Version=7.4&LoginTimeout=2"
STAMP = datetime(2026, 12, 1, 9, 30, 0, 3000)


@pytest.fixture(scope="module")
def dialect() -> Dialect:
    """The dialect the connector really uses for SQL Server (mssql+aioodbc; importing it needs aioodbc)."""
    return create_async_engine(MSSQL_URL).dialect


@pytest.fixture(scope="module")
def statements(dialect: Dialect) -> Statements:
    return Statements.for_tables(DOCUMENT_HEADERS, DOCUMENT_ITEMS, change_column="LastModified", dialect=dialect.name)


def sql(statement: ClauseElement, dialect: Dialect) -> str:
    return str(statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True}))


def test_the_dialect_is_sql_servers(dialect: Dialect) -> None:
    assert dialect.name == "mssql"
    assert dialect.driver == "aioodbc"
    assert dialect.is_async


def test_a_document_header_is_read_with_top_2_and_bracketed_names(statements: Statements, dialect: Dialect) -> None:
    text = sql(statements.header_by_doc_no("AAAQ1001"), dialect)
    assert text.startswith("SELECT TOP 2 [DocumentHeaders].[ID], [DocumentHeaders].[DocNo], ")
    assert "[DocumentHeaders].[CustomText01]" in text
    assert text.endswith("FROM [DocumentHeaders] \nWHERE [DocumentHeaders].[DocNo] = ?")


def test_items_are_read_in_their_order(statements: Statements, dialect: Dialect) -> None:
    text = sql(statements.items_of(7), dialect)
    assert text.startswith("SELECT [DocumentItems].[ID], [DocumentItems].[DocID], ")
    assert "WHERE [DocumentItems].[DocID] = ?" in text
    assert text.endswith("ORDER BY [DocumentItems].[SortOrder], [DocumentItems].[ID]")


def test_changed_quotes_are_listed_oldest_first_and_bounded(statements: Statements, dialect: Dialect) -> None:
    text = sql(statements.headers_changed("QUOTE", "Accepted", STAMP), dialect)
    assert text.startswith("SELECT TOP 1000 [DocumentHeaders].[ID], ")
    assert (
        "WHERE [DocumentHeaders].[DocType] = ? AND [DocumentHeaders].[DocStatus] = ? "
        "AND [DocumentHeaders].[LastModified] >= ? ORDER BY [DocumentHeaders].[LastModified], [DocumentHeaders].[ID]"
    ) in text.replace("\n", "")
    first = sql(statements.headers_changed("QUOTE", "Accepted", None), dialect)
    assert "[LastModified] >=" not in first


def test_the_write_back_reads_only_identity_stamp_and_its_columns(statements: Statements, dialect: Dialect) -> None:
    text = sql(statements.write_target("AAAQ1001", ["CustomText01", "CustomText02"]), dialect)
    assert text == (
        "SELECT TOP 2 [DocumentHeaders].[ID], [DocumentHeaders].[LastModified], [DocumentHeaders].[CustomText01], "
        "[DocumentHeaders].[CustomText02] \nFROM [DocumentHeaders] \nWHERE [DocumentHeaders].[DocNo] = ?"
    )


def test_the_write_back_is_guarded_by_the_stamp_in_its_own_type_and_the_values_read(
    statements: Statements, dialect: Dialect
) -> None:
    update = statements.guarded_update(
        7, STAMP, {"CustomText01": None, "CustomText02": "M3 held"}, {"CustomText01": "1", "CustomText02": "M3 ok"}
    )
    compiled = update.compile(dialect=dialect)
    assert str(compiled) == (
        "UPDATE [DocumentHeaders] SET [CustomText01]=?, [CustomText02]=? WHERE [DocumentHeaders].[ID] = ? "
        "AND [DocumentHeaders].[LastModified] = CAST(? AS DATETIME) AND [DocumentHeaders].[CustomText01] IS NULL "
        "AND [DocumentHeaders].[CustomText02] = ?"
    )
    kinds = {name: type(bind.type).__name__ for name, bind in compiled.binds.items()}
    assert kinds["CustomText01"] == "Unicode"  # sent as NVARCHAR: QuoteWerks text is Unicode
    assert [value for value in compiled.params.values() if isinstance(value, datetime)] == [STAMP]
    unchanged_stamp = statements.guarded_update(7, None, {}, {"CustomText01": "1"})
    assert "[DocumentHeaders].[LastModified] IS NULL" in sql(unchanged_stamp, dialect)


def test_a_datetime2_stamp_is_compared_as_datetime2(dialect: Dialect) -> None:
    """A site whose stamp column is DATETIME2 (reflected so) gets the CAST in that type, not DATETIME's."""
    headers = Table(
        "DocumentHeaders", MetaData(), Column("ID", Integer), Column("DocNo", Unicode(50)),
        Column("CustomText01", Unicode(255)), Column("LastModified", mssql.DATETIME2(precision=7)),
    )  # fmt: skip
    items = Table("DocumentItems", MetaData(), Column("ID", Integer), Column("DocID", Integer))
    built = Statements.for_tables(headers, items, change_column="LastModified", dialect="mssql")
    text = sql(built.guarded_update(1, STAMP, {}, {"CustomText01": "1"}), dialect)
    assert "[DocumentHeaders].[LastModified] = CAST(? AS DATETIME2(7))" in text


def test_other_dialects_compare_the_stamp_without_a_cast() -> None:
    sqlite = create_async_engine("sqlite+aiosqlite://").dialect
    built = Statements.for_tables(DOCUMENT_HEADERS, DOCUMENT_ITEMS, change_column="LastModified", dialect="sqlite")
    text = sql(built.guarded_update(1, STAMP, {}, {"CustomText01": "1"}), sqlite)
    assert '"LastModified" = ?' in text
    assert "CAST" not in text


def test_the_shipped_schema_compiles_for_sql_server(dialect: Dialect) -> None:
    headers = str(CreateTable(DOCUMENT_HEADERS).compile(dialect=dialect))
    assert "CREATE TABLE [DocumentHeaders]" in headers
    assert "[ID] INTEGER NOT NULL IDENTITY" in headers
    assert "[DocNo] NVARCHAR(50) NULL" in headers
    assert "[CustomText24] NVARCHAR(255) NULL" in headers
    assert "[LastModified] DATETIME NULL" in headers
    assert "[GrandTotal] FLOAT NULL" in headers
    items = str(CreateTable(DOCUMENT_ITEMS).compile(dialect=dialect))
    assert "[Description] NVARCHAR(max) NULL" in items
    assert "[DocID] INTEGER NOT NULL" in items


async def test_the_connector_issues_no_statement_the_tests_above_do_not_compile(tmp_path: Path) -> None:
    """Run every call on SQLite and record what reaches the driver: apart from SQLAlchemy's own reflection, each
    statement is one of the builders compiled above."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'qw.db'}"
    setup = create_async_engine(url)
    await create_schema(setup)
    await insert_quote(setup, "AAAQ1", status="Accepted", stamp=STAMP, lines=[product_line("P1", 1, 2.0, sort=1)])
    await setup.dispose()
    client = quotewerks_client(
        url, SecretStr(""), http=httpx.AsyncClient(), writable={"CustomText01": False, "CustomText02": True}
    )
    assert isinstance(client, QuoteWerksSqlClient)
    issued: list[str] = []

    @event.listens_for(client.engine.sync_engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        issued.append(statement)

    try:
        await client.document("AAAQ1")
        await client.documents(doc_type="QUOTE", status="Accepted", modified_since=None)
        await client.documents(doc_type="QUOTE", status="Accepted", modified_since=STAMP)
        await client.update_document("AAAQ1", {"CustomText01": "0000001", "CustomText02": "M3 order"})
        await client.update_document("AAAQ1", {"CustomText02": "M3 order, status 66"})
        schema = client._schema
        assert schema is not None
    finally:
        await client.aclose()
    built, sqlite = schema.statements, client.engine.dialect

    def variants() -> Iterator[ClauseElement]:
        yield built.header_by_doc_no("")
        yield built.items_of(0)
        yield built.headers_changed("", "", None)
        yield built.headers_changed("", "", STAMP)
        yield built.write_target("", ["CustomText01", "CustomText02"])
        yield built.write_target("", ["CustomText02"])
        yield built.guarded_update(
            0, STAMP, {"CustomText01": None, "CustomText02": None}, {"CustomText01": "", "CustomText02": ""}
        )
        yield built.guarded_update(0, STAMP, {"CustomText02": ""}, {"CustomText02": ""})  # fmt: skip

    expected = {str(statement.compile(dialect=sqlite)) for statement in variants()}
    ours = [s for s in issued if not s.startswith("PRAGMA") and "sqlite_master" not in s and "sqlite_temp" not in s]
    assert len(ours) == 8  # header + items, two listings, two (read + update) write-backs
    assert [s for s in ours if s not in expected] == []


def test_a_service_that_needs_contacts_is_refused_a_database_at_start_up() -> None:
    with pytest.raises(QuoteWerksConfigError, match="QuoteWerks customers: not supported by the SQL connector"):
        quotewerks_client(MSSQL_URL, SecretStr(""), http=httpx.AsyncClient(), needs=("products", "customers"))
    products_only = quotewerks_client(MSSQL_URL, SecretStr(""), http=httpx.AsyncClient(), needs=("products",))
    assert isinstance(products_only, QuoteWerksSqlClient)


def _words(text: str) -> str:
    return " ".join(text.replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split())


def test_the_shipped_product_table_ddl_is_the_table_the_connector_expects(dialect: Dialect) -> None:
    """deploy/quotewerks/m3bridge-products.sql is what a DBA runs; it must create exactly BRIDGE_PRODUCTS."""
    shipped = (Path(__file__).resolve().parents[2] / PRODUCTS_DDL_FILE).read_text()
    compiled = str(CreateTable(BRIDGE_PRODUCTS).compile(dialect=dialect)).strip()
    assert _words(compiled) in _words(shipped)
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON dbo.M3BridgeProducts TO m3bridge" in shipped


def test_product_statements_are_keyed_on_the_part_number(dialect: Dialect) -> None:
    built = ProductStatements()
    assert sql(built.by_part("ITM1"), dialect) == (
        "SELECT [M3BridgeProducts].[ManufacturerPartNumber], [M3BridgeProducts].[Description], "
        "[M3BridgeProducts].[UnitOfMeasure], [M3BridgeProducts].[Price], [M3BridgeProducts].[Active], "
        "[M3BridgeProducts].[Availability], [M3BridgeProducts].[LastModified] \nFROM [M3BridgeProducts] \n"
        "WHERE [M3BridgeProducts].[ManufacturerPartNumber] = ?"
    )
    replaced = sql(built.replace("ITM1", {"Price": 1, "Active": True, "LastModified": STAMP}), dialect)
    assert replaced == (
        "UPDATE [M3BridgeProducts] SET [Price]=?, [Active]=?, [LastModified]=? "
        "WHERE [M3BridgeProducts].[ManufacturerPartNumber] = ?"
    )
    added = sql(built.add("ITM1", {"Price": 1}), dialect)
    assert added == "INSERT INTO [M3BridgeProducts] ([ManufacturerPartNumber], [Price]) VALUES (?, ?)"
    # A full load's batches: which parts exist, then one executemany of each kind.
    assert sql(built.known_parts(["ITM1", "ITM2"]), dialect) == (
        "SELECT [M3BridgeProducts].[ManufacturerPartNumber] \nFROM [M3BridgeProducts] \n"
        "WHERE [M3BridgeProducts].[ManufacturerPartNumber] IN (?, ?)"
    )
    assert sql(built.replace_each(["Active", "Price"]), dialect) == (
        "UPDATE [M3BridgeProducts] SET [Price]=?, [Active]=? WHERE [M3BridgeProducts].[ManufacturerPartNumber] = ?"
    )


def test_http_urls_keep_the_http_client() -> None:
    client = quotewerks_client("http://127.0.0.1:8300", SecretStr("k"), http=httpx.AsyncClient())
    assert not isinstance(client, QuoteWerksSqlClient)


def test_a_password_given_apart_is_put_into_the_url_not_shown() -> None:
    client = quotewerks_client(
        MSSQL_URL, SecretStr(""), http=httpx.AsyncClient(), sql_password=SecretStr("s3cret!"), writable={}
    )
    assert isinstance(client, QuoteWerksSqlClient)
    assert client.engine.url.password == "s3cret!"
    assert "s3cret" not in repr(client.engine.url)


def test_an_unknown_time_zone_is_a_configuration_error() -> None:
    with pytest.raises(QuoteWerksConfigError, match="Mars/Olympus"):
        quotewerks_client(MSSQL_URL, SecretStr(""), http=httpx.AsyncClient(), time_zone="Mars/Olympus")


async def test_an_unreachable_sql_server_is_a_retryable_error_through_freetds() -> None:
    """The driver chain (aioodbc → pyodbc → unixODBC → FreeTDS) loads and a refused connection is retryable."""
    client = quotewerks_client(MSSQL_URL, SecretStr(""), http=httpx.AsyncClient(), writable={})
    assert isinstance(client, QuoteWerksSqlClient)
    try:
        with pytest.raises(QuoteWerksError, match="FreeTDS") as caught:
            await client.document("AAAQ1")
    finally:
        await client.aclose()
    assert caught.value.retryable


async def test_contacts_are_refused_with_a_clear_error() -> None:
    client = quotewerks_client(MSSQL_URL, SecretStr(""), http=httpx.AsyncClient(), writable={})
    with pytest.raises(QuoteWerksError, match="not supported by the SQL connector") as caught:
        await client.customer("C000001")
    assert not caught.value.retryable


def test_a_missing_driver_chain_names_the_extra_and_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the [mssql] extra (or without unixODBC), the database mode refuses at start-up, saying what to
    install (SQLAlchemy imports the DBAPI module each time an engine is created)."""
    monkeypatch.setitem(sys.modules, "aioodbc", None)  # `import aioodbc` raises ImportError, as when not installed
    with pytest.raises(QuoteWerksConfigError) as caught:
        quotewerks_client(MSSQL_URL, SecretStr(""), http=httpx.AsyncClient(), writable={})
    message = str(caught.value)
    assert "m3bridge[mssql]" in message
    assert "unixodbc" in message
    assert "tdsodbc" in message
