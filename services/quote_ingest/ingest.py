"""What quote-ingest does with a delivery, a poll and an order result; no HTTP or Kafka wiring here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.quote_ingest.webhooks import Delivery
from shared.contracts import OrderResult, OrderStatusChanged, QuoteApproved
from shared.contracts.topics import QUOTE_APPROVED, QUOTEWERKS_CUSTOMER_CHANGED
from shared.platform.crash_points import crash_point
from shared.platform.outbox import ClaimTakenError, Outbox
from shared.platform.state import deliveries
from shared.quotewerks import (
    DocumentError,
    QuoteWerks,
    QuoteWerksError,
    customer_from_contact,
    parse_last_modified,
    quote_from_document,
)

log = logging.getLogger(__name__)

Outcome = Literal["published", "recorded", "duplicate", "ignored"]
"""published: on the topic; recorded: durable in the outbox, the relay publishes it (the broker was away)."""

APPROVAL_CLAIMS = deliveries.APPROVAL_CLAIMS
CUSTOMER_CLAIMS = "qw-customer"


def approval_identity(quote: QuoteApproved) -> str:
    """What makes an approval one: the document's content (`QuoteApproved.content_fingerprint`) with its DocNo and
    revision. A QuoteWerks retry, a replayed delivery, the poller after the webhook, a second approval of the
    unchanged document are the same approval; a document changed and approved again (a held quote fixed) is a new
    one. (Not LastModified: the bridge's own write-back changes it.)"""
    return f"{quote.doc_no}|r{quote.revision}|{quote.content_fingerprint()[:24]}"


@dataclass(frozen=True)
class IngestRules:
    approval_events: Sequence[str]
    approved_statuses: Sequence[str]
    order_number_field: str
    order_status_field: str
    created_doc_status: str


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    detail: str


class Ingest:
    def __init__(self, quotewerks: QuoteWerks, engine: AsyncEngine, outbox: Outbox, rules: IngestRules) -> None:
        self.quotewerks = quotewerks
        self.engine = engine
        self.outbox = outbox
        self.rules = rules
        # One write-back per document at a time: an order result and a status change of the same quote arrive on
        # different topics, and racing each other the second would see the first's write as an edit made in
        # QuoteWerks and refuse to overwrite it.
        self._writing: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def _sole_writer(self, doc_no: str) -> AsyncIterator[None]:
        lock = self._writing.get(doc_no)
        if lock is None:
            lock = self._writing[doc_no] = asyncio.Lock()
        async with lock:
            yield

    def _approved(self, event: str, header: dict[str, Any]) -> bool:
        """The fetched document decides: its DocStatus is one of the approved statuses. An event approves by
        itself only when the configuration names it (`approval_events`, empty by default): a webhook saying
        QuoteValet.Accepted about a quote that is still "Open" orders nothing unless the operator chose that."""
        statuses = {s.casefold() for s in self.rules.approved_statuses}
        if str(header.get("DocStatus") or "").casefold() in statuses:
            return True
        return bool(event) and event in self.rules.approval_events

    async def delivery(self, delivery: Delivery, *, source: str = "webhook") -> Result:
        """An authenticated delivery: fetch what it is about and publish it once. Raises QuoteWerksError
        (retryable: QuoteWerks should retry the delivery) or DocumentError (the document itself is invalid)."""
        if delivery.doc_no:
            return await self._document(delivery.event, delivery.doc_no, source)
        return await self._customer(delivery.event, delivery.customer_id, source)

    async def _document(self, event: str, doc_no: str, source: str) -> Result:
        document = await self.quotewerks.document(doc_no)
        header = document["DocumentHeader"]
        if str(header.get("DocType") or "QUOTE") != "QUOTE":
            return Result("ignored", f"{doc_no} is a {header.get('DocType')}, not a quote")
        if not self._approved(event, header):
            return Result("ignored", f"{doc_no} status {header.get('DocStatus')!r} is not an approval")
        approved_at = parse_last_modified(header.get("LastModified")) or datetime.now(UTC)
        quote = quote_from_document(document, approval_event=event or source, approved_at=approved_at)
        # The claim (one insert on a unique key) and the message are recorded in one transaction, so of concurrent
        # deliveries exactly one records it, and a crash after the commit leaves the message for the relay.
        identity, stamp = approval_identity(quote), str(header.get("LastModified") or "")
        try:
            async with self.outbox.recording() as recorded:
                await recorded.claim(APPROVAL_CLAIMS, identity, subject=quote.doc_no, stamp=stamp)
                await recorded.add(QUOTE_APPROVED, quote, key=quote.doc_no)
        except ClaimTakenError:
            if stamp:
                await deliveries.restamp(self.engine, APPROVAL_CLAIMS, identity, stamp)
            log.info("quote %s approved again, unchanged (%s via %s): already published", doc_no, event, source)
            return Result("duplicate", f"{doc_no}: this approval (the same document) was already published")
        await crash_point("quote-ingest.after-claim")
        if not await self.outbox.send(recorded):
            log.warning("quote %s approved (%s via %s): recorded; the relay publishes it", doc_no, event, source)
            return Result("recorded", f"{doc_no} recorded; it goes to {QUOTE_APPROVED.name} once the broker takes it")
        log.info("quote %s approved (%s via %s): published", doc_no, event, source)
        return Result("published", f"{doc_no} published to {QUOTE_APPROVED.name}")

    async def _customer(self, event: str, account: str, source: str) -> Result:
        contact = await self.quotewerks.customer(account)
        identity = f"{account}|{contact.get('LastModified') or ''}"
        changed_at = parse_last_modified(contact.get("LastModified")) or datetime.now(UTC)
        change = customer_from_contact(contact, change="updated", changed_at=changed_at)
        try:
            async with self.outbox.recording() as recorded:
                await recorded.claim(CUSTOMER_CLAIMS, identity, subject=account[:64])
                await recorded.add(QUOTEWERKS_CUSTOMER_CHANGED, change, key=change.customer_id)
        except ClaimTakenError:
            return Result("duplicate", f"customer {account} (this version) was already published")
        if not await self.outbox.send(recorded):
            return Result("recorded", f"customer {account} recorded; the relay publishes it")
        return Result("published", f"customer {account} published via {source}")

    async def poll(self, since: datetime | None) -> tuple[int, datetime | None]:
        """The safety net behind the webhooks: approved quotes changed since `since` that are not claimed yet are
        published through the same claim as a webhook delivery. Only those are fetched in full (the claims of a
        listing are checked in one query). Returns how many were published and the newest change seen (the next
        `since`). Raises QuoteWerksError when QuoteWerks cannot be read (nothing is skipped then)."""
        published, newest = 0, since
        for status in self.rules.approved_statuses:
            headers = await self.quotewerks.documents(doc_type="QUOTE", status=status, modified_since=since)
            listed = {str(h.get("DocNo") or ""): h for h in headers}
            listed.pop("", None)
            seen = await deliveries.stamps(self.engine, APPROVAL_CLAIMS, listed)
            for doc_no, header in listed.items():
                changed = parse_last_modified(header.get("LastModified"))
                # Fetched in full unless a claim saw it with this very change stamp: a document changed since may
                # be a new approval (the claim decides; the bridge's own write-back is seen once, then known).
                stamp = str(header.get("LastModified") or "")
                if not stamp or stamp not in seen.get(doc_no, set()):
                    published += await self._poll_one(doc_no)
                if changed is not None and (newest is None or changed > newest):
                    newest = changed
        return published, newest

    async def _poll_one(self, doc_no: str) -> bool:
        """Publish one listed quote; a quote that cannot be published (invalid, gone) is logged and passed."""
        try:
            result = await self._document("poller", doc_no, "poller")
        except DocumentError as exc:
            log.warning("poller: quote %s cannot be published: %s", doc_no, exc)
            return False
        except QuoteWerksError as exc:
            if exc.retryable:
                raise
            log.warning("poller: quote %s not readable: %s", doc_no, exc)
            return False
        return result.outcome in ("published", "recorded")

    async def write_back(self, result: OrderResult) -> bool:
        """Put the M3 order number and status on the quote (raises QuoteWerksError). False, and logged, when
        QuoteWerks has no such quote: the approval came from another producer of the topic, not from QuoteWerks."""
        if result.outcome == "created":
            status = f"M3 order {result.order_number} for customer {result.customer_number}"
            if result.order_status:  # else the order's first status event fills it in
                status += f", status {result.order_status}"
        elif result.outcome == "held":
            status = "M3 held: " + "; ".join(p.message for p in result.problems)[:200]
        else:
            status = "M3 failed: " + "; ".join(p.message for p in result.problems)[:200]
        fields = {self.rules.order_status_field: status}
        if result.order_number:
            fields[self.rules.order_number_field] = result.order_number
        if result.outcome == "created" and self.rules.created_doc_status:
            fields["DocStatus"] = self.rules.created_doc_status
        async with self._sole_writer(result.doc_no):
            try:
                await self.quotewerks.update_document(result.doc_no, fields)
            except QuoteWerksError as exc:
                if exc.status != 404:
                    raise
                log.info("order result for %s (%s): QuoteWerks has no such quote, so nothing to write back (an "
                         "approval from another producer)", result.doc_no, result.outcome)  # fmt: skip
                return False
        return True

    async def write_status(self, change: OrderStatusChanged) -> bool:
        """Put an M3 order's new status on the quote it came from (its DocNo is the order's CUOR). False, and
        logged, when the order did not come from a QuoteWerks quote."""
        doc_no = change.customer_order_number
        if not doc_no:
            log.info("M3 order %s status %s: no CUOR, not from a QuoteWerks quote", change.order_number, change.status)
            return False
        async with self._sole_writer(doc_no):
            return await self._write_status(doc_no, change)

    async def _write_status(self, doc_no: str, change: OrderStatusChanged) -> bool:
        header = await self._quote_of(doc_no)
        known = str(header.get(self.rules.order_number_field) or "") if header is not None else ""
        if header is None or (known and known != change.order_number):
            # No CUOR, no such document, or the quote carries another order (a CUOR reused by hand in M3).
            log.info("M3 order %s status %s: not from a QuoteWerks quote (CUOR %r)", change.order_number,
                     change.status, doc_no)  # fmt: skip
            return False
        status = change.status if not change.highest_status or change.highest_status == change.status else (
            f"{change.status}-{change.highest_status}"
        )  # fmt: skip
        customer = f" for customer {change.customer_number}" if change.customer_number else ""
        fields = {
            self.rules.order_status_field: f"M3 order {change.order_number}{customer}, status {status}",
            self.rules.order_number_field: change.order_number,
        }
        await self.quotewerks.update_document(doc_no, fields)
        return True

    async def _quote_of(self, doc_no: str) -> dict[str, Any] | None:
        try:
            header: dict[str, Any] = (await self.quotewerks.document(doc_no))["DocumentHeader"]
        except QuoteWerksError as exc:
            if exc.status == 404:
                return None
            raise
        return header


write_backs_total = Counter("m3bridge_quote_write_backs_total", "Order results written back, by outcome.", ["outcome"])


class LetterSender(Protocol):
    def __call__(self, *, error_message: str, details: Mapping[str, Any]) -> Awaitable[None]: ...


async def settle_write_back(
    write: Callable[[], Awaitable[object]], *, doc_no: str, outcome: str, dead_letter: LetterSender
) -> None:
    """Write to the quote. The QuoteWerks client retries brief failures itself; a longer outage raises, and the
    consumer tries the message again later (then dead-letters it); a refusal goes to the dead letters at once."""
    try:
        written = await write()
    except QuoteWerksError as exc:
        if exc.retryable:
            raise
        write_backs_total.labels("dead_lettered").inc()
        await dead_letter(error_message=str(exc), details={"doc_no": doc_no, "status": exc.status})
        log.error("could not write %s back to quote %s: %s (dead-lettered)", outcome, doc_no, exc)
        return
    write_backs_total.labels(outcome if written is not False else "not_from_quotewerks").inc()
