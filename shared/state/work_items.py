"""The work queue: quotes held or failed, kept in the state store until a person retries or resolves them.

A work item is opened (or brought up to date, one per DocNo and revision) each time order-writer holds or fails a
quote, and closed when the quote becomes an order or a person resolves it. Every event is appended to its history.
Dead-letter topics stay for what cannot be decoded or used at all; this is the list people work from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.contracts import Problem
from shared.state.models import WorkItem

OPEN, RESOLVED = "open", "resolved"
Status = Literal["open", "resolved", "all"]


def _now() -> datetime:
    return datetime.now(UTC)


def _event(what: str, note: str = "", **more: Any) -> dict[str, Any]:
    return {"at": _now().isoformat(timespec="seconds"), "event": what, **({"note": note} if note else {}), **more}


def history(item: WorkItem) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(item.history or "[]")
    return loaded


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
) -> tuple[int, bool]:
    """Open the quote's work item, or bring the open one up to date (another attempt held it again). Returns its
    id and whether it was opened now."""
    reason = "; ".join(p.message for p in problems)[:4000] or state
    error_class = (problems[0].error_class if problems else state)[:32]
    for _ in (1, 2):
        try:
            async with async_sessionmaker(engine).begin() as session:
                query = select(WorkItem).where(
                    WorkItem.kind == "quote", WorkItem.subject == doc_no[:64], WorkItem.revision == revision
                )
                found = (await session.execute(query.with_for_update())).scalars().first()
                event = _event(state, reason=reason, error_class=error_class)
                if found is None:
                    item = WorkItem(
                        kind="quote", subject=doc_no[:64], revision=revision, service=service, state=state,
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
                found.status, found.closed_at, found.updated_at = OPEN, None, _now()
                found.history = json.dumps([*history(found), event])
                return found.id, reopened
        except IntegrityError:
            continue  # two attempts opened it at once: the second finds the first's row
    raise RuntimeError(f"work item for {doc_no} could not be opened")


async def close_quote(engine: AsyncEngine, doc_no: str, outcome: str) -> list[int]:
    """Close every open work item of the quote (all revisions): it became an order, or was replaced."""
    async with async_sessionmaker(engine).begin() as session:
        query = select(WorkItem).where(WorkItem.kind == "quote", WorkItem.subject == doc_no[:64],
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
        rows = await session.execute(query.order_by(WorkItem.id.desc()).limit(limit))
        return list(rows.scalars())


async def count_open(engine: AsyncEngine) -> dict[str, int]:
    """Open items by error class."""
    async with async_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(WorkItem.error_class, func.count()).where(WorkItem.status == OPEN).group_by(WorkItem.error_class)
        )
        return {str(error_class): int(count) for error_class, count in rows.all()}
