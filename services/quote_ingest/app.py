"""quote-ingest wiring: the QuoteWerks webhook endpoint, the safety-net poller, order results written back."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime.
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from fastapi import Request
from fastapi.responses import JSONResponse
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from pydantic import Field, SecretStr

from services.quote_ingest.ingest import Ingest, IngestRules, settle_write_back, write_backs_total
from services.quote_ingest.poller import Poller
from services.quote_ingest.webhooks import WEBHOOK_BODY, answer_delivery
from shared.contracts import OrderResult, OrderStatusChanged
from shared.contracts.topics import ORDER_RESULT, ORDER_STATUS
from shared.platform.inbound import InboundAuth
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import QuoteWerksSettings
from shared.platform.started import StartedPart
from shared.quotewerks import QuoteWerks
from shared.quotewerks.connect import is_database_url, quotewerks_client
from shared.quotewerks.schema import DEFAULT_CHANGE_COLUMN

log = logging.getLogger(__name__)


class QuoteIngestSettings(QuoteWerksSettings):
    service_name: str = "quote-ingest"
    quotewerks_sql_change_column: str = Field(
        DEFAULT_CHANGE_COLUMN,
        min_length=1,
        description="DocumentHeaders column that changes whenever a document is saved (polling and optimistic "
        "concurrency of the write-back), for a database URL.",
    )
    quotewerks_sql_time_zone: str = Field(
        "UTC", description="Time zone the QuoteWerks database's change stamps are in (IANA name, e.g. Europe/Berlin)."
    )
    webhook_secret_header: str = Field(
        "X-M3Bridge-Webhook-Secret", description="Custom header the QuoteWerks webhook sends the shared secret in."
    )
    webhook_secret: SecretStr = Field(SecretStr(""), description="The shared secret QuoteWerks webhooks carry.")
    webhook_signature_header: str = Field(
        "X-M3Bridge-Signature", description="Header with `t=<unix>,v1=<hmac-sha256 hex>` from producers that sign."
    )
    webhook_signing_secret: SecretStr = Field(SecretStr(""), description="HMAC key for signed deliveries.")
    webhook_tolerance_s: float = Field(300.0, gt=0, description="How old a signed delivery may be.")
    webhook_max_bytes: int = Field(65_536, ge=1024, description="Largest webhook body accepted.")
    approval_events: list[str] = Field(
        default_factory=list,
        description='Webhook events that approve a quote whatever its DocStatus (e.g. `["QuoteValet.Accepted"]`). '
        "Empty by default: a webhook only says which quote to fetch, and it is ordered when its DocStatus is one of "
        "M3B_APPROVED_STATUSES.",
    )
    approved_statuses: list[str] = Field(
        default_factory=lambda: ["Accepted"],
        description="DocStatus values that mean approved (free text in QW, compared without case); a quote is ordered "
        "only in one of these, unless its webhook event is one of M3B_APPROVAL_EVENTS.",
    )
    poll_interval_s: float = Field(
        60.0,
        ge=0,
        description="Safety net behind the webhooks: look for approved quotes not yet published this often "
        "(default 60 s; 0 = webhooks only, an approval whose webhook is lost is then never ordered).",
    )
    poll_overlap_s: float = Field(
        300.0,
        ge=0,
        description="Each poll looks this far back before the newest change the previous poll saw (clock skew, "
        "late commits in QuoteWerks); what was published already is skipped without fetching it.",
    )
    poll_first_lookback_s: float = Field(
        86_400.0,
        ge=0,
        description="How far back the very first poll of a new state store looks for approved quotes.",
    )
    writeback_order_field: str = Field("CustomText01", description="Quote header field for the M3 order number.")
    writeback_status_field: str = Field("CustomText02", description="Quote header field for the M3 outcome text.")
    writeback_doc_status: str = Field("", description="DocStatus to set once the M3 order exists; empty = leave it.")


def create_runtime(settings: QuoteIngestSettings | None = None) -> ServiceRuntime:
    settings = settings or QuoteIngestSettings()
    runtime = ServiceRuntime(
        settings,
        description="Receives QuoteWerks approvals and customer changes, publishes them, writes order numbers back.",
        uses_state=True,
        uses_outbox=True,
    )
    auth = InboundAuth.from_settings(settings, "webhook", tolerance_s=settings.webhook_tolerance_s)
    quotewerks = StartedPart[QuoteWerks](runtime.name)
    ingest = StartedPart[Ingest](runtime.name)
    poller = StartedPart[Poller](runtime.name)

    @runtime.on_startup
    async def start() -> None:
        writable = {settings.writeback_order_field: False, settings.writeback_status_field: True}
        if settings.writeback_doc_status:
            writable["DocStatus"] = False
        quotewerks.set(
            quotewerks_client(
                settings.quotewerks_url,
                settings.quotewerks_api_key,
                http=runtime.http,
                needs=("documents",),
                writable=writable,
                change_column=settings.quotewerks_sql_change_column,
                time_zone=settings.quotewerks_sql_time_zone,
                sql_password=settings.quotewerks_sql_password,
                audit=runtime.audit,
            )
        )
        rules = IngestRules(
            approval_events=settings.approval_events,
            approved_statuses=settings.approved_statuses,
            order_number_field=settings.writeback_order_field,
            order_status_field=settings.writeback_status_field,
            created_doc_status=settings.writeback_doc_status,
        )
        ingest.set(Ingest(quotewerks(), runtime.state, runtime.outbox, rules))
        if settings.poll_interval_s > 0:
            poller.set(
                Poller(
                    ingest(),
                    runtime.state,
                    interval_s=settings.poll_interval_s,
                    overlap_s=settings.poll_overlap_s,
                    first_lookback_s=settings.poll_first_lookback_s,
                    webhooks=not is_database_url(settings.quotewerks_url),
                )
            )
            runtime.in_background(poller().run(), name="quotewerks-poller", stop=poller().stop)

    @runtime.on_shutdown
    async def stop() -> None:
        await quotewerks().aclose()

    @runtime.app.post(
        "/webhooks/quotewerks",
        tags=["webhooks"],
        summary="QuoteWerks webhook (QuoteValet.Accepted, status and customer changes)",
        responses={
            200: {"description": "ignored (not an approval), or this approval of this document was received before"},
            202: {"description": "accepted: the approval or change is recorded and published"},
            401: {"description": "not authenticated"},
        },
        openapi_extra=WEBHOOK_BODY,
    )
    async def webhook(request: Request) -> JSONResponse:
        status, answer = await answer_delivery(request, ingest, auth=auth, max_bytes=settings.webhook_max_bytes,
                                               service=settings.service_name)  # fmt: skip
        return JSONResponse(answer, status)

    async def write_back(
        message: KafkaMessage, doc_no: str, outcome: str, write: Callable[[], Awaitable[object]]
    ) -> None:
        dead_letter = partial(runtime.dead_letter, message, error_class="quotewerks")
        await settle_write_back(write, doc_no=doc_no, outcome=outcome, dead_letter=dead_letter)

    async def count_given_up() -> None:
        write_backs_total.labels("dead_lettered").inc()  # the consumer dead-lettered it after its attempts

    @runtime.subscriber(
        ORDER_RESULT,
        group="m3bridge.quote-ingest",
        # Committed once the quote is written back or the result's dead letter is on the broker.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="quote-ingest/order-results",
        description="Writes the M3 order number and outcome back onto the QuoteWerks quote.",
        on_give_up=lambda _result, _failure: count_given_up(),
    )
    async def on_order_result(result: OrderResult, message: KafkaMessage) -> None:
        await write_back(message, result.doc_no, result.outcome, lambda: ingest().write_back(result))

    @runtime.subscriber(
        ORDER_STATUS,
        group="m3bridge.quote-ingest.order-status",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="quote-ingest/order-status",
        description="Writes M3 order status changes (from SalesOrder BODs) onto the quote the order came from.",
        on_give_up=lambda _change, _failure: count_given_up(),
    )
    async def on_order_status(change: OrderStatusChanged, message: KafkaMessage) -> None:
        doc_no = change.customer_order_number or change.order_number
        await write_back(message, doc_no, "status", lambda: ingest().write_status(change))

    def logic() -> dict[str, object]:
        polling = poller.peek()
        return {"webhook": "/webhooks/quotewerks", "poller": polling.figures() if polling else "off"}

    runtime.health.set_detail("logic", logic)
    return runtime
