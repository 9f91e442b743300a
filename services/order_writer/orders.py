"""From an approved quote to exactly one confirmed M3 customer order.

Steps, each recorded in the ledger before the next begins, so a redelivery or a restart resumes rather than
repeats: customer (link, else found by e-mail or name, else created with CRS610MI/Add) → plan (mapping rules)
→ items checked (MMS200MI/GetItmBasic: unknown or not active holds the order) → batch order (OIS100MI
AddBatchHead, AddBatchLine in one bulk request, Confirm). The quote's DocNo goes into the order's CUOR, so
an order confirmed just before a crash is found again by OIS100MI/LstHead instead of being created twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts import OrderResult, Problem, QuoteApproved
from shared.lease import Priority
from shared.m3 import M3AuthorizationDeniedError, M3BusinessError, M3Client, M3Error
from shared.m3.metadata import Record
from shared.mapping import MappingRules, OrderPlan, plan_customer, plan_order
from shared.state import ledger
from shared.state.ledger import OrderState

log = logging.getLogger(__name__)

ACTIVE_ITEM = "20"
BATCH_ORDER_CREATED = "90"
PRIORITY = Priority.TRANSACTIONAL


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


class OrderWriter:
    def __init__(self, m3: M3Client, engine: AsyncEngine, rules: MappingRules, *, use_bulk: bool = True) -> None:
        self.m3 = m3
        self.engine = engine
        self.rules = rules
        self.use_bulk = use_bulk

    # --- the whole step ----------------------------------------------------------------------------------

    async def process(self, quote: QuoteApproved) -> OrderResult:
        """The result to publish. Raises RejectedError (dead-letter it) or a retryable error (redeliver)."""
        doc_no, revision = quote.doc_no, quote.revision
        entry = await ledger.entry(self.engine, doc_no, revision)
        if entry is not None and entry.state == OrderState.CONFIRMED and entry.order_number:
            log.info("quote %s already became M3 order %s: announcing it again", doc_no, entry.order_number)
            return self._created(quote, entry.customer_number or "", entry.order_number, "", 0)
        if entry is not None and entry.state == OrderState.ORDERING and entry.customer_number:
            found = await self.find_order(entry.customer_number, doc_no)
            if found is not None:
                await ledger.record(self.engine, doc_no, revision, OrderState.CONFIRMED, order_number=found[0])
                return self._created(quote, entry.customer_number, found[0], found[1], 0)
        await ledger.record(
            self.engine, doc_no, revision, OrderState.RECEIVED, fingerprint=fingerprint(quote), count_attempt=True
        )
        try:
            customer = await self.customer(quote)
            plan = plan_order(quote, self.rules, customer_number=customer, field_lengths=await self.lengths())
            if plan.refusals:
                raise HoldError([
                    Problem(error_class="mapping", message=f"{r.field}: {r.reason}"[:2000], field=r.field[:32])
                    for r in plan.refusals
                ])  # fmt: skip
            await self.check_items(plan)
            return await self.create_order(quote, customer, plan)
        except HoldError as held:
            await ledger.record(self.engine, doc_no, revision, OrderState.HELD, error=str(held)[:2000])
            log.warning("quote %s held: %s", doc_no, held)
            return OrderResult(
                doc_no=doc_no, revision=revision, outcome="held", problems=held.problems, decided_at=datetime.now(UTC)
            )
        except M3Error as error:
            if error.retryable:
                raise
            raise RejectedError([problem_from(error)]) from error

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
            created = await self.m3.execute_one("CRS610MI", "Add", plan.fields, priority=PRIORITY)
            number = str((created or {}).get("CUNO") or plan.fields.get("CUNO") or "")
            if not number:
                raise RejectedError([Problem(error_class="business", message="CRS610MI/Add returned no CUNO")])
            log.info("created M3 customer %s for %s", number, party.company)
        await ledger.link_customer(
            self.engine, identity, number, email=party.email, company=party.company, by="m3bridge"
        )
        return number

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

    async def create_order(self, quote: QuoteApproved, customer: str, plan: OrderPlan) -> OrderResult:
        doc_no, revision = quote.doc_no, quote.revision
        await ledger.record(self.engine, doc_no, revision, OrderState.ORDERING, customer_number=customer)
        head = await self.m3.execute_one("OIS100MI", "AddBatchHead", plan.head, priority=PRIORITY)
        batch_order = str((head or {}).get("ORNO") or "")
        if not batch_order:
            raise RejectedError([Problem(error_class="business", message="OIS100MI/AddBatchHead returned no ORNO")])
        lines = [("AddBatchLine", {**line.fields, "ORNO": batch_order}) for line in plan.lines]
        if self.use_bulk:
            outcomes = await self.m3.bulk("OIS100MI", lines, priority=PRIORITY)
            errors = [o.error for o in outcomes if o.error is not None]
            if errors:
                raise RejectedError([problem_from(e) for e in errors])
        else:
            for transaction, fields in lines:
                await self.m3.execute("OIS100MI", transaction, fields, priority=PRIORITY)
        confirmed = await self.m3.execute_one("OIS100MI", "Confirm", {"ORNO": batch_order}, priority=PRIORITY)
        status = str((confirmed or {}).get("STAT") or "")
        order_number = str((confirmed or {}).get("ORNO") or "")
        if status != BATCH_ORDER_CREATED or not order_number:
            reasons = await self.m3.execute("OIS100MI", "LstErrMsgOrder", {"ORNO": batch_order}, priority=PRIORITY)
            problems = [
                Problem(
                    error_class="business",
                    message=str(r.get("TX60") or r.get("MDTA") or "rejected")[:2000],
                    code=str(r.get("MSID") or "")[:32],
                    program="OIS100MI",
                    transaction="Confirm",
                )
                for r in reasons
            ] or [Problem(error_class="business", message=f"batch order {batch_order} not created (status {status})")]
            raise RejectedError(problems)
        await ledger.record(self.engine, doc_no, revision, OrderState.CONFIRMED, order_number=order_number)
        order_status = ""
        head_now = await self.m3.execute_one("OIS100MI", "GetHead", {"ORNO": order_number}, priority=PRIORITY)
        if head_now is not None:
            order_status = str(head_now.get("ORST") or head_now.get("STAT") or "")
        log.info("quote %s is M3 order %s (%d lines)", doc_no, order_number, len(plan.lines))
        return self._created(quote, customer, order_number, order_status, len(plan.lines))

    async def find_order(self, customer: str, doc_no: str) -> tuple[str, str] | None:
        """An order of the customer whose customer order number (CUOR) is this quote's DocNo."""
        rows = await self.m3.execute("OIS100MI", "LstHead", {"CUNO": customer}, priority=PRIORITY, maxrecs=0)
        for row in rows:
            if str(row.get("CUOR") or "") == doc_no:
                return str(row["ORNO"]), str(row.get("ORST") or "")
        return None

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
