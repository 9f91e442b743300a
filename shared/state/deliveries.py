"""Deliveries already accepted (webhook identities, BODIDs): to recognise duplicates and replays.

Deduplication is a claim: one INSERT on the unique key (source, delivery_id) *before* the effect, so of many
concurrent deliveries of the same thing exactly one wins. When the effect then fails, the winner releases the
claim, so that a retry can claim it again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.state.models import SeenDelivery

log = logging.getLogger(__name__)

_MAX_ID = 255  # the column's length


async def claim(engine: AsyncEngine, source: str, delivery_id: str) -> bool:
    """Claim the delivery; False when it is already claimed (by us earlier or by a concurrent replica)."""
    try:
        async with async_sessionmaker(engine).begin() as session:
            session.add(SeenDelivery(source=source, delivery_id=delivery_id[:_MAX_ID]))
    except IntegrityError:
        return False
    return True


async def release(engine: AsyncEngine, source: str, delivery_id: str) -> None:
    """Give a claim back (its effect failed), so that the next delivery of the same thing can claim it."""
    async with async_sessionmaker(engine).begin() as session:
        await session.execute(
            delete(SeenDelivery).where(SeenDelivery.source == source, SeenDelivery.delivery_id == delivery_id[:_MAX_ID])
        )


@contextlib.asynccontextmanager
async def claiming(engine: AsyncEngine, source: str, delivery_id: str) -> AsyncIterator[bool]:
    """Claim the delivery for the block's effect; yields whether this caller won the claim. When it won and the
    block fails (or is cancelled), the claim is released and the error goes on."""
    won = await claim(engine, source, delivery_id)
    try:
        yield won
    except BaseException:
        if won:
            try:
                await release(engine, source, delivery_id)
            except Exception as exc:  # the original error matters more; the claim stays (a retry sees a duplicate)
                log.error("could not release the claim on %s %s: %s", source, delivery_id, exc)
        raise


async def claimed(engine: AsyncEngine, source: str, delivery_ids: Iterable[str]) -> set[str]:
    """Which of `delivery_ids` are claimed already, in one query. Only a cheap pre-check (to skip work): the
    claim itself decides."""
    wanted = {delivery_id[:_MAX_ID]: delivery_id for delivery_id in delivery_ids}
    if not wanted:
        return set()
    async with async_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(SeenDelivery.delivery_id).where(
                SeenDelivery.source == source, SeenDelivery.delivery_id.in_(list(wanted))
            )
        )
        return {wanted[str(row)] for row in rows.scalars()}
