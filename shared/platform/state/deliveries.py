"""Deliveries already accepted (webhook identities, BODIDs, IMS message ids): to recognise duplicates and replays.

Deduplication is a claim: one INSERT on the unique key (source, delivery_id) in the same transaction as what the
delivery leads to (`shared.platform.outbox.Recording.claim`), so of many concurrent deliveries of the same thing exactly
one records its effect, and a crash leaves either both or neither. These are the reads around it."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.platform.state.models import SeenDelivery

_MAX_ID = 255  # the column's length
#: The claims of approved quotes (subject: the DocNo), by quote-ingest; read by the quote trace.
APPROVAL_CLAIMS = "quote-approval"


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


async def stamps(engine: AsyncEngine, source: str, subjects: Iterable[str]) -> dict[str, set[str]]:
    """The change stamps (e.g. a document's LastModified) each of `subjects` had when its claims were made or last
    confirmed, in one query. Only a cheap pre-check (to skip fetching what did not change): the claim decides."""
    wanted = [subject[:64] for subject in subjects]
    if not wanted:
        return {}
    found: dict[str, set[str]] = {}
    async with async_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(SeenDelivery.subject, SeenDelivery.subject_stamp).where(
                SeenDelivery.source == source, SeenDelivery.subject.in_(wanted), SeenDelivery.subject_stamp.is_not(None)
            )
        )
        for subject, stamp in rows:
            found.setdefault(str(subject), set()).add(str(stamp))
    return found


async def restamp(engine: AsyncEngine, source: str, delivery_id: str, stamp: str) -> None:
    """The claimed thing was seen again, unchanged, with this change stamp (the bridge's own write-back moves it)."""
    async with async_sessionmaker(engine).begin() as session:
        await session.execute(
            update(SeenDelivery)
            .where(SeenDelivery.source == source, SeenDelivery.delivery_id == delivery_id[:_MAX_ID])
            .values(subject_stamp=stamp[:64])
        )
