"""Deliveries already accepted (webhook identities, BODIDs): to recognise duplicates and replays."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.state.models import SeenDelivery


async def seen(engine: AsyncEngine, source: str, delivery_id: str) -> bool:
    async with async_sessionmaker(engine)() as session:
        found = await session.execute(
            select(SeenDelivery.delivery_id).where(
                SeenDelivery.source == source, SeenDelivery.delivery_id == delivery_id[:255]
            )
        )
        return found.first() is not None


async def remember(engine: AsyncEngine, source: str, delivery_id: str) -> bool:
    """Record the delivery; False when it was already recorded (by us or a concurrent replica)."""
    try:
        async with async_sessionmaker(engine).begin() as session:
            session.add(SeenDelivery(source=source, delivery_id=delivery_id[:255]))
    except IntegrityError:
        return False
    return True
