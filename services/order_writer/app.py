"""order-writer wiring: approved quotes in, M3 orders written, results and dead letters out."""

# No `from __future__ import annotations`: faststream reads the handler signature at runtime.
import asyncio
import logging
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from fastapi import Path, Query
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from pydantic import Field

from services.order_writer import results
from services.order_writer.customers import CustomerSync
from services.order_writer.orders import OrderWriter, RejectedError
from services.order_writer.reconcile import reconcile_forever, reconcile_orders
from services.order_writer.trace import trace
from shared.contracts import OrderResult, QuoteApproved, QuoteWerksCustomerChanged
from shared.contracts.topics import ORDER_RESULT, QUOTE_APPROVED, QUOTEWERKS_CUSTOMER_CHANGED
from shared.customers import load_sync_rules, settle_customer_change
from shared.m3 import m3_client_for
from shared.mapping import MappingRules, load_rules
from shared.platform.crash_points import crash_point
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import CustomerRulesSettings, config_path
from shared.platform.started import StartedPart
from shared.platform.state.ledger import LeaseLostError

log = logging.getLogger(__name__)


class OrderWriterSettings(CustomerRulesSettings):
    service_name: str = "order-writer"
    use_bulk: bool = Field(True, description="Send order lines in one v2 bulk request instead of one per line.")
    quotes_in_flight: int = Field(
        16,
        ge=1,
        le=256,
        description="Quotes one order-writer works on at once (most of a quote's time is spent waiting for M3). A "
        "quote's messages stay in order; each partition is committed only up to its oldest unfinished quote. The "
        "tenant's rate budget in token-service, not this, bounds the calls to M3.",
    )
    state_pool_size: int = Field(
        16,
        ge=1,
        le=200,
        description="Connections order-writer keeps open to a PostgreSQL state store (up to 5 more for a burst): each "
        "quote in flight (M3B_QUOTES_IN_FLIGHT) writes the ledger between its M3 calls.",
    )
    order_lease_s: float = Field(
        30.0,
        ge=3,
        description="How long an order-writer holds a quote it works on without renewing it (it renews every third "
        "of this while working, and checks its fencing token before each M3 write): another replica takes over a "
        "quote whose worker crashed, froze or lost the state store after this long, and the old one stops before "
        "its next M3 write. The same replica (M3B_INSTANCE_ID) started again takes its quotes back at once.",
    )
    order_reconcile_interval_s: float = Field(
        86400.0,
        ge=0,
        description="How often the approvals recorded, the ledger and M3's orders are compared (one replica a period, "
        "over the last period and a half: one OIS100MI/GetHead per confirmed order, at the budget's bulk priority); "
        "differences are logged and counted in m3bridge_reconcile_differences. 0 turns the schedule off (POST "
        "/v1/orders/reconcile and `m3bridge reconcile` still run it).",
    )
    unknown_outcome_settle_s: float = Field(
        1.0,
        ge=0,
        description="After a write's answer was lost, wait this long before reading M3 to learn what it did (it may "
        "still be running).",
    )


