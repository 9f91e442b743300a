"""Did anything slip through? The approvals the bridge recorded, its ledger and M3's orders, compared.

- every approval quote-ingest recorded (its claim) long enough ago has a ledger entry: otherwise the quote was
  approved and never reached order-writer (`approved, never ordered`);
- every confirmed ledger entry is an order M3 still has (OIS100MI/GetHead by its number) with the quote's DocNo as
  its CUOR and the same customer (`order missing in M3`, `order differs in M3`).

order-writer runs it on a schedule (`M3B_ORDER_RECONCILE_INTERVAL_S`, one replica a period) over the last two
periods and on `POST /v1/orders/reconcile`; `m3bridge reconcile` runs the same checks from the command line, with
QuoteWerks' own list of approved quotes in place of the claims. Differences are counted in
`m3bridge_reconcile_differences` and listed in the log and the answer; nothing is changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.m3 import M3BusinessError, M3Client, M3Error, M3NotFoundError
from shared.m3.lease import Priority
from shared.platform.state import deliveries, fingerprints, ledger
from shared.platform.state.ledger import OrderState
from shared.platform.state.models import OrderLedgerEntry, SeenDelivery

log = logging.getLogger(__name__)

#: An approval younger than this may still be on its way (outbox, broker, lanes): not yet a difference.
SETTLING = timedelta(minutes=10)
KINDS = ("approved, never ordered", "order missing in M3", "order differs in M3", "totals differ", "extra order in M3")

differences_found = Gauge(
    "m3bridge_reconcile_differences",
    "Differences the last order reconciliation found, by kind (approved, never ordered; order missing in M3; order "
    "differs in M3; totals differ; extra order in M3: a second order with the quote's DocNo).",
    ["kind"],
)
reconcile_finished = Gauge(
    "m3bridge_reconcile_finished_timestamp_seconds",
    "When the last order reconciliation finished, by result (ok: every source read; incomplete: one was not).",
    ["result"],
)


@dataclass
class Difference:
    doc_no: str
    kind: str
    detail: str
    action: str


@dataclass
class ReconcileReport:
    since: str
    approved: int = 0
    confirmed_in_ledger: int = 0
    checked_in_m3: int = 0
    differences: list[Difference] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def ledger_since(engine: AsyncEngine, since: datetime) -> dict[str, list[OrderLedgerEntry]]:
    """The ledger's entries changed since `since` (less the settling time), by DocNo."""
    found: dict[str, list[OrderLedgerEntry]] = {}
    for entry in await ledger.entries(engine):
        if _aware(entry.updated_at) >= since - SETTLING:
            found.setdefault(entry.doc_no, []).append(entry)
    return found


async def claimed_approvals(engine: AsyncEngine, since: datetime) -> dict[str, datetime]:
    """DocNo → when quote-ingest first recorded an approval of it, for approvals recorded since `since`."""
    async with async_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(SeenDelivery.subject, SeenDelivery.seen_at).where(
                SeenDelivery.source == deliveries.APPROVAL_CLAIMS,
                SeenDelivery.seen_at >= since,
                SeenDelivery.subject.is_not(None),
            )
        )
        found: dict[str, datetime] = {}
        for subject, seen_at in rows.all():
            seen = _aware(seen_at)
            found[str(subject)] = min(found.get(str(subject), seen), seen)
        return found


def never_ordered(
    approved: dict[str, datetime | None], entries: dict[str, list[OrderLedgerEntry]], *, source: str
) -> list[Difference]:
    """Approvals (DocNo → when) older than the settling time that have no ledger entry."""
    now = datetime.now(UTC)
    missing = []
    for doc_no, when in sorted(approved.items()):
        if doc_no in entries or (when is not None and now - when < SETTLING):
            continue
        at = f" at {when:%Y-%m-%d %H:%M}" if when else ""
        missing.append(Difference(
            doc_no, KINDS[0], f"{source}{at}; order-writer has no record of it",
            "m3bridge trace DOCNO; approve it again in QuoteWerks (quote-ingest orders a changed approval, its poll "
            "an approval it never recorded)",
        ))  # fmt: skip
    return missing


def _decimal(value: object) -> Decimal | None:
    try:
        return Decimal(str(value).strip()) if value not in (None, "") else None
    except InvalidOperation:
        return None


async def _head(m3: M3Client, order_number: str, report: ReconcileReport) -> dict[str, Any] | Exception | None:
    try:
        return await m3.execute_one("OIS100MI", "GetHead", {"ORNO": order_number}, priority=Priority.BULK)
    except (M3NotFoundError, M3BusinessError):
        return None
    except M3Error as failed:
        report.problems.append(f"M3 order {order_number}: {failed}"[:300])
        return failed


