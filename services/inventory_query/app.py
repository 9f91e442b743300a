"""inventory-query wiring: availability and price over HTTP and Kafka request/reply, a short cache kept current
by inventory events, M3 asked at interactive priority."""

# No `from __future__ import annotations`: faststream and FastAPI read the handler signatures at runtime.
import asyncio
import logging
from datetime import date
from decimal import Decimal
from typing import Annotated

from fastapi import HTTPException, Path, Query
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from pydantic import Field, field_validator

from services.inventory_query.availability import (
    Availability,
    InvalidQueryError,
    NotFoundError,
    UnavailableError,
    read_price_lists,
)
from services.inventory_query.m3_reader import M3Reader
from services.inventory_query.messages import (
    MAX_BATCH,
    REQUEST,
    REQUEST_TOPIC,
    AvailabilityAnswer,
    AvailabilityQuery,
    AvailabilityRequest,
    BatchAnswer,
    BatchQuery,
    ErrorBody,
)
from services.inventory_query.replies import Replier
from shared.contracts import InventoryChanged, PriceChanged
from shared.contracts.topics import ALL_TOPICS, INVENTORY_CHANGED, PRICE_CHANGED
from shared.m3 import m3_client_for
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import M3CallerSettings
from shared.platform.started import StartedPart

log = logging.getLogger(__name__)


class InventoryQuerySettings(M3CallerSettings):
    service_name: str = "inventory-query"
    cache_ttl_s: float = Field(30.0, gt=0, description="How long a stock or price figure is answered from cache.")
    answer_deadline_s: float = Field(
        2.0, gt=0, description="Longest a rep waits for M3 (lease and retries included) before the last known figure."
    )
    outage_backoff_s: float = Field(
        5.0, ge=0, description="After M3 failed to answer, answer from what is known this long before asking again."
    )
    last_known_max_entries: int = Field(
        100_000, ge=1, description="Figures kept (least recently used dropped) to answer with while M3 is away."
    )
    price_list: str = Field("STD", min_length=1, max_length=10, description="M3 price list (PRRF) of base prices.")
    price_currency: str = Field("EUR", min_length=1, max_length=3, description="Currency (CUCD) of the price list.")
    price_valid_from: date | None = Field(
        None, description="From-date (FVDT) of the price list to read; empty means the one valid today."
    )
    price_list_read_interval_s: float = Field(
        600.0,
        ge=0,
        description="Every this many seconds (and at start) the whole price list is read in one call "
        "(OIS017MI/LstBasePrice, bulk priority) and prices are answered from it until the next read plus a minute; "
        "price change events (m3.price.changed.v1) keep them current in between. 0: each item's price is read when "
        "asked (OIS017MI/GetBasePrice) and cached M3B_CACHE_TTL_S.",
    )
    reply_topic_prefix: str = Field(
        "inventory.availability.reply.",
        pattern=r"^[A-Za-z0-9._-]{2,200}$",
        description="Kafka availability replies go only to a `reply_to` topic whose name starts with this; a request "
        "naming another topic is dead-lettered unanswered, so no requester can make inventory-query write onto the "
        "bridge's own topics. No topic of the bridge may start with it.",
    )

    @field_validator("reply_topic_prefix")
    @classmethod
    def _not_a_bridge_topic(cls, prefix: str) -> str:
        taken = [topic.name for topic in ALL_TOPICS if topic.name.startswith(prefix)]
        if taken:
            raise ValueError(f"the bridge's own topic {taken[0]} starts with it: replies could be written there")
        return prefix


