"""What the QuoteWerks database connector's parts share: the engine, the database's time zone, connections whose
failures become QuoteWerksError, database values as the HTTP adapter gives them."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.quotewerks.errors import QuoteWerksConfigError, QuoteWerksError


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


class SqlBase:
    """The engine, the schema the tables are in, the database's time zone; connections and change stamps."""

    def __init__(self, engine: AsyncEngine, *, time_zone: str = "UTC", schema: str | None = None) -> None:
        self.engine = engine
        self.zone = _zone(time_zone)
        self.schema = schema or None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.engine.dispose()

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
