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

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.order_writer.batch_orders import BatchOrders
from services.order_writer.order_customer import QuoteCustomers
from services.order_writer.refusals import HoldError, RejectedError, problem_from
from services.order_writer.verified_writes import PRIORITY, text
from shared.contracts import OrderResult, Problem, QuoteApproved
from shared.m3 import M3AuthorizationDeniedError, M3BusinessError, M3Client, M3Error
from shared.m3.metadata import Record
from shared.mapping import MappingRules, OrderPlan, plan_order
from shared.state import ledger
from shared.state.ledger import OrderState
from shared.state.models import OrderLedgerEntry

log = logging.getLogger(__name__)

ACTIVE_ITEM = "20"


def fingerprint(quote: QuoteApproved) -> str:
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
    ) -> None:
        self.m3 = m3
        self.engine = engine
        self.rules = rules
        self.use_bulk = use_bulk
        self.settle_s = settle_s
        self.customers = QuoteCustomers(m3, engine, rules, self.lengths, settle_s=settle_s)
        self.batch_orders = BatchOrders(m3, engine, use_bulk=use_bulk, settle_s=settle_s)

    # --- the whole step ----------------------------------------------------------------------------------

    async def process(self, quote: QuoteApproved) -> OrderResult:
        """The result to publish. Raises RejectedError (dead-letter it) or a retryable error (redeliver)."""
        doc_no, revision = quote.doc_no, quote.revision
        entry = await ledger.entry(self.engine, doc_no, revision)
        if entry is not None and entry.state == OrderState.CONFIRMED and entry.order_number:
            log.info("quote %s already became M3 order %s: announcing it again", doc_no, entry.order_number)
            return self._created(quote, entry.customer_number or "", entry.order_number, "", 0)
        superseded = await self._other_revisions(quote)
        if superseded is not None:
            return superseded
        # An entry that may have a batch order in M3 keeps its state: the next attempt must look for it first.
        state = entry.state if entry is not None and entry.state == OrderState.ORDERING else OrderState.RECEIVED
        entry = await ledger.record(
            self.engine, doc_no, revision, OrderState(state), fingerprint=fingerprint(quote), count_attempt=True
        )
        try:
            if entry.state == OrderState.ORDERING and entry.customer_number:
                customer = entry.customer_number
            else:
                customer = await self.customer(quote)
            plan = plan_order(quote, self.rules, customer_number=customer, field_lengths=await self.lengths())
            if plan.refusals:
                raise HoldError([
                    Problem(error_class="mapping", message=f"{r.field}: {r.reason}"[:2000], field=r.field[:32])
                    for r in plan.refusals
                ])  # fmt: skip
            await self.check_items(plan)
            return await self.create_order(quote, customer, plan, entry)
        except HoldError as held:
            await self.batch_orders.give_up(quote, "held")
            await ledger.record(self.engine, doc_no, revision, OrderState.HELD, error=str(held)[:2000])
            log.warning("quote %s held: %s", doc_no, held)
            return self._held(quote, held.problems)
        except RejectedError as rejected:
            await self.batch_orders.give_up(quote, "rejected")
            await ledger.record(self.engine, doc_no, revision, OrderState.FAILED, error=str(rejected)[:2000])
            raise
        except M3Error as error:
            if error.retryable:
                raise
            await self.batch_orders.give_up(quote, "rejected")
            await ledger.record(self.engine, doc_no, revision, OrderState.FAILED, error=str(error)[:2000])
            raise RejectedError([problem_from(error)]) from error

    async def _other_revisions(self, quote: QuoteApproved) -> OrderResult | None:
        """A quote revision replaces the older ones that are not yet confirmed (their batch orders are deleted)
        and is itself replaced by a newer one. Returns the result when this revision is not to be ordered."""
        others = [e for e in await ledger.revisions(self.engine, quote.doc_no) if e.revision != quote.revision]
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

    async def customer(self, quote: QuoteApproved) -> str:
        """The M3 customer number for the quote's sold-to party, creating the customer when M3 lacks it."""
        return await self.customers.customer(quote)

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
        self, quote: QuoteApproved, customer: str, plan: OrderPlan, entry: OrderLedgerEntry
    ) -> OrderResult:
        """Batch head (resumed or started), the lines it lacks, Confirm; each write verified when its answer is
        lost."""
        doc_no = quote.doc_no
        if entry.state == OrderState.ORDERING:
            found = await self.batch_orders.find_order(customer, doc_no)
            if found is not None:
                return await self._confirmed(quote, customer, found[0], found[1], len(plan.lines))
        batch_order = await self.batch_orders.batch_order(quote, customer, plan, entry)
        await self.batch_orders.add_missing_lines(batch_order, plan)
        order_number, status = await self.batch_orders.confirm(doc_no, customer, batch_order)
        return await self._confirmed(quote, customer, order_number, status, len(plan.lines))

    async def _confirmed(
        self, quote: QuoteApproved, customer: str, order_number: str, status: str | None, lines: int
    ) -> OrderResult:
        await ledger.record(self.engine, quote.doc_no, quote.revision, OrderState.CONFIRMED, order_number=order_number)
        if status is None:
            head_now = await self.m3.execute_one("OIS100MI", "GetHead", {"ORNO": order_number}, priority=PRIORITY)
            status = text(head_now, "ORST") or text(head_now, "STAT")
        log.info("quote %s is M3 order %s (%d lines)", quote.doc_no, order_number, lines)
        return self._created(quote, customer, order_number, status, lines)

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
