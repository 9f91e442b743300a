"""Choosing the transport: the QuoteWerks HTTP adapter or the QuoteWerks database, by the URL in the settings."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import httpx
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.platform.audit import Audit
from shared.quotewerks import AuditedQuoteWerks, QuoteWerks, QuoteWerksClient
from shared.quotewerks.errors import QuoteWerksConfigError
from shared.quotewerks.schema import DEFAULT_CHANGE_COLUMN
from shared.quotewerks.sql import QuoteWerksSqlClient

SQL_CONNECTOR_SERVES = frozenset({"documents", "products"})


def is_database_url(url: str) -> bool:
    return not url.lower().startswith(("http://", "https://"))


def create_quotewerks_engine(url: str, password: SecretStr | None = None) -> AsyncEngine:
    """An async engine for the QuoteWerks database; a password given apart from the URL is put into it here, so
    the URL in the settings (and in logs) need not carry it."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        scheme = url.split("://", 1)[0][:40] if "://" in url else "none"
        # Not the URL itself: it may carry a password.
        raise QuoteWerksConfigError(
            f"M3B_QUOTEWERKS_URL is neither http(s) nor a database URL (scheme {scheme!r})"
        ) from None
    if password is not None and password.get_secret_value() and not parsed.password:
        parsed = parsed.set(password=password.get_secret_value())
    if parsed.get_backend_name() == "sqlite":
        return create_async_engine(parsed, connect_args={"timeout": 30})
    try:
        return create_async_engine(parsed, pool_pre_ping=True, pool_size=4, max_overflow=4)
    except ImportError as exc:  # the SQL Server driver chain is optional: only this mode needs it
        raise QuoteWerksConfigError(
            f"QuoteWerks on {parsed.get_backend_name()} needs its driver, not loadable here ({exc}): for SQL Server "
            "install 'm3bridge[mssql]' (aioodbc, pyodbc) and the Debian packages unixodbc and tdsodbc (FreeTDS)"
        ) from None


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
    audit: Audit | None = None,
) -> QuoteWerks:
    """The QuoteWerks client `url` asks for. `needs` says what the service uses ("documents", "customers",
    "products"): the SQL connector reads and writes documents and the bridge's product table, not contacts, so a
    service needing those is refused here, at start-up, with QuoteWerksConfigError rather than failing message by
    message."""
    client = _client(url, api_key, http=http, needs=needs, writable=writable, change_column=change_column,
                     time_zone=time_zone, sql_password=sql_password)  # fmt: skip
    return AuditedQuoteWerks(client, audit) if audit is not None else client


def _client(
    url: str,
    api_key: SecretStr,
    *,
    http: httpx.AsyncClient,
    needs: Collection[str],
    writable: Mapping[str, bool] | None,
    change_column: str,
    time_zone: str,
    sql_password: SecretStr | None,
) -> QuoteWerks:
    if not is_database_url(url):
        return QuoteWerksClient(url, api_key, http=http)
    unsupported = sorted(set(needs) - SQL_CONNECTOR_SERVES)
    if unsupported:
        raise QuoteWerksConfigError(
            f"QuoteWerks {' and '.join(unsupported)}: not supported by the SQL connector; this service needs "
            "them, so point M3B_QUOTEWERKS_URL at a QuoteWerks HTTP adapter (or the simulator) instead of a database"
        )
    return QuoteWerksSqlClient(
        create_quotewerks_engine(url, sql_password),
        writable=writable or {},
        change_column=change_column,
        time_zone=time_zone,
    )
