"""The customer merge's state: the last-synced snapshot of each linked customer and the customer work items (the
review queue). The decisions themselves are in `services/catalog_sync/customer_merge.py`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.catalog_sync.customer_merge import Agreed
from shared.customers import FIELD_NAMES, FieldName
from shared.platform.state.ledger import QUOTE_IDENTITY_PREFIXES
from shared.platform.state.models import CustomerLink, CustomerSnapshot, CustomerWorkItem

WorkItemKind = Literal["conflict", "deleted", "match", "blocked"]
Decision = Literal["m3", "quotewerks", "value", "unlink", "recreate", "link", "create", "keep"]
OPEN, DECIDED, CLOSED = "open", "decided", "closed"


@dataclass
class StoredSnapshot:
    quotewerks_customer_id: str
    agreed: dict[FieldName, Agreed]
    pending: dict[FieldName, Agreed] = field(default_factory=dict)
    m3_event_hash: str | None = None
    m3_event_at: datetime | None = None
    version: int = 0


def _encode(values: Mapping[FieldName, Agreed]) -> str:
    return json.dumps({name: {"m3": a.m3, "quotewerks": a.quotewerks} for name, a in values.items()}, sort_keys=True)


def _decode(text: str | None) -> dict[FieldName, Agreed]:
    if not text:
        return {}
    data = json.loads(text)
    return {
        name: Agreed(str(v["m3"]), str(v["quotewerks"]))
        for name in FIELD_NAMES
        if isinstance(v := data.get(name), dict)
    }


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite gives naive datetimes back; the store writes UTC.
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


async def snapshot(engine: AsyncEngine, m3_customer_number: str) -> StoredSnapshot | None:
    async with async_sessionmaker(engine)() as session:
        row = await session.get(CustomerSnapshot, m3_customer_number)
        if row is None:
            return None
        return StoredSnapshot(
            quotewerks_customer_id=row.quotewerks_customer_id,
            agreed=_decode(row.agreed),
            pending=_decode(row.pending),
            m3_event_hash=row.m3_event_hash,
            m3_event_at=_aware(row.m3_event_at),
            version=row.version,
        )


async def save(
    engine: AsyncEngine,
    m3_customer_number: str,
    quotewerks_customer_id: str,
    *,
    read_version: int | None,
    agreed: Mapping[FieldName, Agreed] | None = None,
    pending: Mapping[FieldName, Agreed] | None = None,
) -> int | None:
    """Store the snapshot's `agreed` (None: keep it) and `pending` (None: clear it) if nobody saved it since it was read
    at `read_version` (None: it did not exist). Returns the new version, or None when another merge won the race."""
    async with async_sessionmaker(engine).begin() as session:
        if read_version is None:
            session.add(
                CustomerSnapshot(
                    m3_customer_number=m3_customer_number,
                    quotewerks_customer_id=quotewerks_customer_id,
                    agreed=_encode(agreed or {}),
                    pending=_encode(pending) if pending else None,
                    version=1,
                )
            )
            try:
                await session.flush()
            except IntegrityError:
                return None
            return 1
        values: dict[str, object] = {
            "version": read_version + 1,
            "quotewerks_customer_id": quotewerks_customer_id,
            "pending": _encode(pending) if pending else None,
            "updated_at": datetime.now(UTC),
        }
        if agreed is not None:
            values["agreed"] = _encode(agreed)
        result = await session.execute(
            update(CustomerSnapshot)
            .where(
                CustomerSnapshot.m3_customer_number == m3_customer_number,
                CustomerSnapshot.version == read_version,
            )
            .values(**values)
        )
        return read_version + 1 if result.rowcount == 1 else None  # type: ignore[attr-defined]


async def note_m3_event(engine: AsyncEngine, m3_customer_number: str, state_hash: str, at: datetime) -> None:
    """Remember the newest M3 change event of a linked customer: a merge that later reads M3 in this state knows
    when it was made (M3 itself gives only a date)."""
    async with async_sessionmaker(engine).begin() as session:
        row = await session.get(CustomerSnapshot, m3_customer_number, with_for_update=True)
        if row is None:
            return
        known = _aware(row.m3_event_at)
        if known is None or at >= known:
            row.m3_event_hash, row.m3_event_at = state_hash, at


async def unmerged_links(engine: AsyncEngine, limit: int = 100) -> list[tuple[str, str]]:
    """Links no merge has taken up yet (made by order-writer, by a quote's customer, before snapshots existed), as
    (M3 customer number, QuoteWerks customer id)."""
    async with async_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(CustomerLink.m3_customer_number, CustomerLink.quotewerks_customer_id)
            .outerjoin(CustomerSnapshot, CustomerSnapshot.m3_customer_number == CustomerLink.m3_customer_number)
            .where(
                CustomerSnapshot.m3_customer_number.is_(None),
                *(CustomerLink.quotewerks_customer_id.not_like(f"{prefix}%") for prefix in QUOTE_IDENTITY_PREFIXES),
            )
            .order_by(CustomerLink.linked_at)
            .limit(limit)
        )
        return [(str(number), str(account)) for number, account in rows.all()]


async def forget(engine: AsyncEngine, m3_customer_number: str) -> None:
    async with async_sessionmaker(engine).begin() as session:
        row = await session.get(CustomerSnapshot, m3_customer_number)
        if row is not None:
            await session.delete(row)


# --- work items -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkItemValues:
    m3_value: str
    quotewerks_value: str
    agreed: Agreed | None
    m3_changed_at: datetime | None
    quotewerks_changed_at: datetime | None
    reason: str


async def open_item(
    engine: AsyncEngine,
    kind: WorkItemKind,
    m3_customer_number: str,
    quotewerks_customer_id: str,
    name: str,
    values: WorkItemValues,
) -> tuple[int, bool]:
    """Open a work item for one customer field (`name`; "" for the whole record), or refresh the values of the one
    already open for it. Returns its id and whether it is new."""
    async with async_sessionmaker(engine).begin() as session:
        query = select(CustomerWorkItem).where(
            CustomerWorkItem.m3_customer_number == m3_customer_number,
            CustomerWorkItem.field == name,
            CustomerWorkItem.kind == kind,
            CustomerWorkItem.status.in_((OPEN, DECIDED)),
        )
        found = (await session.execute(query.with_for_update())).scalars().first()
        fields = {
            "m3_value": values.m3_value,
            "quotewerks_value": values.quotewerks_value,
            "agreed_m3": values.agreed.m3 if values.agreed else None,
            "agreed_quotewerks": values.agreed.quotewerks if values.agreed else None,
            "m3_changed_at": values.m3_changed_at,
            "quotewerks_changed_at": values.quotewerks_changed_at,
            "reason": values.reason,
        }
        if found is not None:
            for key, value in fields.items():
                setattr(found, key, value)
            return found.id, False
        item = CustomerWorkItem(
            kind=kind,
            m3_customer_number=m3_customer_number,
            quotewerks_customer_id=quotewerks_customer_id,
            field=name,
            status=OPEN,
            **fields,
        )
        session.add(item)
        await session.flush()
        return item.id, True


async def items(
    engine: AsyncEngine, *, status: Iterable[str] = (OPEN, DECIDED), m3_customer_number: str | None = None
) -> list[CustomerWorkItem]:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        query = select(CustomerWorkItem).where(CustomerWorkItem.status.in_(tuple(status)))
        if m3_customer_number is not None:
            query = query.where(CustomerWorkItem.m3_customer_number == m3_customer_number)
        return list((await session.execute(query.order_by(CustomerWorkItem.id))).scalars())


async def item(engine: AsyncEngine, item_id: int) -> CustomerWorkItem | None:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        return await session.get(CustomerWorkItem, item_id)


async def count_open(engine: AsyncEngine) -> dict[str, int]:
    """Open and decided items by kind."""
    async with async_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(CustomerWorkItem.kind, func.count())
            .where(CustomerWorkItem.status.in_((OPEN, DECIDED)))
            .group_by(CustomerWorkItem.kind)
        )
        return {str(kind): int(count) for kind, count in rows.all()}


async def decide(engine: AsyncEngine, item_id: int, decision: Decision, value: str | None, by: str) -> CustomerWorkItem:
    """A person's decision on an open item; the service that owns customers applies it. Raises LookupError for an
    unknown item and ValueError for one already closed."""
    async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
        found = await session.get(CustomerWorkItem, item_id, with_for_update=True)
        if found is None:
            raise LookupError(f"no customer work item {item_id}")
        if found.status == CLOSED:
            raise ValueError(f"customer work item {item_id} is already closed: {found.outcome}")
        found.status, found.decision, found.decided_value, found.decided_by = DECIDED, decision, value, by[:64]
        return found


async def close(engine: AsyncEngine, item_id: int, outcome: str) -> None:
    async with async_sessionmaker(engine).begin() as session:
        found = await session.get(CustomerWorkItem, item_id, with_for_update=True)
        if found is not None and found.status != CLOSED:
            found.status, found.outcome, found.closed_at = CLOSED, outcome[:2000], datetime.now(UTC)


async def close_fields(
    engine: AsyncEngine, m3_customer_number: str, names: Iterable[str], outcome: str, *, kind: WorkItemKind = "conflict"
) -> list[int]:
    """Close the open items of these fields (the two sides came to agree without a person). Returns their ids."""
    wanted = tuple(names)
    if not wanted:
        return []
    async with async_sessionmaker(engine).begin() as session:
        query = select(CustomerWorkItem).where(
            CustomerWorkItem.m3_customer_number == m3_customer_number,
            CustomerWorkItem.kind == kind,
            CustomerWorkItem.field.in_(wanted),
            CustomerWorkItem.status.in_((OPEN, DECIDED)),
        )
        closed = []
        for found in (await session.execute(query.with_for_update())).scalars():
            found.status, found.outcome, found.closed_at = CLOSED, outcome[:2000], datetime.now(UTC)
            closed.append(found.id)
        return closed
