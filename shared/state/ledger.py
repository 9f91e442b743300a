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
    ORDERING = "ordering"  # a batch order may exist in M3: on restart, look it up by CUOR before retrying
    CONFIRMED = "confirmed"
    FAILED = "failed"  # M3 refused it for good; the message is in the dead letters


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
    error: str | None = None,
    fingerprint: str | None = None,
    count_attempt: bool = False,
) -> OrderLedgerEntry:
    """Create or move the entry to `state`; the write is durable when this returns."""
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
