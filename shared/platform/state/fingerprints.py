"""Small remembered values per entity: what was last pushed (catalog fingerprints), the newest BOD variation."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.platform.state.models import SyncFingerprint


async def get(engine: AsyncEngine, kind: str, entity_key: str) -> str | None:
    async with async_sessionmaker(engine)() as session:
        found = await session.get(SyncFingerprint, (kind, entity_key[:64]))
        return found.fingerprint if found is not None else None


async def put(engine: AsyncEngine, kind: str, entity_key: str, fingerprint: str) -> None:
    await put_many(engine, kind, {entity_key: fingerprint})


async def put_many(engine: AsyncEngine, kind: str, values: Mapping[str, str]) -> None:
    """`put` for many entities in one transaction (a full load stores thousands: one commit per batch, not each)."""
    if not values:
        return
    keys = {key[:64]: value[:64] for key, value in values.items()}
    for attempt in (1, 2):
        try:
            await _upsert(engine, kind, keys)
            return
        except IntegrityError:
            if attempt == 2:
                raise  # a single put of the same key raced the batch's insert; the second try finds its row


async def _upsert(engine: AsyncEngine, kind: str, keys: Mapping[str, str]) -> None:
    now = datetime.now(UTC)
    async with async_sessionmaker(engine).begin() as session:
        query = select(SyncFingerprint).where(SyncFingerprint.kind == kind, SyncFingerprint.entity_key.in_(keys))
        found = {row.entity_key: row for row in (await session.execute(query.with_for_update())).scalars()}
        for key, value in keys.items():
            row = found.get(key)
            if row is None:
                session.add(SyncFingerprint(kind=kind, entity_key=key, fingerprint=value))
            else:
                row.fingerprint, row.synced_at = value, now


async def all_of(engine: AsyncEngine, kind: str) -> dict[str, str]:
    """Every remembered value of one kind, in one query."""
    async with async_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(SyncFingerprint.entity_key, SyncFingerprint.fingerprint).where(SyncFingerprint.kind == kind)
        )
        return {str(key): str(value) for key, value in rows.all()}


TURNS = "turn"  # kind of the rows below: key the job's name, the value when a replica last took its turn


async def take_turn(engine: AsyncEngine, job: str, every_s: float) -> bool:
    """Whether this replica runs `job` now: True for the one replica that finds nobody ran it within `every_s`
    (a compare-and-set on the job's row), so a schedule shared by replicas runs once per period, not once each."""
    now = datetime.now(UTC)
    try:
        async with async_sessionmaker(engine).begin() as session:
            query = select(SyncFingerprint).where(SyncFingerprint.kind == TURNS, SyncFingerprint.entity_key == job)
            found = (await session.execute(query.with_for_update())).scalars().first()
            if found is None:
                session.add(SyncFingerprint(kind=TURNS, entity_key=job[:64], fingerprint=now.isoformat()[:64],
                                            synced_at=now))  # fmt: skip
                return True
            last = found.synced_at if found.synced_at.tzinfo else found.synced_at.replace(tzinfo=UTC)
            if (now - last).total_seconds() < every_s:
                return False
            found.fingerprint, found.synced_at = now.isoformat()[:64], now
            return True
    except IntegrityError:
        return False  # another replica inserted the row first: its turn
