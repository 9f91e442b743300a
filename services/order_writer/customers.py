"""Customers QuoteWerks → M3 (order-writer): `quotewerks.customer.changed.v1` → CRS610MI Add / ChgBasicData.

The rules, the canonical states and the echo guard are shared with the other direction (catalog-sync) and live in
`shared/customers.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.order_writer.orders import OrderWriter
from services.order_writer.refusals import HoldError, RejectedError, problem_from
from services.order_writer.verified_writes import PRIORITY
from shared.contracts import LineType, Problem, QuoteApproved, QuoteLine, QuoteWerksCustomerChanged
from shared.customers import (
    BRIDGE_ORIGIN,
    FIELD_OF_CODE,
    FINGERPRINT_M3,
    M3_FIELDS,
    CustomerChangeRejectedError,
    CustomerSyncRules,
    CustomerWriteOutcome,
    changes_for_m3,
    is_quotewerks_echo,
    last_synced_at,
    m3_state,
    mark_synced,
    state_hash,
)
from shared.m3 import M3BusinessError, M3Error
from shared.m3.metadata import Record
from shared.mapping import plan_customer
from shared.state import fingerprints, ledger

log = logging.getLogger(__name__)

# --- QuoteWerks → M3 (order-writer) -------------------------------------------------------------------------


def as_quote(event: QuoteWerksCustomerChanged) -> QuoteApproved:
    """The change as the quote the order-writer's customer code and `plan_customer` expect: the customer as sold-to,
    its CMAccountNo the QuoteWerks customer id (so the link identity is the same as for quotes)."""
    party = event.customer.model_copy(update={"cm_account_no": event.customer_id})
    return QuoteApproved(
        doc_no=f"customer {event.customer_id}"[:50],
        sold_to=party,
        lines=[QuoteLine(line_type=LineType.COMMENT)],
        approved_at=event.changed_at,
    )


class CustomerSync:
    """Applies `quotewerks.customer.changed.v1` to M3 through the order-writer's M3 client and customer lookup."""

    def __init__(self, writer: OrderWriter, engine: AsyncEngine, rules: CustomerSyncRules) -> None:
        self.writer = writer
        self.m3 = writer.m3
        self.engine = engine
        self.rules = rules

    async def apply(self, event: QuoteWerksCustomerChanged) -> CustomerWriteOutcome:
        """Raises CustomerChangeRejectedError (dead-letter) or a retryable error (redeliver)."""
        try:
            return await self._apply(event)
        except (HoldError, RejectedError) as refused:
            raise CustomerChangeRejectedError(refused.problems) from refused
        except M3Error as error:
            if error.retryable:
                raise
            raise CustomerChangeRejectedError([problem_from(error)]) from error

    async def _apply(self, event: QuoteWerksCustomerChanged) -> CustomerWriteOutcome:
        if event.origin == BRIDGE_ORIGIN:
            return CustomerWriteOutcome("ignored", reason="the bridge's own write coming back")
        if await is_quotewerks_echo(self.engine, event):
            return CustomerWriteOutcome("ignored", reason="the same state the bridge last wrote to QuoteWerks")
        quote = as_quote(event)
        identity = event.customer_id
        link = await ledger.customer_link(self.engine, identity)
        number = link.m3_customer_number if link is not None else await self.writer.customers.existing(quote)
        if number is None:
            if not self.rules.create_in_m3:
                raise CustomerChangeRejectedError([
                    Problem(error_class="business", message=f"customer {identity} is not in M3 (create_in_m3: false)")
                ])  # fmt: skip
            return await self._create(event, quote)
        if link is None and not await ledger.link_customer(
            self.engine, identity, number, email=event.customer.email, company=event.customer.company, by="quotewerks"
        ):
            raise CustomerChangeRejectedError([
                Problem(
                    error_class="business",
                    message=f"M3 customer {number} (found for {identity}) is already linked to another QuoteWerks "
                    "customer: merge or relink them",
                )
            ])  # fmt: skip
        return await self._update(event, quote, number)

    async def _create(self, event: QuoteWerksCustomerChanged, quote: QuoteApproved) -> CustomerWriteOutcome:
        # OrderWriter.customer: link, else the same lookup again (nothing found), else CRS610MI/Add via
        # plan_customer and the link (last_written_by m3bridge).
        number = await self.writer.customer(quote)
        record = await self.m3.execute_one("CRS610MI", "GetBasicData", {"CUNO": number}, priority=PRIORITY)
        await fingerprints.put(self.engine, FINGERPRINT_M3, number, state_hash(m3_state(record or {})))
        await mark_synced(self.engine, number, event.changed_at.astimezone(UTC))
        log.info("QuoteWerks customer %s created as M3 customer %s", event.customer_id, number)
        return CustomerWriteOutcome("created", number, written={str(k): v for k, v in m3_state(record or {}).items()})

    async def _update(
        self, event: QuoteWerksCustomerChanged, quote: QuoteApproved, number: str
    ) -> CustomerWriteOutcome:
        synced_at = await last_synced_at(self.engine, number)
        changed_at = event.changed_at.astimezone(UTC)
        if synced_at is not None and changed_at < synced_at:
            return CustomerWriteOutcome(
                "ignored", number, reason=f"older than the change applied at {synced_at.isoformat()}"
            )
        try:
            record = await self.m3.execute_one("CRS610MI", "GetBasicData", {"CUNO": number}, priority=PRIORITY)
        except M3BusinessError as missing:
            raise CustomerChangeRejectedError([problem_from(missing)]) from missing
        current: Record = dict(record or {})
        m3_at = await self._m3_changed_at(number, current, synced_at)
        plan = plan_customer(quote, self.writer.rules, field_lengths=await self.writer.lengths())
        changes = changes_for_m3(self.rules, current, plan.fields, quotewerks_at=changed_at, m3_at=m3_at)
        # A mapping refusal matters only for a field that is to be written (e.g. an e-mail too long for MAIL).
        refused = [
            r
            for r in plan.refusals
            if r.field in FIELD_OF_CODE and any(code in changes for code in M3_FIELDS[FIELD_OF_CODE[r.field]])
        ]
        if refused:
            raise HoldError([
                Problem(error_class="mapping", message=f"customer {r.field}: {r.reason}"[:2000], field=r.field[:32])
                for r in refused
            ])  # fmt: skip
        if not changes:
            await mark_synced(self.engine, number, changed_at)
            return CustomerWriteOutcome("unchanged", number, reason="nothing QuoteWerks owns differs from M3")
        after = {**current, **changes}
        # The fingerprint goes first: M3's change event for this write may reach catalog-sync before we return.
        await fingerprints.put(self.engine, FINGERPRINT_M3, number, state_hash(m3_state(after)))
        await self.m3.execute("CRS610MI", "ChgBasicData", {"CUNO": number, **changes}, priority=PRIORITY)
        await mark_synced(self.engine, number, changed_at)
        await ledger.link_customer(
            self.engine,
            event.customer_id,
            number,
            email=event.customer.email,
            company=event.customer.company,
            by=BRIDGE_ORIGIN,
        )
        log.info("M3 customer %s changed from QuoteWerks %s: %s", number, event.customer_id, sorted(changes))
        return CustomerWriteOutcome("updated", number, written=changes)

    async def _m3_changed_at(
        self, number: str, current: Mapping[str, object], synced_at: datetime | None
    ) -> datetime | date | None:
        """When M3's values last changed: our own last write when M3 still holds exactly what we wrote, else LMDT."""
        written = await fingerprints.get(self.engine, FINGERPRINT_M3, number)
        if synced_at is not None and written == state_hash(m3_state(current)):
            return synced_at
        lmdt = current.get("LMDT")
        return lmdt if isinstance(lmdt, date) else None
