"""The order ledger: each approved quote's progress towards exactly one M3 order, and customer links."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.platform.state.models import CustomerLink, OrderLedgerEntry


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


#: A fenced write or renewal younger than this share of the lease stands for a check before an M3 write: no other
#: owner can take the entry before the lease runs out, and the margin covers replicas' clocks disagreeing by up to
#: nine tenths of it. A worker frozen after its last check finds the check stale on waking and asks the store.
CHECK_FRESH_FRACTION = 0.1


@dataclass
class Lease:
    """One order-writer's hold on one ledger entry: while `fence` is the entry's, its writes go through."""

    doc_no: str
    revision: int
    owner: str
    fence: int
    ttl_s: float
    # This process's monotonic time just before the store last extended the lease (acquire, renew, fenced record).
    held_since: float = field(default=-math.inf, compare=False, repr=False)
    released: bool = field(default=False, compare=False, repr=False)

    def confirmed_within(self, seconds: float) -> bool:
        return time.monotonic() - self.held_since < seconds


class LeaseLostError(Exception):
    """Another order-writer took the entry over (this one stalled past its lease): stop before the next M3 write;
    the new owner finishes the quote. Nothing is dead-lettered and no result is published for it."""

    retryable = False

    def __init__(self, lease: Lease, fence_now: int, owner_now: str | None) -> None:
        holder = f", held by {owner_now}" if owner_now else ""
        super().__init__(
            f"quote {lease.doc_no} r{lease.revision}: lease {lease.fence} of {lease.owner} was taken over (fence now "
            f"{fence_now}{holder})"
        )
        self.lease = lease


class EntryBusyError(Exception):
    """Another order-writer holds a live lease on the entry (until `until`, unless it renews it)."""

    retryable = True

    def __init__(self, message: str, until: datetime | None = None) -> None:
        super().__init__(message)
        self.until = until


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite gives timestamps back without their zone (they are stored in UTC)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


async def acquire(
    engine: AsyncEngine, doc_no: str, revision: int, *, owner: str, ttl_s: float, fingerprint: str | None = None
) -> tuple[Lease, OrderLedgerEntry]:
    """Take the entry (created RECEIVED when new) for `owner` for `ttl_s`, with a new fencing token. Raises
    EntryBusyError when another owner's lease has not expired."""
    started = time.monotonic()
    async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
        found = await session.get(OrderLedgerEntry, (doc_no, revision), with_for_update=True)
        now = _now()
        if found is None:
            found = OrderLedgerEntry(doc_no=doc_no, revision=revision, state=OrderState.RECEIVED.value, attempts=0,
                                     fence=0)  # fmt: skip
            session.add(found)
        expires = _aware(found.lease_expires_at)
        if found.owner and found.owner != owner and expires is not None and expires > now:
            raise EntryBusyError(
                f"quote {doc_no} r{revision} is being written by {found.owner} until {expires.isoformat()}", expires
            )
        found.owner = owner
        found.fence = (found.fence or 0) + 1
        found.lease_expires_at = now + timedelta(seconds=ttl_s)
        found.attempts = (found.attempts or 0) + 1
        found.updated_at = now
        if fingerprint is not None and found.state != OrderState.CONFIRMED.value:
            found.payload_fingerprint = fingerprint  # a confirmed entry keeps what it was ordered as
        lease = Lease(doc_no, revision, owner, found.fence, ttl_s)
    lease.held_since = started
    return lease, found


async def renew(engine: AsyncEngine, lease: Lease) -> None:
    """Still ours? (raises LeaseLostError) Then hold it another `ttl_s`."""
    started = time.monotonic()
    async with async_sessionmaker(engine).begin() as session:
        found = await session.get(OrderLedgerEntry, (lease.doc_no, lease.revision), with_for_update=True)
        _check(lease, found)
        assert found is not None
        found.lease_expires_at = _now() + timedelta(seconds=lease.ttl_s)
    lease.held_since = started


