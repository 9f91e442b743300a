"""From an approved quote to exactly one confirmed M3 customer order.

Steps, each recorded in the ledger before the next begins, so a redelivery or a restart resumes rather than
repeats: customer (link, else found by e-mail or name, else created with CRS610MI/Add) → plan (mapping rules)
→ items checked (MMS200MI/GetItmBasic: unknown or not active holds the order) → batch order (OIS100MI
AddBatchHead, AddBatchLine in one bulk request, Confirm).

A write whose answer was lost (`M3OutcomeUnknownError`) is never sent again as is: the step reads M3 to learn what
it did and does only what is missing. The keys that make this exact are the bridge's own: the quote's DocNo in
the order's CUOR (batch orders by OIS100MI/LstBatchHead, final orders by LstHead), the quote line number in each
batch line's CUPO (OIS100MI/LstBatchLine), the batch order number in the ledger as soon as M3 returns it, and the
new customer's name and address (CRS610MI/LstByName). A batch order the bridge gives up on is deleted in M3
(OIS100MI/DelBatchHead); one that cannot be is left in the ledger for an operator.

The steps live beside this facade: the customer in `order_customer`, the batch order in `batch_orders`, the
write-then-verify of every M3 write in `verified_writes`, and why a quote is not ordered in `refusals`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from services.order_writer.batch_orders import BatchOrders
from services.order_writer.order_customer import QuoteCustomers
from services.order_writer.refusals import HoldError, RejectedError, problem_from
from services.order_writer.verified_writes import PRIORITY, Guard, text
from shared.contracts import OrderResult, Problem, QuoteApproved
from shared.customers.matching import MatchingRules
from shared.m3 import M3AuthorizationDeniedError, M3BusinessError, M3Client, M3Error
from shared.m3.metadata import Record
from shared.mapping import MappingRules, OrderPlan, plan_order, preview
from shared.platform.crash_points import crash_point
from shared.platform.state import ledger, work_items
from shared.platform.state.ledger import EntryBusyError, Lease, LeaseLostError, OrderState, batch_orders_of
from shared.platform.state.models import OrderLedgerEntry

log = logging.getLogger(__name__)
WORK_COUNT_MAX_AGE_S = 10.0

ACTIVE_ITEM = "20"


def legacy_fingerprint(quote: QuoteApproved) -> str:
    """The whole message's hash, as entries recorded it before approvals were their content."""
    return hashlib.sha256(quote.model_dump_json().encode()).hexdigest()