def create_runtime(settings: InventoryQuerySettings | None = None) -> ServiceRuntime:
    settings = settings or InventoryQuerySettings()
    runtime = ServiceRuntime(
        settings, description="Answers live availability and price checks in milliseconds without hammering M3."
    )
    availability = StartedPart[Availability](runtime.name)

    @runtime.on_startup
    async def start() -> None:
        m3 = m3_client_for(settings, runtime.http, deadline_s=settings.answer_deadline_s)
        reader = M3Reader(
            m3,
            price_list=settings.price_list,
            currency=settings.price_currency,
            price_valid_from=settings.price_valid_from,
        )
        list_read = settings.price_list_read_interval_s
        availability.set(
            Availability(
                reader,
                ttl_s=settings.cache_ttl_s,
                price_ttl_s=max(settings.cache_ttl_s, list_read + 60) if list_read > 0 else None,
                deadline_s=settings.answer_deadline_s,
                max_entries=settings.last_known_max_entries,
                outage_backoff_s=settings.outage_backoff_s,
            )
        )
        if list_read > 0:
            stop = asyncio.Event()
            runtime.in_background(read_price_lists(availability(), reader, interval_s=list_read, stop=stop),
                                  name="price-list", stop=stop.set)  # fmt: skip

    # --- HTTP ----------------------------------------------------------------------------------------------

    retry_after = str(max(1, round(settings.outage_backoff_s)))
    problems: dict[int | str, dict[str, object]] = {
        404: {"model": ErrorBody, "description": "M3 does not know the item or warehouse (M3's message)."},
        503: {"model": ErrorBody, "description": "M3 cannot answer now and no figure is known (the reason)."},
    }
    read = [runtime.require("read")]  # M3B_READ_KEY (or M3B_OPERATOR_KEY): Authorization: Bearer <key> or X-API-Key

    @runtime.app.get(
        "/v1/availability/{item}",
        response_model=AvailabilityAnswer,
        responses=problems,
        tags=["availability"],
        summary="Availability and price of one item in one warehouse",
        dependencies=read,
    )
    async def one(
        item: Annotated[str, Path(min_length=1, max_length=15, description="M3 item number.")],
        warehouse: Annotated[str, Query(min_length=1, max_length=3, description="M3 warehouse.")],
        quantity: Annotated[Decimal, Query(gt=0, description="Quantity wanted.")] = Decimal(1),
    ) -> AvailabilityAnswer:
        query = AvailabilityQuery(item=item, warehouse=warehouse, quantity=quantity)
        try:
            return await availability().check(query)
        except NotFoundError as exc:
            raise HTTPException(404, detail=str(exc)) from None
        except InvalidQueryError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        except UnavailableError as exc:
            raise HTTPException(503, detail=str(exc), headers={"Retry-After": retry_after}) from None

    @runtime.app.post(
        "/v1/availability",
        response_model=BatchAnswer,
        tags=["availability"],
        summary=f"Availability and price of up to {MAX_BATCH} lines",
        description="One result per line, in order: an answer, or why the line has none (not_found, unavailable).",
        dependencies=read,
    )
    async def many(batch: BatchQuery) -> BatchAnswer:
        return BatchAnswer(lines=await availability().check_many(batch.lines))

    # --- Kafka ---------------------------------------------------------------------------------------------

    @runtime.subscriber(
        INVENTORY_CHANGED,
        # No group: every replica keeps its own cache, so every replica must see every change (a group would
        # split the events between them). Nothing is committed; a restarted replica reads the history again.
        group=None,
        ack_policy=AckPolicy.MANUAL,
        title="inventory-query/inventory-changed",
        description="Stock changes in M3 replace the cached figures of that item and warehouse.",
    )
    async def on_inventory_changed(event: InventoryChanged, _message: KafkaMessage) -> None:
        availability().apply_change(event)

    @runtime.subscriber(
        PRICE_CHANGED,
        group=None,  # as stock changes: every replica's cache sees every price change
        ack_policy=AckPolicy.MANUAL,
        title="inventory-query/price-changed",
        description="Price changes of the configured list and currency replace the cached price of that item.",
    )
    async def on_price_changed(event: PriceChanged, _message: KafkaMessage) -> None:
        availability().apply_price_change(event, price_list=settings.price_list, currency=settings.price_currency)

    replier = Replier(runtime.broker, max_bytes=settings.kafka_max_request_size,
                      allowed_prefix=settings.reply_topic_prefix)  # fmt: skip

    @runtime.subscriber(
        REQUEST,
        group="m3bridge.inventory-query.requests",
        # A request is answered once or not at all: the requester times out and asks again. One attempt (the M3
        # client retries within the answer deadline); an unreadable or failed request is dead-lettered and answered
        # with the reason.
        ack_policy=AckPolicy.ACK,
        max_attempts=1,
        reply_on_failure=replier.refuse,
        # The replier publishes the reply itself (through shared.platform.kafka); faststream's own would bypass it.
        no_reply=True,
        title="inventory-query/availability-requests",
        description="Availability requests; the reply goes to the request's `reply_to` topic.",
    )
    async def on_request(request: AvailabilityRequest, message: KafkaMessage) -> None:
        await replier.answer(availability(), request, message)

    static = {
        "cache_ttl_s": settings.cache_ttl_s,
        "answer_deadline_s": settings.answer_deadline_s,
        "outage_backoff_s": settings.outage_backoff_s,
        "last_known_max_entries": settings.last_known_max_entries,
        "stock": "MMS200MI/GetItmWhsBal",
        "price": f"OIS017MI/GetBasePrice {settings.price_list} {settings.price_currency}",
        "request_topic": REQUEST_TOPIC,
    }

    def logic() -> dict[str, object]:
        answering = availability.peek()
        return {**static, **answering.describe()} if answering else static

    runtime.health.set_detail("logic", logic)
    return runtime
