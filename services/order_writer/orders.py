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
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from prometheus_client import Counter as MetricCounter
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts import OrderResult, Problem, QuoteApproved
from shared.lease import Priority
from shared.m3 import M3AuthorizationDeniedError, M3BusinessError, M3Client, M3Error, M3OutcomeUnknownError
from shared.m3.metadata import Record
from shared.mapping import LINE_KEY, MappingRules, OrderPlan, plan_customer, plan_order
from shared.state import ledger
from shared.state.ledger import OrderState
from shared.state.models import OrderLedgerEntry

log = logging.getLogger(__name__)

ACTIVE_ITEM = "20"
BATCH_ORDER_CREATED = "90"
BATCH_ORDER_REJECTED = "15"
PRIORITY = Priority.TRANSACTIONAL
#: How often one step sends a write again after M3 was read and had provably not done it.
WRITE_ROUNDS = 3

unknown_outcomes = MetricCounter(
    "m3bridge_m3_unknown_outcomes_total",
    "Writes to M3 whose answer was lost, by transaction and what reading M3 found (done, not_done; read_again: the "
    "lines are compared again).",
    ["transaction", "found"],
)
batch_orders_deleted = MetricCounter(
    "m3bridge_batch_orders_deleted_total", "Batch orders the bridge gave up on and deleted, by reason.", ["reason"]
)
batch_orders_left = MetricCounter(
    "m3bridge_batch_orders_left_total",
    "Batch orders the bridge gave up on but could not delete (listed for an operator).",
)

T = TypeVar("T")


class HoldError(Exception):
    """The order must not be sent until someone fixes the data; `problems` say what."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


class RejectedError(Exception):
    """M3 refused the order for good (business or authorization); goes to the dead letters."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def problem_from(error: M3Error) -> Problem:
    return Problem(
        error_class=error.error_class,
        message=error.message[:2000],
        code=getattr(error, "code", "")[:32],
        field=getattr(error, "field", "")[:32],
        program=error.program[:16],
        transaction=error.transaction[:32],
    )


def fingerprint(quote: QuoteApproved) -> str:
    return hashlib.sha256(quote.model_dump_json().encode()).hexdigest()


def _text(record: Mapping[str, object] | None, name: str) -> str:
    return str((record or {}).get(name) or "").strip()


