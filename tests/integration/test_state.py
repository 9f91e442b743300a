"""The state store's migrations and engine on SQLite and on the machine's PostgreSQL."""

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from shared.platform.state import db, fingerprints
from shared.platform.state.models import Base, CustomerLink, OrderLedgerEntry


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'state.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


async def _reset(url: str) -> None:
    await db.downgrade(url, "base")


async def test_migrations_reach_head_and_match_the_models(state_url: str) -> None:
    assert await db.migrate(state_url) == db.head_revision()
    engine = db.create_engine(state_url)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        await engine.dispose()
        await _reset(state_url)


async def test_concurrent_starters_migrate_once_without_errors(state_url: str) -> None:
    results = await asyncio.gather(*(db.migrate(state_url) for _ in range(4)))
    assert set(results) == {db.head_revision()}
    await _reset(state_url)


async def test_rows_round_trip_and_constraints_hold(state_url: str) -> None:
    await db.migrate(state_url)
    engine = db.create_engine(state_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions.begin() as session:
            session.add(
                OrderLedgerEntry(
                    doc_no="AAAQ1001", revision=0, state="confirmed", attempts=1, order_number="1000000123"
                )
            )
            session.add(CustomerLink(quotewerks_customer_id="ACME01", m3_customer_number="C0001"))
        async with sessions() as session:
            entry = (await session.execute(select(OrderLedgerEntry))).scalar_one()
            assert (entry.doc_no, entry.state, entry.order_number) == ("AAAQ1001", "confirmed", "1000000123")
            assert entry.created_at is not None
        with pytest.raises(IntegrityError):
            async with sessions.begin() as session:
                session.add(CustomerLink(quotewerks_customer_id="OTHER", m3_customer_number="C0001"))
        await db.ping(engine)
        assert await db.current_revision(engine) == db.head_revision()
    finally:
        await engine.dispose()
        await _reset(state_url)


async def test_fingerprints_one_by_one_and_in_batches(state_url: str) -> None:
    await db.migrate(state_url)
    engine = db.create_engine(state_url)
    try:
        await fingerprints.put(engine, "product", "ITM000001", "a" * 64)
        batch = {f"ITM{n:06d}": f"{n:064d}" for n in range(1, 1201)}  # ITM000001 exists: updated, the rest added
        await fingerprints.put_many(engine, "product", batch)
        await fingerprints.put_many(engine, "product", {"ITM000002": "b" * 64})
        await fingerprints.put(engine, "other", "ITM000001", "c" * 64)
        stored = await fingerprints.all_of(engine, "product")
        assert len(stored) == 1200
        assert stored["ITM000001"] == f"{1:064d}"
        assert stored["ITM000002"] == "b" * 64
        assert await fingerprints.get(engine, "other", "ITM000001") == "c" * 64
    finally:
        await engine.dispose()
        await _reset(state_url)


async def test_downgrade_then_upgrade_again(state_url: str) -> None:
    await db.migrate(state_url)
    await db.downgrade(state_url, "base")
    engine = db.create_engine(state_url)
    try:
        assert await db.current_revision(engine) is None
    finally:
        await engine.dispose()
    assert await db.migrate(state_url) == db.head_revision()
    await _reset(state_url)


def test_the_newest_revision_read_from_the_files_is_alembics_head() -> None:
    assert db.newest_revision() == db.head_revision()


def test_a_store_already_at_the_newest_revision_is_opened_without_alembic(tmp_path: Path) -> None:
    """A service starting after the migrate job does not load Alembic (memory); a new store still gets migrated."""
    import subprocess
    import sys

    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    program = (
        "import asyncio, sys; from shared.platform.state import db; "
        f"revision = asyncio.run(db.migrate({url!r})); "
        "print(revision, 'alembic' in sys.modules)"
    )
    runs = [subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60)
            for _ in range(2)]  # fmt: skip
    head = db.head_revision()
    assert [run.stdout.split() for run in runs] == [[head, "True"], [head, "False"]], [r.stderr for r in runs]