async def check(engine: AsyncEngine, lease: Lease) -> None:
    """Before an M3 write: is the entry still ours? (raises LeaseLostError) The store is asked unless the lease was
    extended a moment ago (`CHECK_FRESH_FRACTION` of it): an order's writes follow each other within milliseconds,
    and each would otherwise cost the state store a locked read and a write."""
    if not lease.confirmed_within(lease.ttl_s * CHECK_FRESH_FRACTION):
        await renew(engine, lease)


async def release(engine: AsyncEngine, lease: Lease) -> None:
    """Done with the entry (whatever its state): another worker may take it at once. A lost lease is left as is."""
    if lease.released:
        return
    async with async_sessionmaker(engine).begin() as session:
        found = await session.get(OrderLedgerEntry, (lease.doc_no, lease.revision), with_for_update=True)
        if found is not None and found.fence == lease.fence:
            found.owner = None
            found.lease_expires_at = None
    lease.released = True


def _check(lease: Lease, found: OrderLedgerEntry | None) -> None:
    if found is None or found.fence != lease.fence:
        lease.held_since = -math.inf
        raise LeaseLostError(lease, found.fence if found is not None else 0, found.owner if found else None)


def batch_orders_of(entry: OrderLedgerEntry) -> list[str]:
    """Every batch order the entry ever started, oldest first."""
    return (entry.batch_order_history or "").split()


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
    lease: Lease | None = None,
    release: bool = False,
) -> OrderLedgerEntry:
    """Create or move the entry to `state`; the write is durable when this returns. `batch_order_number` is
    kept unless given (None clears it: the batch order is gone from M3); every number given is also kept in the
    entry's batch order history. With `lease`, the write is a compare-and-set on its fencing token (LeaseLostError
    when another worker took the entry) and holds the lease another `ttl_s`, or with `release` lets it go in the same
    write (the last step of the quote)."""
    started = time.monotonic()
    async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
        found = await session.get(OrderLedgerEntry, (doc_no, revision), with_for_update=True)
        if lease is not None:
            _check(lease, found)
            assert found is not None
            found.lease_expires_at = None if release else _now() + timedelta(seconds=lease.ttl_s)
            if release:
                found.owner = None
        if found is None:
            found = OrderLedgerEntry(doc_no=doc_no, revision=revision, state=state.value, attempts=0, fence=0)
            session.add(found)
        found.state = state.value
        found.updated_at = datetime.now(UTC)
        if isinstance(batch_order_number, str) and batch_order_number not in batch_orders_of(found):
            found.batch_order_history = " ".join([*batch_orders_of(found), batch_order_number])
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
    if lease is not None:
        lease.held_since = started
        lease.released = release
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


#: Links a quote made for a sold-to without a QuoteWerks account number (`email:…`, `company:…`): there is no contact
#: record to keep in step with M3.
QUOTE_IDENTITY_PREFIXES = ("email:", "company:")


def is_quotewerks_account(quotewerks_customer_id: str) -> bool:
    return not quotewerks_customer_id.startswith(QUOTE_IDENTITY_PREFIXES)


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


async def unlink_customer(engine: AsyncEngine, quotewerks_customer_id: str) -> bool:
    """Forget the link of a QuoteWerks customer (deleted there, by rule or by a person). True if there was one."""
    async with async_sessionmaker(engine).begin() as session:
        existing = await session.get(CustomerLink, quotewerks_customer_id)
        if existing is None:
            return False
        await session.delete(existing)
        return True


async def customer_links(engine: AsyncEngine) -> list[tuple[str, str]]:
    """Every link to a QuoteWerks customer account, as (M3 customer number, QuoteWerks customer id), by M3 number."""
    async with async_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(CustomerLink.m3_customer_number, CustomerLink.quotewerks_customer_id).order_by(
                CustomerLink.m3_customer_number
            )
        )
        return [(str(number), str(account)) for number, account in rows.all() if is_quotewerks_account(str(account))]