def create_runtime(settings: OrderWriterSettings | None = None) -> ServiceRuntime:
    settings = settings or OrderWriterSettings()
    runtime = ServiceRuntime(
        settings,
        description="Turns approved quotes into confirmed M3 customer orders, creating customers first, exactly once.",
        uses_state=True,
    )
    rules: MappingRules = load_rules(config_path(settings.mapping_file))  # invalid rules stop the service at start
    customer_rules = load_sync_rules(config_path(settings.customer_sync_file))
    writer = StartedPart[OrderWriter](runtime.name)
    customers = StartedPart[CustomerSync](runtime.name)

    @runtime.on_startup
    async def start() -> None:
        m3 = m3_client_for(settings, runtime.http, audit=runtime.audit)
        writer.set(
            OrderWriter(
                m3,
                runtime.state,
                rules,
                use_bulk=settings.use_bulk,
                settle_s=settings.unknown_outcome_settle_s,
                # The replica's name: the same replica started again takes its quotes back at once; the fencing token
                # still stops any other process that thinks it holds them.
                owner=settings.instance_id,
                lease_s=settings.order_lease_s,
                matching=customer_rules.matching,
            )
        )
        customers.set(CustomerSync(writer(), runtime.state, customer_rules))
        if settings.order_reconcile_interval_s > 0:
            stop = asyncio.Event()
            runtime.in_background(
                reconcile_forever(runtime.state, m3, interval_s=settings.order_reconcile_interval_s, stop=stop),
                name="order-reconcile", stop=stop.set,
            )  # fmt: skip

    @runtime.subscriber(
        QUOTE_APPROVED,
        group="m3bridge.order-writer",
        # The offset is committed after the result (and any dead letter) is on the broker; a crash or a
        # retryable failure redelivers the quote, and the ledger makes the redelivery resume, not repeat.
        title="order-writer/approved-quotes",
        # Lanes commit each partition up to its oldest unfinished quote (faststream's ack policy does not apply).
        ack_policy=AckPolicy.MANUAL,
        in_flight=settings.quotes_in_flight,
        description="Approved quotes become confirmed M3 customer orders (OIS100MI batch entry).",
        on_give_up=lambda quote, failure: send_result(results.given_up(quote, failure)),
    )
    async def on_quote(quote: QuoteApproved, message: KafkaMessage) -> None:
        try:
            result = await writer().process(quote)
        except LeaseLostError as lost:
            # Another order-writer owns the quote now and publishes its result; this one only lets the message go.
            log.warning("%s; leaving the quote to its new owner", lost)
            return
        except RejectedError as rejected:
            result = results.refused(quote, rejected.problems)
            await runtime.dead_letter(message, error_class="rejected", problems=rejected.problems)
        else:
            if result.outcome == "held":
                await runtime.dead_letter(message, error_class="held", problems=result.problems)
        await crash_point("order-writer.before-result")
        await send_result(result)
        await crash_point("order-writer.before-commit")

    async def send_result(result: OrderResult) -> None:
        await runtime.publish(ORDER_RESULT, result, key=result.doc_no)

    @runtime.subscriber(
        QUOTEWERKS_CUSTOMER_CHANGED,
        group="m3bridge.order-writer.customers",
        # Committed once M3 has the customer or its dead letter (and work item) is on the broker; a transient
        # failure is tried again.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="order-writer/customer-changes",
        work_kind="new-customer",
        description="QuoteWerks customers M3 does not know yet found or created in M3 (CRS610MI) and linked.",
    )
    async def on_customer_change(event: QuoteWerksCustomerChanged, message: KafkaMessage) -> None:
        rejected = partial(runtime.dead_letter, message, error_class="customer-rejected")
        await settle_customer_change(customers().apply(event), change=f"QuoteWerks customer change "
                                     f"{event.customer_id}", dead_letter=rejected)  # fmt: skip

    read = [runtime.require("read")]  # M3B_READ_KEY (or M3B_OPERATOR_KEY): Authorization: Bearer <key> or X-API-Key

    @runtime.app.get("/v1/quotes/{doc_no}/trace", tags=["quotes"], summary="One quote's story", dependencies=read)
    async def quote_trace(doc_no: str = Path(min_length=1, max_length=50)) -> dict[str, Any]:
        """Approval claims, outbox, every revision's ledger entry, the customer, work items: with times."""
        return await trace(runtime.state, doc_no)

    operator = [runtime.require("operator")]

    @runtime.app.post("/v1/orders/reconcile", tags=["quotes"], summary="Reconcile orders now", dependencies=operator)
    async def reconcile_now(days: float = Query(1.0, gt=0, le=90)) -> dict[str, Any]:
        """Approvals recorded in the last `days` vs the ledger vs M3's orders (one GetHead per confirmed order);
        the report, also counted in m3bridge_reconcile_differences. Changes nothing."""
        since = datetime.now(UTC) - timedelta(days=days)
        return (await reconcile_orders(runtime.state, writer().m3, since=since)).as_dict()

    runtime.health.set_detail(
        "logic",
        {
            "mapping": str(settings.mapping_file),
            "bulk_lines": settings.use_bulk,
            "customer_sync": str(settings.customer_sync_file),
        },
    )
    return runtime
