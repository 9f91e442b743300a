"""The OIS100MI batch order of a quote: found or started, its lines exactly once, confirmed, or deleted on give-up."""

from __future__ import annotations

import logging
from collections import Counter

from prometheus_client import Counter as MetricCounter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.order_writer.refusals import RejectedError, problem_from
from services.order_writer.verified_writes import (
    PRIORITY,
    WRITE_ROUNDS,
    Guard,
    settle,
    text,
    unknown_outcomes,
    write_verified,
)
from shared.contracts import Problem, QuoteApproved
from shared.m3 import M3BusinessError, M3Client, M3Error, M3OutcomeUnknownError
from shared.m3.metadata import Record
from shared.mapping import LINE_KEY, OrderPlan
from shared.platform.crash_points import crash_point
from shared.platform.state import ledger
from shared.platform.state.ledger import Lease, LeaseLostError, OrderState, batch_orders_of
from shared.platform.state.models import OrderLedgerEntry

log = logging.getLogger(__name__)

BATCH_ORDER_CREATED = "90"
BATCH_ORDER_REJECTED = "15"

batch_orders_deleted = MetricCounter(
    "m3bridge_batch_orders_deleted_total", "Batch orders the bridge gave up on and deleted, by reason.", ["reason"]
)
batch_orders_left = MetricCounter(
    "m3bridge_batch_orders_left_total",
    "Batch orders the bridge gave up on but could not delete (listed for an operator).",
)


def _line_key(value: object) -> str:
    """CUPO as M3 answers it (a number, maybe "3" or "3.0" or padded) in the form the bridge sends ("3")."""
    raw = str(value or "").strip()
    try:
        return str(int(float(raw))) if raw else ""
    except ValueError:
        return raw


