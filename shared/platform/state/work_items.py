"""The work queue: quotes held or failed and changes that could not be applied, kept in the state store until a
person retries or resolves them.

A work item is opened (or brought up to date, one per DocNo and revision) each time order-writer holds or fails a
quote, and closed when the quote becomes an order or a person resolves it. A change message (an M3 item, price, stock
or customer change, a QuoteWerks customer change) a service dead-letters after its attempts is an item too, one per
kind and business key, closed when its retry is applied. Every event is appended to its history.
Dead-letter topics stay for what cannot be decoded or used at all; this is the list people work from.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Gauge
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.contracts import Problem
from shared.platform.state.models import WorkItem

OPEN, RESOLVED = "open", "resolved"
Status = Literal["open", "resolved", "all"]
#: The kind of a quote's item; change items are named by the service that consumes them (`item`, `m3-customer`, …).
QUOTE = "quote"

open_items = Gauge(
    "m3bridge_work_items_open",
    "Work items waiting for a person (m3bridge work list), by kind (quote, item, price, stock, m3-customer, "
    "qw-customer, new-customer) and class; each service counts the kinds it opens.",
    ["kind", "error_class"],
)


def _now() -> datetime:
    return datetime.now(UTC)


def _event(what: str, note: str = "", **more: Any) -> dict[str, Any]:
    return {"at": _now().isoformat(timespec="seconds"), "event": what, **({"note": note} if note else {}), **more}


def history(item: WorkItem) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(item.history or "[]")
    return loaded


async def _open(
    engine: AsyncEngine,
    *,
    kind: str,
    subject: str,
    revision: int,
    service: str,
    state: str,
    error_class: str,
    reason: str,
    payload: str,
    customer: str = "",
    items: Sequence[str] = (),
    first: Mapping[str, Any] | None = None,
) -> tuple[int, bool]:
    """Open the item of (kind, subject, revision), or bring the one there up to date (another attempt failed it
    again; a resolved one opens again). `first` goes into the opening event only (what the first attempt did).
    Returns its id and whether it was opened now."""
    reason, error_class = reason[:4000] or state, error_class[:32] or state
    for _ in (1, 2):
        try:
            async with async_sessionmaker(engine).begin() as session:
                query = select(WorkItem).where(
                    WorkItem.kind == kind, WorkItem.subject == subject[:64], WorkItem.revision == revision
                )
                found = (await session.execute(query.with_for_update())).scalars().first()
                event = _event(state, reason=reason, error_class=error_class, service=service)
                if found is None:
                    event |= dict(first or {})
                    item = WorkItem(
                        kind=kind, subject=subject[:64], revision=revision, service=service, state=state,
                        error_class=error_class, reason=reason, customer=customer[:64] or None,
                        items=" ".join(items)[:4000] or None, payload=payload, attempts=1, status=OPEN,
                        history=json.dumps([event]),
                    )  # fmt: skip
                    session.add(item)
                    await session.flush()
                    return item.id, True
                reopened = found.status != OPEN
                found.attempts += 1
                found.state, found.error_class, found.reason, found.payload = state, error_class, reason, payload
                found.service, found.status, found.closed_at, found.updated_at = service, OPEN, None, _now()
                found.history = json.dumps([*history(found), event])
                return found.id, reopened
        except IntegrityError:
            continue  # two attempts opened it at once: the second finds the first's row
    raise RuntimeError(f"work item for {kind} {subject} could not be opened")


async def open_quote(
    engine: AsyncEngine,
    *,
    doc_no: str,
    revision: int,
    state: Literal["held", "failed"],
    problems: Sequence[Problem],
    payload: str,
    customer: str = "",
    items: Sequence[str] = (),
    service: str = "order-writer",
    plan: str = "",
) -> tuple[int, bool]:
    """Open the quote's work item, or bring the open one up to date (another attempt held it again); `plan` (the
    M3 calls the mapping made of it) is kept from the first attempt. Returns its id and whether it was opened
    now."""
    return await _open(
        engine, kind=QUOTE, subject=doc_no, revision=revision, service=service, state=state,
        error_class=problems[0].error_class if problems else state, reason="; ".join(p.message for p in problems),
        payload=payload, customer=customer, items=items, first={"plan": plan} if plan else None,
    )  # fmt: skip


@dataclass(frozen=True)
class Change:
    """A change message a service could not apply, as kept on its work item: where it came from and its bytes (as
    text: every change topic carries JSON), so `m3bridge work retry` sends it there again."""

    topic: str
    key: str
    value: str

    def dumps(self) -> str:
        return json.dumps({"topic": self.topic, "key": self.key, "value": self.value})

    @classmethod
    def loads(cls, payload: str) -> Change:
        data = json.loads(payload)
        return cls(topic=str(data["topic"]), key=str(data["key"]), value=str(data["value"]))


async def open_change(
    engine: AsyncEngine, *, kind: str, change: Change, service: str, error_class: str, reason: str
) -> tuple[int, bool]:
    """A change (an M3 item, price, stock or customer change; a QuoteWerks customer change) that could not be applied
    on the work queue, one item per kind and business key (the message key). Returns its id and whether it was
    opened now."""
    return await _open(
        engine, kind=kind, subject=change.key, revision=0, service=service, state="failed", error_class=error_class,
        reason=reason, payload=change.dumps(),
    )  # fmt: skip


async def close_quote(engine: AsyncEngine, doc_no: str, outcome: str) -> list[int]:
    """Close every open work item of the quote (all revisions): it became an order, or was replaced."""
    async with async_sessionmaker(engine).begin() as session:
        query = select(WorkItem).where(WorkItem.kind == QUOTE, WorkItem.subject == doc_no[:64],
                                       WorkItem.status == OPEN)  # fmt: skip
        closed = []
        for item in (await session.execute(query.with_for_update())).scalars():
            item.status, item.closed_at, item.updated_at = RESOLVED, _now(), _now()
            item.history = json.dumps([*history(item), _event("resolved", outcome)])
            closed.append(item.id)
        return closed


async def note(engine: AsyncEngine, item_id: int, what: str, text: str = "", *, resolve: bool = False) -> WorkItem:
    """Add an event to the item's history (a retry sent, a person's note); `resolve` closes it. LookupError for an
    unknown item."""
    async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
        item = await session.get(WorkItem, item_id, with_for_update=True)
        if item is None:
            raise LookupError(f"no work item {item_id}")
        item.history = json.dumps([*history(item), _event(what, text)])
        item.updated_at = _now()
        if resolve:
            item.status, item.closed_at = RESOLVED, _now()
        return item


async def get(engine: AsyncEngine, item_id: int) -> WorkItem | None:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        return await session.get(WorkItem, item_id)


async def search(
    engine: AsyncEngine,
    *,
    status: Status = "open",
    doc_no: str | None = None,
    customer: str | None = None,
    item: str | None = None,
    error_class: str | None = None,
    kind: str | None = None,
    limit: int = 200,
) -> list[WorkItem]:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        query = select(WorkItem)
        if status != "all":
            query = query.where(WorkItem.status == status)
        if doc_no:
            query = query.where(WorkItem.subject == doc_no)
        if customer:
            query = query.where(WorkItem.customer == customer)
        if item:
            query = query.where(or_(WorkItem.items == item, WorkItem.items.like(f"{item} %"),
                                    WorkItem.items.like(f"% {item}"), WorkItem.items.like(f"% {item} %")))  # fmt: skip
        if error_class:
            query = query.where(WorkItem.error_class == error_class)
        if kind:
            query = query.where(WorkItem.kind == kind)
        rows = await session.execute(query.order_by(WorkItem.id.desc()).limit(limit))
        return list(rows.scalars())


async def count_open(engine: AsyncEngine, kinds: Sequence[str] | None = None) -> dict[tuple[str, str], int]:
    """Open items by (kind, error class), of `kinds` (all when None)."""
    async with async_sessionmaker(engine)() as session:
        query = select(WorkItem.kind, WorkItem.error_class, func.count()).where(WorkItem.status == OPEN)
        if kinds is not None:
            query = query.where(WorkItem.kind.in_(list(kinds)))
        rows = await session.execute(query.group_by(WorkItem.kind, WorkItem.error_class))
        return {(str(kind), str(error_class)): int(count) for kind, error_class, count in rows.all()}


class OpenCount:
    """`m3bridge_work_items_open` for the kinds one service opens (so no two services export the same series);
    a class that emptied is set to 0, not left at its last count."""

    def __init__(self, engine: AsyncEngine, kinds: Sequence[str]) -> None:
        self.engine, self.kinds = engine, tuple(kinds)
        self._seen: set[tuple[str, str]] = set()
        self._refreshed_at = -math.inf

    async def refresh(self, *, unless_fresher_than_s: float = 0.0) -> None:
        """Count again, unless the last count is younger than `unless_fresher_than_s`."""
        if time.monotonic() - self._refreshed_at < unless_fresher_than_s:
            return
        self._refreshed_at = time.monotonic()
        counts = await count_open(self.engine, self.kinds)
        for labels in set(counts) | self._seen:
            open_items.labels(*labels).set(counts.get(labels, 0))
        self._seen |= set(counts)
