"""Engine creation, migrations and health for the state store."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import re
import threading
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (with Mako, some 10 MB) is imported only when a store needs migrating: a service starting on a store already
# at the newest revision (the deployed case: the migrate job ran first) never loads it.
MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r'^revision: str = "([^"]+)"$', re.M)
_DOWN_REVISION = re.compile(r'^down_revision: str \| None = "([^"]+)"$', re.M)
# Any constant works, as long as every process uses the same one.
_PG_MIGRATION_LOCK = zlib.crc32(b"m3bridge-state-migrations")


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


#: Connections opened beyond the pool for a burst, closed when returned.
BURST_CONNECTIONS = 5


def create_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        # Several services share the file in `make run`: WAL lets readers and one writer work at once.
        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=BURST_CONNECTIONS)


def newest_revision() -> str:
    """The head of the migrations, read from their files without Alembic (a unit test holds it to Alembic's)."""
    sources = [path.read_text(encoding="utf-8") for path in sorted((MIGRATIONS / "versions").glob("*.py"))]
    revisions = {found[1] for source in sources if (found := _REVISION.search(source))}
    replaced = {found[1] for source in sources if (found := _DOWN_REVISION.search(source))}
    [head] = revisions - replaced
    return head


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


_process_locks: dict[Path, threading.Lock] = {}


def _open_lock_file(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".migrate.lock").open("w")


@contextlib.asynccontextmanager
async def _migration_lock(path: Path) -> AsyncIterator[None]:
    """One migration at a time per SQLite file (`path` is absolute, see `sqlite_path`): across processes
    (flock) and within this one (flock does not exclude two descriptors of one process from each other).
    Both waits happen off the event loop."""
    in_process = _process_locks.setdefault(path, threading.Lock())
    await asyncio.to_thread(in_process.acquire)
    try:
        handle = await asyncio.to_thread(_open_lock_file, path)
        try:
            await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
            yield
        finally:
            handle.close()  # closing releases the flock
    finally:
        in_process.release()


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Held until this transaction ends, so concurrent starters migrate one after another.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def _recorded_revision(engine: AsyncEngine) -> str | None:
    """The revision the store records (Alembic's version table, read with SQLAlchemy alone); None when it has none."""
    try:
        async with engine.connect() as connection:
            return (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
    except SQLAlchemyError:  # no version table yet: a new store
        return None


async def migrate(url: str, revision: str = "head") -> str | None:
    """Bring the store at `url` to `revision` (default: the newest); safe to call from many processes."""
    path = sqlite_path(url)
    engine = create_engine(url)
    try:
        if revision == "head" and await _recorded_revision(engine) == newest_revision():
            return newest_revision()  # already there: no lock, no Alembic
        if path is None:
            async with engine.begin() as connection:
                await connection.run_sync(_upgrade, revision)
                return await connection.run_sync(_current)
        async with _migration_lock(path), engine.begin() as connection:
            await connection.run_sync(_upgrade, revision)
            return await connection.run_sync(_current)
    finally:
        await engine.dispose()


async def downgrade(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_downgrade, revision)
    finally:
        await engine.dispose()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