def _line_key(value: object) -> str:
    """CUPO as M3 answers it (a number, maybe "3" or "3.0" or padded) in the form the bridge sends ("3")."""
    text = str(value or "").strip()
    try:
        return str(int(float(text))) if text else ""
    except ValueError:
        return text


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
            await self._give_up(quote, "held")
            await ledger.record(self.engine, doc_no, revision, OrderState.HELD, error=str(held)[:2000])
            log.warning("quote %s held: %s", doc_no, held)
            return self._held(quote, held.problems)
        except RejectedError as rejected:
            await self._give_up(quote, "rejected")
            await ledger.record(self.engine, doc_no, revision, OrderState.FAILED, error=str(rejected)[:2000])
            raise
        except M3Error as error:
            if error.retryable:
                raise
            await self._give_up(quote, "rejected")
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
                await self._delete_batch_order(older, "superseded")
                await ledger.record(self.engine, older.doc_no, older.revision, OrderState.SUPERSEDED)
        return None

    # --- customer ----------------------------------------------------------------------------------------

    async def customer(self, quote: QuoteApproved) -> str:
        """The M3 customer number for the quote's sold-to party, creating the customer when M3 lacks it."""
        party = quote.sold_to
        identity = party.cm_account_no or (f"email:{party.email.casefold()}" if party.email else "")
        identity = identity or f"company:{party.company.casefold()}"
        link = await ledger.customer_link(self.engine, identity)
        if link is not None:
            return link.m3_customer_number
        number = await self._existing_customer(quote)
        if number is None:
            plan = plan_customer(quote, self.rules, field_lengths=await self.lengths())
            if plan.refusals:
                raise HoldError([
                    Problem(error_class="mapping", message=f"customer {r.field}: {r.reason}"[:2000], field=r.field[:32])
                    for r in plan.refusals
                ])  # fmt: skip
            number = await self._create_customer(plan.fields)
            log.info("created M3 customer %s for %s", number, party.company)
        await ledger.link_customer(
            self.engine, identity, number, email=party.email, company=party.company, by="m3bridge"
        )
        return number

    async def _create_customer(self, fields: Mapping[str, str]) -> str:
        """CRS610MI/Add; after a lost answer, the customer is looked up by the name and address sent."""

        async def add() -> str:
            created = await self.m3.execute_one("CRS610MI", "Add", fields, priority=PRIORITY)
            number = _text(created, "CUNO") or fields.get("CUNO", "")
            if not number:
                raise RejectedError([Problem(error_class="business", message="CRS610MI/Add returned no CUNO")])
            return number

        return await self._write_verified("Add", add, lambda: self._created_customer(fields))

    async def _created_customer(self, fields: Mapping[str, str]) -> str | None:
        """The customer a CRS610MI/Add with `fields` created, if any. LstByName reads the customer table itself
        (SearchCustomer goes through a search index that may not have it yet)."""
        if fields.get("CUNO"):
            try:
                found = await self.m3.execute_one(
                    "CRS610MI", "GetBasicData", {"CUNO": fields["CUNO"]}, priority=PRIORITY
                )
            except M3BusinessError:
                return None
            return _text(found, "CUNO") or None
        name = fields.get("CUNM", "")
        wanted = {code: fields[code].casefold() for code in ("MAIL", "CUA1", "PONO") if fields.get(code)}
        matches: list[str] = []
        async for row in self.m3.list_all(
            "CRS610MI", "LstByName", {"CUNM": name}, key_fields=("CUNM", "CUNO"), priority=PRIORITY
        ):
            if _text(row, "CUNM").casefold() != name.casefold():
                break
            if all(_text(row, code).casefold() == value for code, value in wanted.items()):
                matches.append(_text(row, "CUNO"))
        if len(matches) > 1:
            log.warning("customer %r exists %d times in M3 (%s): taking %s", name, len(matches), matches, min(matches))
        return min(matches) if matches else None

    async def _existing_customer(self, quote: QuoteApproved) -> str | None:
        party = quote.sold_to
        if party.cm_account_no and len(party.cm_account_no) <= 10:
            # Sites that key QuoteWerks customers by their M3 number: take it when M3 knows it.
            try:
                record = await self.m3.execute_one(
                    "CRS610MI", "GetBasicData", {"CUNO": party.cm_account_no}, priority=PRIORITY
                )
            except M3BusinessError:
                record = None
            if record is not None:
                return str(record["CUNO"])
        # Deduplicate: the same e-mail address, else the same name, found exactly once.
        for query, field, wanted in (
            (party.email, "MAIL", party.email.casefold()),
            (party.company, "CUNM", party.company.casefold()[:36]),
        ):
            if not query:
                continue
            rows = await self.m3.execute("CRS610MI", "SearchCustomer", {"SQRY": query[:100]}, priority=PRIORITY)
            matches = {str(r["CUNO"]) for r in rows if str(r.get(field) or "").casefold() == wanted}
            if len(matches) == 1:
                return matches.pop()
        return None

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
            found = await self.find_order(customer, doc_no)
            if found is not None:
                return await self._confirmed(quote, customer, found[0], found[1], len(plan.lines))
        batch_order = await self._batch_order(quote, customer, plan, entry)
        await self._add_missing_lines(batch_order, plan)
        order_number, status = await self._confirm(doc_no, customer, batch_order)
        return await self._confirmed(quote, customer, order_number, status, len(plan.lines))

    async def _confirmed(
        self, quote: QuoteApproved, customer: str, order_number: str, status: str | None, lines: int
    ) -> OrderResult:
        await ledger.record(self.engine, quote.doc_no, quote.revision, OrderState.CONFIRMED, order_number=order_number)
        if status is None:
            head_now = await self.m3.execute_one("OIS100MI", "GetHead", {"ORNO": order_number}, priority=PRIORITY)
            status = _text(head_now, "ORST") or _text(head_now, "STAT")
        log.info("quote %s is M3 order %s (%d lines)", quote.doc_no, order_number, lines)
        return self._created(quote, customer, order_number, status, lines)

    async def _batch_order(self, quote: QuoteApproved, customer: str, plan: OrderPlan, entry: OrderLedgerEntry) -> str:
        """The batch order number to fill: the one recorded, else one with the quote's CUOR that an earlier
        attempt started, else a new one (AddBatchHead)."""
        doc_no, revision = quote.doc_no, quote.revision
        if entry.batch_order_number:
            head = await self._batch_head(entry.batch_order_number)
            if head is not None and _text(head, "STAT") == BATCH_ORDER_CREATED:
                # Confirmed, yet find_order did not see the order: never start a second one; look again later.
                raise M3OutcomeUnknownError(
                    f"batch order {entry.batch_order_number} is confirmed but its order is not listed yet",
                    program="OIS100MI",
                    transaction="LstHead",
                )
            if head is not None:
                return entry.batch_order_number
            log.warning("quote %s: batch order %s is gone from M3 (deleted by hand?); starting a new one", doc_no,
                        entry.batch_order_number)  # fmt: skip
        elif entry.state == OrderState.ORDERING:
            started = await self._open_batch_orders(customer, doc_no)
            if started:
                keep, *extra = started
                for orphan in extra:
                    await self._delete(orphan, "duplicate")
                await ledger.record(self.engine, doc_no, revision, OrderState.ORDERING, batch_order_number=keep)
                log.info("quote %s: resuming batch order %s found by CUOR", doc_no, keep)
                return keep
        await ledger.record(
            self.engine, doc_no, revision, OrderState.ORDERING, customer_number=customer, batch_order_number=None
        )

        async def add_head() -> str:
            head = await self.m3.execute_one("OIS100MI", "AddBatchHead", plan.head, priority=PRIORITY)
            number = _text(head, "ORNO")
            if not number:
                raise RejectedError([Problem(error_class="business", message="OIS100MI/AddBatchHead returned no ORNO")])
            return number

        async def started_meanwhile() -> str | None:
            found = await self._open_batch_orders(customer, doc_no)
            for orphan in found[1:]:
                await self._delete(orphan, "duplicate")
            return found[0] if found else None

        batch_order = await self._write_verified("AddBatchHead", add_head, started_meanwhile)
        await ledger.record(self.engine, doc_no, revision, OrderState.ORDERING, batch_order_number=batch_order)
        return batch_order

    async def _batch_head(self, batch_order: str) -> Record | None:
        try:
            return await self.m3.execute_one("OIS100MI", "GetBatchHead", {"ORNO": batch_order}, priority=PRIORITY)
        except M3BusinessError:
            return None

    async def _open_batch_orders(self, customer: str, doc_no: str) -> list[str]:
        """The customer's unconfirmed batch orders whose CUOR is this quote's DocNo, oldest first."""
        rows = await self.m3.execute("OIS100MI", "LstBatchHead", {"CUNO": customer}, priority=PRIORITY, maxrecs=0)
        return sorted(
            _text(row, "ORNO")
            for row in rows
            if _text(row, "CUOR") == doc_no and _text(row, "STAT") != BATCH_ORDER_CREATED and _text(row, "ORNO")
        )

    async def _add_missing_lines(self, batch_order: str, plan: OrderPlan) -> None:
        """Adds the plan's lines the batch order does not hold yet (by CUPO) and removes lines added twice, so the
        batch order holds each quote line exactly once. A line M3 refuses rejects the order."""
        wanted = {line.fields[LINE_KEY]: line for line in plan.lines}
        for _round in range(WRITE_ROUNDS):
            present = await self._batch_lines(batch_order)
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
                    await self._delete_line(batch_order, row)
            missing = [line for key, line in wanted.items() if key not in seen]
            if not missing:
                return
            try:
                await self._add_lines(batch_order, [{**line.fields, "ORNO": batch_order} for line in missing])
            except M3OutcomeUnknownError:
                unknown_outcomes.labels("AddBatchLine", "read_again").inc()
                await self._settle()
                continue
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

    async def _delete_line(self, batch_order: str, row: Record) -> None:
        fields = {"ORNO": batch_order, "PONR": _text(row, "PONR"), "POSX": _text(row, "POSX") or "0"}
        log.info("batch order %s: removing line %s, added twice (CUPO %s)", batch_order, fields["PONR"],
                 _text(row, LINE_KEY))  # fmt: skip
        try:
            await self.m3.execute("OIS100MI", "DelBatchLine", fields, priority=PRIORITY)
        except M3OutcomeUnknownError:
            await self._settle()  # the next round reads the lines again

    async def _confirm(self, doc_no: str, customer: str, batch_order: str) -> tuple[str, str | None]:
        """OIS100MI/Confirm: the customer order number, and its status when M3 said it. A lost answer or an
        "already confirmed" is resolved by looking for the order by CUOR; a refusal rejects the quote."""
        for _round in range(WRITE_ROUNDS):
            try:
                confirmed = await self.m3.execute_one("OIS100MI", "Confirm", {"ORNO": batch_order}, priority=PRIORITY)
            except M3OutcomeUnknownError:
                await self._settle()
                found = await self.find_order(customer, doc_no)
                unknown_outcomes.labels("Confirm", "done" if found else "not_done").inc()
                if found is not None:
                    return found
                head = await self._batch_head(batch_order)
                if _text(head, "STAT") == BATCH_ORDER_REJECTED:
                    raise RejectedError(await self._confirm_problems(batch_order, BATCH_ORDER_REJECTED)) from None
                continue
            except M3BusinessError:
                # "Already confirmed" (an earlier Confirm whose answer was lost) is success for our own order.
                found = await self.find_order(customer, doc_no)
                if found is not None:
                    return found
                raise
            status, order_number = _text(confirmed, "STAT"), _text(confirmed, "ORNO")
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

    async def _give_up(self, quote: QuoteApproved, reason: str) -> None:
        """The quote will not be ordered (now): its batch order, if it has one, must not stay behind in M3."""
        entry = await ledger.entry(self.engine, quote.doc_no, quote.revision)
        if entry is not None:
            await self._delete_batch_order(entry, reason)

    async def _delete_batch_order(self, entry: OrderLedgerEntry, reason: str) -> None:
        if not entry.batch_order_number:
            return
        if await self._delete(entry.batch_order_number, reason):
            await ledger.record(
                self.engine, entry.doc_no, entry.revision, OrderState(entry.state), batch_order_number=None
            )

    async def _delete(self, batch_order: str, reason: str) -> bool:
        """OIS100MI/DelBatchHead; True when the batch order is gone. A refusal leaves it for an operator."""
        try:
            await self.m3.execute("OIS100MI", "DelBatchHead", {"ORNO": batch_order}, priority=PRIORITY)
        except M3OutcomeUnknownError:
            await self._settle()
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

    # --- helpers -----------------------------------------------------------------------------------------

    async def _write_verified(
        self, transaction: str, write: Callable[[], Awaitable[T]], done: Callable[[], Awaitable[T | None]]
    ) -> T:
        """Run `write`; when its answer is lost, `done()` reads M3 for its effect, and only when there is none is
        the write sent again (at most WRITE_ROUNDS times, then the unknown outcome is raised for a later retry)."""
        last: M3OutcomeUnknownError | None = None
        for _round in range(WRITE_ROUNDS):
            try:
                return await write()
            except M3OutcomeUnknownError as lost:
                last = lost
                await self._settle()
                found = await done()
                unknown_outcomes.labels(transaction, "done" if found is not None else "not_done").inc()
                if found is not None:
                    return found
        assert last is not None
        raise last

    async def _settle(self) -> None:
        """A write whose answer was lost may still be running in M3: give it a moment before reading."""
        if self.settle_s > 0:
            await asyncio.sleep(self.settle_s)

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