class BatchOrders:
    """A quote's batch order in M3, keyed by the quote's DocNo in CUOR and each quote line number in CUPO."""

    def __init__(self, m3: M3Client, engine: AsyncEngine, *, use_bulk: bool, settle_s: float) -> None:
        self.m3 = m3
        self.engine = engine
        self.use_bulk = use_bulk
        self.settle_s = settle_s

    # --- head --------------------------------------------------------------------------------------------

    async def batch_order(
        self, quote: QuoteApproved, customer: str, plan: OrderPlan, entry: OrderLedgerEntry, lease: Lease | None = None
    ) -> tuple[str, bool]:
        """The batch order number to fill: the one recorded, else one with the quote's CUOR that an earlier
        attempt started, else a new one (AddBatchHead); and whether it is new and known empty (M3 answered the
        AddBatchHead of this call)."""
        doc_no, revision = quote.doc_no, quote.revision
        guard = self.guard(lease)
        if entry.batch_order_number:
            head = await self._batch_head(entry.batch_order_number)
            if head is not None and text(head, "STAT") == BATCH_ORDER_CREATED:
                # Confirmed, yet find_order did not see the order: never start a second one; look again later.
                raise M3OutcomeUnknownError(
                    f"batch order {entry.batch_order_number} is confirmed but its order is not listed yet",
                    program="OIS100MI",
                    transaction="LstHead",
                )
            if head is not None:
                return entry.batch_order_number, False
            log.warning("quote %s: batch order %s is gone from M3 (deleted by hand?); starting a new one", doc_no,
                        entry.batch_order_number)  # fmt: skip
        elif entry.state == OrderState.ORDERING or batch_orders_of(entry):
            started = await self._open_batch_orders(customer, doc_no)
            if started:
                keep, *extra = started
                for orphan in extra:
                    await guard()
                    await self._delete(orphan, "duplicate")
                await ledger.record(self.engine, doc_no, revision, OrderState.ORDERING, batch_order_number=keep,
                                    customer_number=customer, lease=lease)  # fmt: skip
                log.info("quote %s: resuming batch order %s found by CUOR", doc_no, keep)
                return keep, False
        await ledger.record(
            self.engine, doc_no, revision, OrderState.ORDERING, customer_number=customer, batch_order_number=None,
            lease=lease,
        )  # fmt: skip

        answered: list[str] = []

        async def add_head() -> str:
            head = await self.m3.execute_one("OIS100MI", "AddBatchHead", plan.head, priority=PRIORITY)
            number = text(head, "ORNO")
            if not number:
                raise RejectedError([Problem(error_class="business", message="OIS100MI/AddBatchHead returned no ORNO")])
            answered.append(number)
            return number

        async def started_meanwhile() -> str | None:
            found = await self._open_batch_orders(customer, doc_no)
            for orphan in found[1:]:
                await guard()
                await self._delete(orphan, "duplicate")
            return found[0] if found else None

        batch_order = await write_verified(
            "AddBatchHead", add_head, started_meanwhile, settle_s=self.settle_s, guard=guard
        )
        await crash_point("order-writer.after-batch-head")
        try:
            await ledger.record(self.engine, doc_no, revision, OrderState.ORDERING, batch_order_number=batch_order,
                                lease=lease)  # fmt: skip
        except LeaseLostError:
            # Taken over while AddBatchHead ran: the new owner did not see this batch order when it looked (it may
            # have started its own), so this worker's one must not stay behind.
            await self._delete(batch_order, "taken-over")
            raise
        return batch_order, batch_order in answered

    def guard(self, lease: Lease | None) -> Guard:
        async def check() -> None:
            if lease is not None:
                await ledger.check(self.engine, lease)

        return check

    async def _batch_head(self, batch_order: str) -> Record | None:
        try:
            return await self.m3.execute_one("OIS100MI", "GetBatchHead", {"ORNO": batch_order}, priority=PRIORITY)
        except M3BusinessError:
            return None

    async def _open_batch_orders(self, customer: str, doc_no: str) -> list[str]:
        """The customer's unconfirmed batch orders whose CUOR is this quote's DocNo, oldest first."""
        rows = await self.m3.execute("OIS100MI", "LstBatchHead", {"CUNO": customer}, priority=PRIORITY, maxrecs=0)
        return sorted(
            text(row, "ORNO")
            for row in rows
            if text(row, "CUOR") == doc_no and text(row, "STAT") != BATCH_ORDER_CREATED and text(row, "ORNO")
        )

    # --- lines -------------------------------------------------------------------------------------------

    async def add_missing_lines(
        self, batch_order: str, plan: OrderPlan, lease: Lease | None = None, *, known_empty: bool = False
    ) -> None:
        """Adds the plan's lines the batch order does not hold yet (by CUPO) and removes lines added twice, so the
        batch order holds each quote line exactly once. A line M3 refuses rejects the order. What M3 answered is
        not read back: a batch order `known_empty` (just started) is not listed first, and lines M3 accepted are
        added; only a lost answer makes the next round read the lines again."""
        guard = self.guard(lease)
        wanted = {line.fields[LINE_KEY]: line for line in plan.lines}
        for round_number in range(WRITE_ROUNDS):
            present = [] if known_empty and round_number == 0 else await self._batch_lines(batch_order)
            certain = True
            unknown = [row for row in present if _line_key(row.get(LINE_KEY)) not in wanted]
            if unknown:
                # Lines the bridge did not add (by hand, or before it keyed lines): it cannot tell what they are.
                raise RejectedError([
                    Problem(
                        error_class="business",
                        message=f"batch order {batch_order} holds {len(unknown)} lines that are not this quote's",
                        program="OIS100MI",
                        transaction="LstBatchLine",
                    )
                ])  # fmt: skip
            seen: Counter[str] = Counter()
            for row in present:
                key = _line_key(row.get(LINE_KEY))
                seen[key] += 1
                if seen[key] > 1:
                    await guard()
                    certain = await self._delete_line(batch_order, row) and certain
            missing = [line for key, line in wanted.items() if key not in seen]
            if not missing and certain:
                return
            try:
                if missing:
                    await guard()
                    await self._add_lines(batch_order, [{**line.fields, "ORNO": batch_order} for line in missing])
            except M3OutcomeUnknownError:
                unknown_outcomes.labels("AddBatchLine", "read_again").inc()
                await settle(self.settle_s)
                continue
            if certain:
                return  # every line M3 was sent, it answered as added
        present = await self._batch_lines(batch_order)
        if {_line_key(row.get(LINE_KEY)) for row in present} != set(wanted):
            raise M3OutcomeUnknownError(
                f"batch order {batch_order}: lines still incomplete after {WRITE_ROUNDS} rounds",
                program="OIS100MI",
                transaction="AddBatchLine",
            )

    async def _batch_lines(self, batch_order: str) -> list[Record]:
        return await self.m3.execute("OIS100MI", "LstBatchLine", {"ORNO": batch_order}, priority=PRIORITY, maxrecs=0)

    async def _add_lines(self, batch_order: str, lines: list[dict[str, str]]) -> None:
        if self.use_bulk:
            outcomes = await self.m3.bulk("OIS100MI", [("AddBatchLine", fields) for fields in lines], priority=PRIORITY)
            errors = [o.error for o in outcomes if o.error is not None]
            if errors:
                raise RejectedError([problem_from(e) for e in errors])
            return
        for fields in lines:
            await self.m3.execute("OIS100MI", "AddBatchLine", fields, priority=PRIORITY)

    async def _delete_line(self, batch_order: str, row: Record) -> bool:
        """DelBatchLine of a line added twice; False when its answer was lost (the next round reads again)."""
        fields = {"ORNO": batch_order, "PONR": text(row, "PONR"), "POSX": text(row, "POSX") or "0"}
        log.info("batch order %s: removing line %s, added twice (CUPO %s)", batch_order, fields["PONR"],
                 text(row, LINE_KEY))  # fmt: skip
        try:
            await self.m3.execute("OIS100MI", "DelBatchLine", fields, priority=PRIORITY)
        except M3OutcomeUnknownError:
            await settle(self.settle_s)  # the next round reads the lines again
            return False
        return True

    # --- confirm -----------------------------------------------------------------------------------------

    async def confirm(
        self, doc_no: str, customer: str, batch_order: str, lease: Lease | None = None
    ) -> tuple[str, str | None]:
        """OIS100MI/Confirm: the customer order number, and its status when M3 said it. A lost answer or an
        "already confirmed" is resolved by looking for the order by CUOR; a refusal rejects the quote."""
        guard = self.guard(lease)
        for _round in range(WRITE_ROUNDS):
            await guard()
            try:
                confirmed = await self.m3.execute_one("OIS100MI", "Confirm", {"ORNO": batch_order}, priority=PRIORITY)
            except M3OutcomeUnknownError:
                await settle(self.settle_s)
                found = await self.find_order(customer, doc_no)
                unknown_outcomes.labels("Confirm", "done" if found else "not_done").inc()
                if found is not None:
                    return found
                head = await self._batch_head(batch_order)
                if text(head, "STAT") == BATCH_ORDER_REJECTED:
                    raise RejectedError(await self._confirm_problems(batch_order, BATCH_ORDER_REJECTED)) from None
                continue
            except M3BusinessError:
                # "Already confirmed" (an earlier Confirm whose answer was lost) is success for our own order.
                found = await self.find_order(customer, doc_no)
                if found is not None:
                    return found
                raise
            status, order_number = text(confirmed, "STAT"), text(confirmed, "ORNO")
            if status != BATCH_ORDER_CREATED or not order_number:
                raise RejectedError(await self._confirm_problems(batch_order, status))
            return order_number, None
        raise M3OutcomeUnknownError(
            f"batch order {batch_order}: Confirm unresolved after {WRITE_ROUNDS} rounds",
            program="OIS100MI",
            transaction="Confirm",
        )

    async def _confirm_problems(self, batch_order: str, status: str) -> list[Problem]:
        reasons = await self.m3.execute("OIS100MI", "LstErrMsgOrder", {"ORNO": batch_order}, priority=PRIORITY)
        return [
            Problem(
                error_class="business",
                message=str(r.get("TX60") or r.get("MDTA") or "rejected")[:2000],
                code=str(r.get("MSID") or "")[:32],
                program="OIS100MI",
                transaction="Confirm",
            )
            for r in reasons
        ] or [Problem(error_class="business", message=f"batch order {batch_order} not created (status {status})")]

    async def find_order(self, customer: str, doc_no: str) -> tuple[str, str] | None:
        """An order of the customer whose customer order number (CUOR) is this quote's DocNo."""
        rows = await self.m3.execute("OIS100MI", "LstHead", {"CUNO": customer}, priority=PRIORITY, maxrecs=0)
        for row in rows:
            if str(row.get("CUOR") or "") == doc_no:
                return str(row["ORNO"]), str(row.get("ORST") or "")
        return None

    # --- giving up ---------------------------------------------------------------------------------------

    async def give_up(self, quote: QuoteApproved, reason: str, lease: Lease | None = None) -> None:
        """The quote will not be ordered (now): its batch order, if it has one, must not stay behind in M3."""
        entry = await ledger.entry(self.engine, quote.doc_no, quote.revision)
        if entry is not None:
            await self.delete_batch_order(entry, reason, lease)

    async def delete_batch_order(self, entry: OrderLedgerEntry, reason: str, lease: Lease | None = None) -> None:
        """Delete the entry's batch order, unless M3 says it was confirmed (then it is an order: never deleted, and
        found by CUOR on the next attempt)."""
        if not entry.batch_order_number:
            return
        head = await self._batch_head(entry.batch_order_number)
        if head is not None and text(head, "STAT") == BATCH_ORDER_CREATED:
            log.warning("quote %s: batch order %s was confirmed; not deleting it (%s)", entry.doc_no,
                        entry.batch_order_number, reason)  # fmt: skip
            return
        await self.guard(lease)()
        if head is None or await self._delete(entry.batch_order_number, reason):
            await ledger.record(self.engine, entry.doc_no, entry.revision, OrderState(entry.state),
                                batch_order_number=None, lease=lease)  # fmt: skip

    async def _delete(self, batch_order: str, reason: str) -> bool:
        """OIS100MI/DelBatchHead; True when the batch order is gone. A refusal leaves it for an operator."""
        try:
            await self.m3.execute("OIS100MI", "DelBatchHead", {"ORNO": batch_order}, priority=PRIORITY)
        except M3OutcomeUnknownError:
            await settle(self.settle_s)
            if await self._batch_head(batch_order) is not None:
                batch_orders_left.inc()
                log.error("batch order %s (%s): deleting it may not have worked; check OIS275", batch_order, reason)
                return False
        except M3Error as refused:
            if refused.retryable:
                raise
            batch_orders_left.inc()
            log.error("batch order %s (%s) could not be deleted: %s; delete it in OIS275", batch_order, reason,
                      refused)  # fmt: skip
            return False
        batch_orders_deleted.labels(reason).inc()
        log.info("batch order %s deleted (%s)", batch_order, reason)
        return True