class OrderWriter:
    def __init__(
        self,
        m3: M3Client,
        engine: AsyncEngine,
        rules: MappingRules,
        *,
        use_bulk: bool = True,
        settle_s: float = 1.0,
        owner: str = "",
        lease_s: float = 300.0,
        matching: MatchingRules | None = None,
    ) -> None:
        self.m3 = m3
        self.engine = engine
        self.rules = rules
        self.use_bulk = use_bulk
        self.settle_s = settle_s
        self.owner = owner or f"order-writer/{os.getpid()}"
        self.lease_s = lease_s
        self.customers = QuoteCustomers(
            m3, engine, rules, self.lengths, settle_s=settle_s, claim_hold_s=lease_s, matching=matching
        )
        self.batch_orders = BatchOrders(m3, engine, use_bulk=use_bulk, settle_s=settle_s)
        self._work_count = work_items.OpenCount(engine, [work_items.QUOTE])

    # --- the whole step ----------------------------------------------------------------------------------

    async def process(self, quote: QuoteApproved) -> OrderResult:
        """The result to publish. Raises RejectedError (dead-letter it), LeaseLostError (another order-writer took
        the quote over: publish nothing) or a retryable error (redeliver; EntryBusyError while another holds it)."""
        doc_no, revision = quote.doc_no, quote.revision
        content = quote.content_fingerprint()
        revisions = await ledger.revisions(self.engine, doc_no)
        entry = next((known for known in revisions if known.revision == revision), None)
        if entry is not None and entry.state == OrderState.CONFIRMED and entry.order_number:
            if entry.payload_fingerprint not in (content, legacy_fingerprint(quote), None):
                log.warning("quote %s was changed after it became M3 order %s: not ordered again", doc_no,
                            entry.order_number)  # fmt: skip
                return self._held(quote, [Problem(
                    error_class="business",
                    message=f"this quote already is M3 order {entry.order_number}; it was changed since: change "
                    "that order in M3 (the changed quote is not ordered a second time)",
                )])  # fmt: skip
            log.info("quote %s already became M3 order %s: announcing it again", doc_no, entry.order_number)
            return self._created(quote, entry.customer_number or "", entry.order_number,
                                 await self._status_now(entry.order_number), len(quote.lines))  # fmt: skip
        superseded = await self._other_revisions(quote, revisions)
        if superseded is not None:
            return superseded
        lease, entry = await self._acquire(quote, content)
        keeping = asyncio.create_task(self._keep(lease), name=f"lease {doc_no}")
        try:
            return await self._order(quote, entry, lease)
        finally:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
            with contextlib.suppress(Exception):  # an expired lease frees the entry all the same
                await ledger.release(self.engine, lease)

    async def _acquire(self, quote: QuoteApproved, content: str) -> tuple[Lease, OrderLedgerEntry]:
        """The quote's lease. While another replica holds it (it is still working on the quote, e.g. after the
        partition moved here in a rebalance), wait for that lease to end rather than spend this message's attempts:
        the holder finishes (then this one announces its order) or stops renewing (then this one takes over). The
        message's time budget bounds the wait."""
        while True:
            try:
                return await ledger.acquire(self.engine, quote.doc_no, quote.revision, owner=self.owner,
                                            ttl_s=self.lease_s, fingerprint=content)  # fmt: skip
            except EntryBusyError as busy:
                left = (busy.until - datetime.now(UTC)).total_seconds() if busy.until is not None else self.lease_s
                # Until the holder's lease ends unless renewed; looked at again every tenth of a lease, so a holder
                # that finished and released it is noticed soon.
                wait = min(max(left, 0.0) + 0.2, max(self.lease_s / 10, 0.5))
                log.info("%s; waiting %.1fs", busy, wait)
                await asyncio.sleep(wait)

    async def _keep(self, lease: Lease) -> None:
        """Renew the lease every third of its time while the quote is worked on (a long M3 call included): only a
        worker that stopped (crashed, frozen, cut off from the state store) lets it expire."""
        while True:
            await asyncio.sleep(lease.ttl_s / 3)
            try:
                await ledger.renew(self.engine, lease)
            except LeaseLostError as lost:
                log.warning("%s; stopping before the next M3 write", lost)
                return
            except Exception as exc:  # the state store is away: the next write's check decides
                log.warning("quote %s: could not renew its lease: %s", lease.doc_no, exc)

    async def _order(self, quote: QuoteApproved, entry: OrderLedgerEntry, lease: Lease) -> OrderResult:
        doc_no, revision = quote.doc_no, quote.revision
        if entry.state == OrderState.CONFIRMED and entry.order_number:
            # The replica this one waited for finished the quote meanwhile.
            log.info("quote %s became M3 order %s meanwhile: announcing it", doc_no, entry.order_number)
            return self._created(quote, entry.customer_number or "", entry.order_number,
                                 await self._status_now(entry.order_number), len(quote.lines))  # fmt: skip
        try:
            # What M3 may hold is never forgotten: an entry that ever started a batch order (whatever its state now:
            # held, failed, replayed) looks for its order by CUOR before anything else.
            if entry.customer_number and (batch_orders_of(entry) or entry.state == OrderState.ORDERING):
                found = await self.batch_orders.find_order(entry.customer_number, doc_no)
                if found is not None:
                    log.info("quote %s: its order %s is in M3 already", doc_no, found[0])
                    return await self._confirmed(quote, entry.customer_number, found[0], found[1], len(quote.lines),
                                                 lease)  # fmt: skip
            if entry.state in (OrderState.HELD, OrderState.FAILED):  # back to work; a new entry is RECEIVED already
                entry = await ledger.record(self.engine, doc_no, revision, OrderState.RECEIVED, lease=lease)
            if entry.state == OrderState.ORDERING and entry.customer_number:
                customer = entry.customer_number
            else:
                customer = await self.customer(quote, lease)
            plan = plan_order(quote, self.rules, customer_number=customer, field_lengths=await self.lengths())
            if plan.refusals:
                raise HoldError([
                    Problem(error_class="mapping", message=f"{r.field}: {r.reason}"[:2000], field=r.field[:32])
                    for r in plan.refusals
                ])  # fmt: skip
            await self.check_items(plan)
            return await self.create_order(quote, customer, plan, entry, lease)
        except HoldError as held:
            await self.batch_orders.give_up(quote, "held", lease)
            await ledger.record(self.engine, doc_no, revision, OrderState.HELD, error=str(held)[:2000], lease=lease)
            await self._work_item(quote, "held", held.problems)
            log.warning("quote %s held: %s", doc_no, held)
            return self._held(quote, held.problems)
        except RejectedError as rejected:
            await self.batch_orders.give_up(quote, "rejected", lease)
            await ledger.record(
                self.engine, doc_no, revision, OrderState.FAILED, error=str(rejected)[:2000], lease=lease
            )
            await self._work_item(quote, "failed", rejected.problems)
            raise
        except M3Error as error:
            if error.retryable:
                raise
            await self.batch_orders.give_up(quote, "rejected", lease)
            await ledger.record(self.engine, doc_no, revision, OrderState.FAILED, error=str(error)[:2000], lease=lease)
            await self._work_item(quote, "failed", [problem_from(error)])
            raise RejectedError([problem_from(error)]) from error

    async def _other_revisions(self, quote: QuoteApproved, revisions: list[OrderLedgerEntry]) -> OrderResult | None:
        """A quote revision replaces the older ones that are not yet confirmed (their batch orders are deleted)
        and is itself replaced by a newer one. Returns the result when this revision is not to be ordered."""
        others = [e for e in revisions if e.revision != quote.revision]
        newer = [e for e in others if e.revision > quote.revision]
        if newer:
            await ledger.record(self.engine, quote.doc_no, quote.revision, OrderState.SUPERSEDED)
            return self._held(
                quote,
                [Problem(error_class="business", message=f"revision {newer[-1].revision} of this quote replaces it")],
            )
        for older in others:
            if older.state == OrderState.CONFIRMED:
                return self._held(
                    quote,
                    [
                        Problem(
                            error_class="business",
                            message=f"revision {older.revision} of this quote is already M3 order "
                            f"{older.order_number}: change that order in M3 instead",
                        )
                    ],
                )
            if older.state != OrderState.SUPERSEDED:
                await self.batch_orders.delete_batch_order(older, "superseded")
                await ledger.record(self.engine, older.doc_no, older.revision, OrderState.SUPERSEDED)
        return None

    # --- customer ----------------------------------------------------------------------------------------

    async def customer(self, quote: QuoteApproved, lease: Lease | None = None) -> str:
        """The M3 customer number for the quote's sold-to party, creating the customer when M3 lacks it."""
        # Claimed per quote, not per process: this writer works on several quotes at once, and a second quote of the
        # same new customer must wait for the first one's creation, not resume it while Add is still on its way.
        claimant = f"{self.owner}|{quote.doc_no}"[:128]
        return await self.customers.customer(quote, guard=self._guard(lease), owner=claimant)

    # --- items and order ---------------------------------------------------------------------------------

    async def check_items(self, plan: OrderPlan) -> None:
        """Every ordered item must exist in M3 and be active; all are checked in one bulk request."""
        problems: list[Problem] = []
        items = list(dict.fromkeys(line.fields["ITNO"] for line in plan.lines))
        records: dict[str, Record | None] = {}
        errors: dict[str, M3Error] = {}
        if self.use_bulk and items:
            outcomes = await self.m3.bulk("MMS200MI", [("GetItmBasic", {"ITNO": i}) for i in items], priority=PRIORITY)
            for item, outcome in zip(items, outcomes, strict=True):
                if outcome.error is not None:
                    errors[item] = outcome.error
                else:
                    records[item] = outcome.records[0] if outcome.records else None
        else:
            for item in items:
                try:
                    records[item] = await self.m3.execute_one(
                        "MMS200MI", "GetItmBasic", {"ITNO": item}, priority=PRIORITY
                    )
                except M3BusinessError as refused:
                    errors[item] = refused
        for item in items:
            failure = errors.get(item)
            if failure is not None:
                if failure.retryable or isinstance(failure, M3AuthorizationDeniedError):
                    raise failure
                problems.append(problem_from(failure).model_copy(update={"message": f"item {item}: {failure.message}"}))
                continue
            status = str((records.get(item) or {}).get("STAT") or "")
            if status != ACTIVE_ITEM:
                problems.append(
                    Problem(
                        error_class="business",
                        message=f"item {item} is not active in M3 (status {status or 'unknown'})",
                        field="ITNO",
                        program="MMS200MI",
                        transaction="GetItmBasic",
                    )
                )
        if not plan.lines:
            problems.append(Problem(error_class="mapping", message="the quote has no orderable lines"))
        if problems:
            raise HoldError(problems)

    async def create_order(
        self, quote: QuoteApproved, customer: str, plan: OrderPlan, entry: OrderLedgerEntry, lease: Lease
    ) -> OrderResult:
        """Batch head (resumed or started), the lines it lacks, Confirm; each write verified when its answer is
        lost, and each preceded by the lease check."""
        doc_no = quote.doc_no
        if entry.state == OrderState.ORDERING:
            found = await self.batch_orders.find_order(customer, doc_no)
            if found is not None:
                return await self._confirmed(quote, customer, found[0], found[1], len(plan.lines), lease)
        batch_order, fresh = await self.batch_orders.batch_order(quote, customer, plan, entry, lease)
        await self.batch_orders.add_missing_lines(batch_order, plan, lease, known_empty=fresh)
        await crash_point("order-writer.after-lines")
        order_number, status = await self.batch_orders.confirm(doc_no, customer, batch_order, lease)
        await crash_point("order-writer.after-confirm")
        return await self._confirmed(quote, customer, order_number, status, len(plan.lines), lease)

    async def _confirmed(
        self, quote: QuoteApproved, customer: str, order_number: str, status: str | None, lines: int, lease: Lease
    ) -> OrderResult:
        await ledger.record(self.engine, quote.doc_no, quote.revision, OrderState.CONFIRMED, order_number=order_number,
                            customer_number=customer, lease=lease, release=True)  # fmt: skip
        # Confirm answers no order status: the result carries none then (not a read more per order); the order's
        # status events (SyncSalesOrder) bring it onto the quote.
        log.info("quote %s is M3 order %s (%d lines)", quote.doc_no, order_number, lines)
        closed = await work_items.close_quote(self.engine, quote.doc_no, f"became M3 order {order_number}")
        for item_id in closed:
            log.info("work item %d of quote %s resolved: it became M3 order %s", item_id, quote.doc_no, order_number)
        await self._count_work(changed=bool(closed))
        return self._created(quote, customer, order_number, status or "", lines)

    async def _work_item(self, quote: QuoteApproved, state: Literal["held", "failed"], problems: list[Problem]) -> None:
        """The quote on the work queue (`m3bridge work list`), with what is needed to retry it."""
        items = sorted({line.manufacturer_part_number for line in quote.lines if line.manufacturer_part_number})
        try:
            # What this attempt's mapping makes of it, for `work show` to set beside the mapping of a retry.
            plan = preview(quote, self.rules)
        except Exception as exc:  # a plan never raises for a bad quote; this is only the record of it
            plan = f"cannot plan: {exc}"
        item_id, new = await work_items.open_quote(
            self.engine, doc_no=quote.doc_no, revision=quote.revision, state=state, problems=problems,
            payload=quote.model_dump_json(by_alias=True), customer=quote.sold_to.cm_account_no or quote.sold_to.company,
            items=items, plan=plan,
        )  # fmt: skip
        if new:
            log.info("quote %s is work item %d (%s)", quote.doc_no, item_id, state)
        await self._count_work()

    async def _count_work(self, *, changed: bool = True) -> None:
        # Other replicas open and close quote work items too: the gauge follows them as orders go by, at most every
        # few seconds when nothing changed here.
        await self._work_count.refresh(unless_fresher_than_s=0 if changed else WORK_COUNT_MAX_AGE_S)

    async def _status_now(self, order_number: str) -> str:
        """The order's status in M3 for an announcement made again; '' when M3 cannot say now (the write-back
        then shows no status, and the next status change fills it in)."""
        try:
            head = await self.m3.execute_one("OIS100MI", "GetHead", {"ORNO": order_number}, priority=PRIORITY)
        except M3Error as exc:
            log.info("order %s: its status could not be read (%s)", order_number, exc)
            return ""
        return text(head, "ORST") or text(head, "STAT")

    def _guard(self, lease: Lease | None) -> Guard:
        async def guard() -> None:
            if lease is not None:
                await ledger.check(self.engine, lease)

        return guard

    async def lengths(self) -> Mapping[str, Mapping[str, int]]:
        """Input field lengths from M3's API repository, for the mapping's length rules."""
        found: dict[str, dict[str, int]] = {}
        for program, transaction in (("OIS100MI", "AddBatchHead"), ("OIS100MI", "AddBatchLine"), ("CRS610MI", "Add")):
            metadata = await self.m3.metadata(program, transaction, priority=PRIORITY)
            if metadata is not None:
                found[f"{program}/{transaction}"] = {name: spec.length for name, spec in metadata.inputs.items()}
        return found

    @staticmethod
    def _created(quote: QuoteApproved, customer: str, order: str, status: str, lines: int) -> OrderResult:
        return OrderResult(
            doc_no=quote.doc_no,
            revision=quote.revision,
            outcome="created",
            order_number=order,
            order_status=status[:2],
            customer_number=customer,
            lines_written=lines,
            decided_at=datetime.now(UTC),
        )

    @staticmethod
    def _held(quote: QuoteApproved, problems: list[Problem]) -> OrderResult:
        return OrderResult(
            doc_no=quote.doc_no,
            revision=quote.revision,
            outcome="held",
            problems=problems,
            decided_at=datetime.now(UTC),
        )
