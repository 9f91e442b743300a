"""One quote's story from the state store: "where is my order?" in one answer.

`trace(engine, doc_no)` collects, with their times: each approval quote-ingest claimed (webhook or poll, with the
document's change stamp), an approval still waiting in the outbox (with its correlation id), every revision's
ledger entry (state, customer, batch orders started, order number, attempts, last error, which order-writer holds
it), the M3 customer and how it was linked or created, and the quote's work items with their history. `m3bridge
trace DOCNO` prints it; order-writer answers it at `GET /v1/quotes/{doc_no}/trace` (read key).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.platform.state import work_items
from shared.platform.state.deliveries import APPROVAL_CLAIMS
from shared.platform.state.ledger import batch_orders_of
from shared.platform.state.models import (
    CustomerCreation,
    CustomerLink,
    OrderLedgerEntry,
    OutboxMessage,
    SeenDelivery,
    WorkItem,
)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds")


async def trace(engine: AsyncEngine, doc_no: str) -> dict[str, Any]:
    """The quote's story as JSON-ready data: `summary`, `events` (oldest first) and the records they come from."""
    async with async_sessionmaker(engine)() as session:
        claims = list((await session.execute(
            select(SeenDelivery).where(SeenDelivery.source == APPROVAL_CLAIMS, SeenDelivery.subject == doc_no[:64])
        )).scalars())  # fmt: skip
        waiting = list((await session.execute(
            select(OutboxMessage).where(OutboxMessage.message_key == doc_no)
        )).scalars())  # fmt: skip
        entries = list((await session.execute(
            select(OrderLedgerEntry).where(OrderLedgerEntry.doc_no == doc_no).order_by(OrderLedgerEntry.revision)
        )).scalars())  # fmt: skip
        numbers = {entry.customer_number for entry in entries if entry.customer_number}
        links = list((await session.execute(
            select(CustomerLink).where(CustomerLink.m3_customer_number.in_(numbers))
        )).scalars()) if numbers else []  # fmt: skip
        creations = list((await session.execute(
            select(CustomerCreation).where(CustomerCreation.m3_customer_number.in_(numbers))
        )).scalars()) if numbers else []  # fmt: skip
        items = list((await session.execute(
            select(WorkItem).where(WorkItem.kind == "quote", WorkItem.subject == doc_no[:64])
        )).scalars())  # fmt: skip
    events: list[dict[str, Any]] = []
    for claim in claims:
        events.append({"at": _when(claim.seen_at), "what": "approval claimed by quote-ingest",
                       "detail": f"document stamp {claim.subject_stamp or '-'}"})  # fmt: skip
    for message in waiting:
        headers = json.loads(message.headers or "{}")
        events.append({"at": _when(message.created_at), "what": f"waiting in quote-ingest's outbox for {message.topic}",
                       "detail": f"{message.attempts} publish attempts; {message.last_error or ''}".strip("; "),
                       "correlation_id": headers.get("correlation-id", "")})  # fmt: skip
    for creation in creations:
        events.append({"at": _when(creation.claimed_at), "what": f"M3 customer creation claimed ({creation.state})",
                       "detail": f"customer {creation.m3_customer_number or '(not yet known)'}"})  # fmt: skip
    for link in links:
        events.append({"at": _when(link.linked_at), "what": f"customer linked: QuoteWerks {link.quotewerks_customer_id}"
                       f" = M3 {link.m3_customer_number}", "detail": f"by {link.last_written_by or '-'}"})  # fmt: skip
    for entry in entries:
        events.append({"at": _when(entry.created_at), "what": f"revision {entry.revision} received by order-writer",
                       "detail": ""})  # fmt: skip
        batches = batch_orders_of(entry)
        detail = ", ".join(part for part in (
            f"customer {entry.customer_number}" if entry.customer_number else "",
            f"batch orders {' '.join(batches)}" if batches else "",
            f"order {entry.order_number}" if entry.order_number else "",
            f"{entry.attempts} attempts" if entry.attempts else "",
            f"held by {entry.owner}" if entry.owner else "",
            entry.last_error or "",
        ) if part)  # fmt: skip
        events.append({"at": _when(entry.updated_at), "what": f"revision {entry.revision}: {entry.state}",
                       "detail": detail})  # fmt: skip
    for item in items:
        for event in work_items.history(item):
            events.append({"at": event["at"], "what": f"work item {item.id}: {event['event']}",
                           "detail": event.get("reason") or event.get("note") or ""})  # fmt: skip
    events.sort(key=lambda event: event["at"])
    confirmed = [entry for entry in entries if entry.state == "confirmed" and entry.order_number]
    newest = entries[-1] if entries else None
    if confirmed:
        done = confirmed[-1]
        summary = f"M3 order {done.order_number} (revision {done.revision}, customer {done.customer_number})"
    elif newest is not None:
        summary = f"revision {newest.revision} is {newest.state}" + (
            f": {newest.last_error}" if newest.last_error else ""
        )
    elif waiting:
        summary = "approved; waiting in quote-ingest's outbox to be published"
    elif claims:
        summary = "approved and published; order-writer has not taken it up yet (see its consumer lag)"
    else:
        summary = "the bridge has not seen an approval of this quote"
    open_items = [item.id for item in items if item.status == work_items.OPEN]
    return {
        "doc_no": doc_no,
        "summary": summary,
        "open_work_items": open_items,
        "events": events,
        "revisions": [
            {
                "revision": e.revision,
                "state": e.state,
                "customer": e.customer_number,
                "order": e.order_number,
                "batch_orders": batch_orders_of(e),
                "attempts": e.attempts,
                "last_error": e.last_error,
                "updated_at": _when(e.updated_at),
            }
            for e in entries
        ],
    }


def describe(found: dict[str, Any]) -> str:
    lines = [f"{found['doc_no']}: {found['summary']}"]
    if found["open_work_items"]:
        ids = ", ".join(str(i) for i in found["open_work_items"])
        lines.append(f"  open work items: {ids} (m3bridge work show ID)")
    for event in found["events"]:
        detail = f"  {event['detail']}" if event.get("detail") else ""
        correlation = f"  [{event['correlation_id']}]" if event.get("correlation_id") else ""
        lines.append(f"  {event['at'] or '?':<25} {event['what']}{detail}{correlation}")
    return "\n".join(lines)