async def orders_in_m3(
    m3: M3Client,
    entries: Iterable[OrderLedgerEntry],
    report: ReconcileReport,
    *,
    quote_totals: Mapping[str, Decimal] | None = None,
) -> None:
    """Every confirmed entry's order as M3 has it: one OIS100MI/LstHead per customer (at the budget's bulk
    priority) gives each customer's orders with their CUOR and net value, so a second order with a quote's DocNo
    (`extra order in M3`: the quote was ordered twice) shows too; an order not in its customer's list is read by
    GetHead (deleted, or moved to another customer). With `quote_totals` (DocNo → the quote's SubTotal) the net value
    (NTAM) is compared too, within what rounding each line's amount can add up to (half a unit, or 0.01 %)."""
    confirmed = [e for e in entries if e.state == OrderState.CONFIRMED and e.order_number]
    by_customer: dict[str, list[OrderLedgerEntry]] = {}
    for entry in confirmed:
        by_customer.setdefault(entry.customer_number or "", []).append(entry)
    report.confirmed_in_ledger += len(confirmed)
    for customer, own in sorted(by_customer.items()):
        rows: list[dict[str, Any]] = []
        if customer:
            try:
                rows = await m3.execute("OIS100MI", "LstHead", {"CUNO": customer}, priority=Priority.BULK, maxrecs=0)
            except M3Error as failed:
                report.problems.append(f"orders of customer {customer}: {failed}"[:300])
                continue
        listed = {str(row.get("ORNO") or "").strip(): row for row in rows}
        for entry in own:
            head: dict[str, Any] | None = listed.get(entry.order_number or "")
            if head is None:
                read = await _head(m3, entry.order_number or "", report)
                if isinstance(read, Exception):
                    continue
                head = read
            report.checked_in_m3 += 1
            _compare(entry, head, report, (quote_totals or {}).get(entry.doc_no))
            same_quote = {orno for orno, row in listed.items() if str(row.get("CUOR") or "").strip() == entry.doc_no}
            extra = sorted(same_quote - {entry.order_number or ""})
            if extra:
                report.differences.append(Difference(
                    entry.doc_no, KINDS[4],
                    f"M3 order(s) {', '.join(extra)} of customer {customer} also carry the quote's DocNo as CUOR; the "
                    f"ledger's order is {entry.order_number}",
                    "the quote may have been ordered twice: check with the customer which order stands and cancel "
                    "the other in OIS300 (m3bridge trace DOCNO shows how each came about)",
                ))  # fmt: skip


def _compare(entry: OrderLedgerEntry, head: dict[str, Any] | None, report: ReconcileReport,
             expected: Decimal | None) -> None:  # fmt: skip
    if head is None:
        report.differences.append(Difference(
            entry.doc_no, KINDS[1],
            f"the ledger has M3 order {entry.order_number} (customer {entry.customer_number}); M3 does not",
            "find out who deleted it (OIS300); to order the quote again approve it again in QuoteWerks",
        ))  # fmt: skip
        return
    cuor, customer = str(head.get("CUOR") or "").strip(), str(head.get("CUNO") or "").strip()
    if cuor != entry.doc_no or (entry.customer_number and customer != entry.customer_number):
        report.differences.append(Difference(
            entry.doc_no, KINDS[2],
            f"M3 order {entry.order_number} has CUOR {cuor!r} and customer {customer!r}; the ledger says "
            f"{entry.doc_no!r} and {entry.customer_number!r}",
            "check the order in OIS300: it was changed by hand",
        ))  # fmt: skip
        return
    net = _decimal(head.get("NTAM"))
    if expected is not None and net is not None and abs(expected - net) > max(Decimal("0.5"), expected / 10_000):
        report.differences.append(Difference(
            entry.doc_no, KINDS[3],
            f"M3 order {entry.order_number} is worth {net} net; the quote's subtotal is {expected}",
            "compare the order's lines and prices in OIS300 with the quote (M3 prices lines itself where the "
            "mapping sends no price; a line changed by hand)",
        ))  # fmt: skip


def export(report: ReconcileReport) -> None:
    for kind in KINDS:
        differences_found.labels(kind).set(sum(1 for d in report.differences if d.kind == kind))
    reconcile_finished.labels("incomplete" if report.problems else "ok").set(time.time())


async def reconcile_orders(engine: AsyncEngine, m3: M3Client, *, since: datetime) -> ReconcileReport:
    """The scheduled (and HTTP) reconciliation: recorded approvals vs ledger vs M3, exported as metrics."""
    report = ReconcileReport(since=since.isoformat(timespec="seconds"))
    entries = await ledger_since(engine, since)
    approved = await claimed_approvals(engine, since)
    report.approved = len(approved)
    report.differences += never_ordered(dict(approved), entries, source="approval recorded by quote-ingest")
    await orders_in_m3(m3, [entry for revisions in entries.values() for entry in revisions], report)
    export(report)
    for difference in report.differences:
        log.warning("reconciliation: %s %s: %s", difference.doc_no, difference.kind, difference.detail)
    unchecked = f", not checked: {'; '.join(report.problems)}" if report.problems else ""
    log.info("reconciliation since %s: %d approvals recorded, %d orders in the ledger, %d found in M3, %d "
             "difference(s)%s", report.since, report.approved, report.confirmed_in_ledger, report.checked_in_m3,
             len(report.differences), unchecked)  # fmt: skip
    return report


async def reconcile_forever(engine: AsyncEngine, m3: M3Client, *, interval_s: float, stop: asyncio.Event) -> None:
    """One reconciliation every `interval_s` over the last period and a half, run by one replica a period (the
    first to find the turn free); the others look again every quarter period, so one that died is replaced."""
    while not stop.is_set():
        try:
            if await fingerprints.take_turn(engine, "order-reconcile", interval_s):
                since = datetime.now(UTC) - timedelta(seconds=interval_s * 1.5)
                await reconcile_orders(engine, m3, since=since)
        except Exception:  # a store or M3 away: the next turn tries again
            log.exception("scheduled reconciliation failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(interval_s / 4, 1.0))
