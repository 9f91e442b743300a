"""Small remembered values per entity: what was last pushed (catalog fingerprints), the newest BOD variation."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.state.models import SyncFingerprint


async def get(engine: AsyncEngine, kind: str, entity_key: str) -> str | None:
    async with async_sessionmaker(engine)() as session:
        found = await session.get(SyncFingerprint, (kind, entity_key[:64]))
        return found.fingerprint if found is not None else None


async def put(engine: AsyncEngine, kind: str, entity_key: str, fingerprint: str) -> None:
    async with async_sessionmaker(engine).begin() as session:
        found = await session.get(SyncFingerprint, (kind, entity_key[:64]), with_for_update=True)
        if found is None:
            session.add(SyncFingerprint(kind=kind, entity_key=entity_key[:64], fingerprint=fingerprint[:64]))
        else:
            found.fingerprint = fingerprint[:64]
            found.synced_at = datetime.now(UTC)
