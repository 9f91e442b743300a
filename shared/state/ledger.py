"""The order ledger: each approved quote's progress towards exactly one M3 order, and customer links."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.state.models import CustomerLink, OrderLedgerEntry


class OrderState(StrEnum):
    RECEIVED = "received"
    HELD = "held"  # not sent: an unknown/inactive item or a mapping refusal; released by a replay
    # AddBatchHead may have been sent: a batch order with the quote's CUOR may exist in M3. `batch_order_number`
    # is recorded as soon as M3 returns it; without it, the batch order is looked up by CUOR before another is
    # started.
    ORDERING = "ordering"
    CONFIRMED = "confirmed"
    FAILED = "failed"  # M3 refused it for good; the message is in the dead letters
    SUPERSEDED = "superseded"  # a newer revision of the quote replaced this one before it was confirmed


#: An entry in one of these states with a `batch_order_number` still set holds a batch order in M3 that the bridge
#: gave up on and could not delete: an operator deletes it (OIS275) or replays the quote.
GIVEN_UP = (OrderState.HELD, OrderState.FAILED, OrderState.SUPERSEDED)

_UNSET = object()


async def entry(engine: AsyncEngine, doc_no: str, revision: int) -> OrderLedgerEntry | None:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        return await session.get(OrderLedgerEntry, (doc_no, revision))


async def record(
    engine: AsyncEngine,
    doc_no: str,
    revision: int,
    state: OrderState,
    *,
    customer_number: str | None = None,
    order_number: str | None = None,
    batch_order_number: str | object | None = _UNSET,
    error: str | None = None,
    fingerprint: str | None = None,
    count_attempt: bool = False,
) -> OrderLedgerEntry:
    """Create or move the entry to `state`; the write is durable when this returns. `batch_order_number` is
    kept unless given (None clears it: the batch order is gone from M3)."""
    async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
        found = await session.get(OrderLedgerEntry, (doc_no, revision), with_for_update=True)
        if found is None:
            found = OrderLedgerEntry(doc_no=doc_no, revision=revision, state=state.value, attempts=0)
            session.add(found)
        found.state = state.value
        found.updated_at = datetime.now(UTC)
        if customer_number is not None:
            found.customer_number = customer_number
        if order_number is not None:
            found.order_number = order_number
        if batch_order_number is not _UNSET:
            found.batch_order_number = batch_order_number  # type: ignore[assignment]
        if fingerprint is not None:
            found.payload_fingerprint = fingerprint
        found.last_error = error
        if count_attempt:
            found.attempts = (found.attempts or 0) + 1
        return found


async def entries(engine: AsyncEngine, state: OrderState | None = None) -> list[OrderLedgerEntry]:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        query = select(OrderLedgerEntry).order_by(OrderLedgerEntry.updated_at)
        if state is not None:
            query = query.where(OrderLedgerEntry.state == state.value)
        return list((await session.execute(query)).scalars())


async def revisions(engine: AsyncEngine, doc_no: str) -> list[OrderLedgerEntry]:
    """Every revision of the quote the ledger knows, oldest first."""
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        query = select(OrderLedgerEntry).where(OrderLedgerEntry.doc_no == doc_no).order_by(OrderLedgerEntry.revision)
        return list((await session.execute(query)).scalars())


async def batch_orders_left(engine: AsyncEngine) -> list[OrderLedgerEntry]:
    """Entries the bridge gave up on whose batch order could not be deleted in M3 (for an operator)."""
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        query = (
            select(OrderLedgerEntry)
            .where(OrderLedgerEntry.state.in_([s.value for s in GIVEN_UP]))
            .where(OrderLedgerEntry.batch_order_number.is_not(None))
            .order_by(OrderLedgerEntry.updated_at)
        )
        return list((await session.execute(query)).scalars())


async def customer_link(engine: AsyncEngine, quotewerks_customer_id: str) -> CustomerLink | None:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        return await session.get(CustomerLink, quotewerks_customer_id)


async def customer_link_for_m3(engine: AsyncEngine, m3_customer_number: str) -> CustomerLink | None:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        found = await session.execute(select(CustomerLink).where(CustomerLink.m3_customer_number == m3_customer_number))
        return found.scalars().first()


async def link_customer(
    engine: AsyncEngine, quotewerks_customer_id: str, m3_customer_number: str, *, email: str, company: str, by: str
) -> bool:
    """Remember that the QuoteWerks customer is this M3 customer; False if another link already holds it."""
    try:
        async with async_sessionmaker(engine).begin() as session:
            existing = await session.get(CustomerLink, quotewerks_customer_id)
            if existing is None:
                session.add(
                    CustomerLink(
                        quotewerks_customer_id=quotewerks_customer_id,
                        m3_customer_number=m3_customer_number,
                        email=email or None,
                        company=company or None,
                        last_written_by=by,
                    )
                )
            else:
                existing.m3_customer_number = m3_customer_number
                existing.last_written_by = by
                existing.updated_at = datetime.now(UTC)
    except IntegrityError:
        return False
    return True
