"""Customers QuoteWerks → M3 (order-writer): a QuoteWerks customer M3 does not know yet
(`quotewerks.customer.changed.v1`) is found in M3 or created there (CRS610MI/Add) and linked. Once linked,
catalog-sync keeps the pair in step both ways (`services/catalog_sync/customer_merger.py`); order-writer leaves
its later changes alone.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from services.order_writer.orders import OrderWriter
from services.order_writer.refusals import HoldError, RejectedError, problem_from
from services.order_writer.verified_writes import PRIORITY
from shared.contracts import LineType, Problem, QuoteApproved, QuoteLine, QuoteWerksCustomerChanged
from shared.customers import (
    BRIDGE_ORIGIN,
    CustomerChangeRejectedError,
    CustomerSyncRules,
    CustomerWriteOutcome,
    is_quotewerks_echo,
    m3_state,
)
from shared.m3 import M3Error
from shared.platform.state import ledger

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
        if link is not None:
            return CustomerWriteOutcome(
                "ignored", link.m3_customer_number, reason="linked: catalog-sync merges its changes both ways"
            )
        number = await self.writer.customers.existing(quote)
        if number is None:
            if not self.rules.create_in_m3:
                raise CustomerChangeRejectedError([
                    Problem(error_class="business", message=f"customer {identity} is not in M3 (create_in_m3: false)")
                ])  # fmt: skip
            return await self._create(event, quote)
        if not await ledger.link_customer(
            self.engine, identity, number, email=event.customer.email, company=event.customer.company, by="quotewerks"
        ):
            raise CustomerChangeRejectedError([
                Problem(
                    error_class="business",
                    message=f"M3 customer {number} (found for {identity}) is already linked to another QuoteWerks "
                    "customer: merge or relink them",
                )
            ])  # fmt: skip
        log.info("QuoteWerks customer %s is M3 customer %s: linked, catalog-sync merges the two", identity, number)
        return CustomerWriteOutcome("unchanged", number, reason="linked to the M3 customer found for it")

    async def _create(self, event: QuoteWerksCustomerChanged, quote: QuoteApproved) -> CustomerWriteOutcome:
        # OrderWriter.customer: link, else the same lookup again (nothing found), else CRS610MI/Add via
        # plan_customer and the link (last_written_by m3bridge).
        number = await self.writer.customer(quote)
        record = await self.m3.execute_one("CRS610MI", "GetBasicData", {"CUNO": number}, priority=PRIORITY)
        log.info("QuoteWerks customer %s created as M3 customer %s", event.customer_id, number)
        return CustomerWriteOutcome("created", number, written={str(k): v for k, v in m3_state(record or {}).items()})
