"""inventory-query's answer logic with a fake M3: cache TTL, single flight, inventory events, stale answers; its
Kafka replies sent through shared.platform.kafka's publish path."""

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from pydantic import SecretStr, ValidationError

from services.inventory_query.app import InventoryQuerySettings
from services.inventory_query.availability import (
    Availability,
    LastKnown,
    NotFoundError,
    PriceReading,
    StockReading,
    UnavailableError,
    UnreachableError,
    calls_saved,
)
from services.inventory_query.messages import AvailabilityAnswer, AvailabilityQuery, BatchQuery, LineProblem
from services.inventory_query.replies import REPLIES_COUNTED_AS, Replier, ReplyTopicRefusedError, replies_refused
from shared.contracts import AvailabilityRequest, InventoryChanged, PriceChanged
from shared.platform.consuming import INVALID, UNDECODABLE, Failure
from shared.platform.correlation import KAFKA_HEADER
from shared.platform.kafka import MessageTooLargeError
from shared.platform.metrics import messages_published

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeM3:
    def __init__(self) -> None:
        self.stock_calls = 0
        self.price_calls = 0
        self.on_hand = Decimal(40)
        self.allocatable = Decimal(30)
        self.down = False
        self.hang = False
        self.delay_s = 0.0

    async def stock(self, item: str, warehouse: str) -> StockReading:
        self.stock_calls += 1
        await self._wait()
        if item == "NOSUCH":
            raise NotFoundError(f"Item number {item} does not exist")
        return StockReading(self.on_hand, self.allocatable)

    async def price(self, item: str) -> PriceReading:
        self.price_calls += 1
        await self._wait()
        if item == "NOSUCH":
            return PriceReading(None, None, "no price")
        return PriceReading(Decimal("12.50"), "EUR")

    async def _wait(self) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.down:
            raise UnreachableError("transient: connection failed: ConnectError")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def m3() -> FakeM3:
    return FakeM3()


@pytest.fixture
def service(m3: FakeM3, clock: Clock) -> Availability:
    return Availability(m3, ttl_s=30, deadline_s=0.2, outage_backoff_s=0, clock=clock)


def q(item: str = "ITM000001", warehouse: str = "100", quantity: str = "5") -> AvailabilityQuery:
    return AvailabilityQuery(item=item, warehouse=warehouse, quantity=Decimal(quantity))


async def test_first_answer_comes_from_m3_the_next_from_the_cache(service: Availability, m3: FakeM3) -> None:
    first = await service.check(q())
    assert (first.source, first.on_hand, first.allocatable, first.available) == ("m3", 40, 30, True)
    assert (first.price, first.currency, first.as_of, first.age_s) == (Decimal("12.50"), "EUR", T0, 0)
    second = await service.check(q(quantity="31"))
    assert (second.source, second.available) == ("cache", False)
    assert (m3.stock_calls, m3.price_calls) == (1, 1)


async def test_after_the_ttl_m3_is_asked_again(service: Availability, m3: FakeM3, clock: Clock) -> None:
    await service.check(q())
    clock.advance(29)
    assert (await service.check(q())).source == "cache"
    clock.advance(2)
    m3.on_hand = Decimal(7)
    answer = await service.check(q())
    assert (answer.source, answer.on_hand, answer.as_of) == ("m3", 7, T0 + timedelta(seconds=31))
    assert m3.stock_calls == 2


async def test_stock_is_cached_per_item_and_warehouse_price_per_item(service: Availability, m3: FakeM3) -> None:
    await service.check(q(warehouse="100"))
    await service.check(q(warehouse="200"))
    assert (m3.stock_calls, m3.price_calls) == (2, 1)


async def test_fifty_concurrent_requests_make_one_m3_call(service: Availability, m3: FakeM3) -> None:
    m3.delay_s = 0.05
    saved_before = calls_saved.labels("stock")._value.get()
    answers = await asyncio.gather(*(service.check(q()) for _ in range(50)))
    assert {a.on_hand for a in answers} == {Decimal(40)}
    assert (m3.stock_calls, m3.price_calls) == (1, 1)
    assert calls_saved.labels("stock")._value.get() - saved_before == 49


async def test_a_caller_giving_up_does_not_cancel_the_shared_read(service: Availability, m3: FakeM3) -> None:
    m3.delay_s = 0.05
    impatient = asyncio.ensure_future(service.check(q()))
    patient = asyncio.ensure_future(service.check(q()))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert (await patient).source == "m3"
    assert m3.stock_calls == 1


async def test_an_inventory_event_replaces_the_cached_figures(service: Availability, m3: FakeM3, clock: Clock) -> None:
    await service.check(q())
    clock.advance(5)
    event = InventoryChanged(
        item_number="ITM000001", warehouse="100", on_hand=Decimal(3), allocatable=Decimal(2), changed_at=clock()
    )
    assert service.apply_change(event)
    answer = await service.check(q())
    assert (answer.source, answer.on_hand, answer.allocatable, answer.available) == ("cache", 3, 2, False)
    assert m3.stock_calls == 1  # the event's figures were taken, not merely the old ones dropped


async def test_an_event_older_than_the_cached_figure_changes_nothing(service: Availability, clock: Clock) -> None:
    clock.advance(10)
    await service.check(q())
    late = InventoryChanged(
        item_number="ITM000001", warehouse="100", on_hand=Decimal(1), allocatable=Decimal(1), changed_at=T0
    )
    assert not service.apply_change(late)
    assert (await service.check(q())).on_hand == 40


async def test_an_event_for_an_unasked_item_primes_the_cache(service: Availability, m3: FakeM3) -> None:
    event = InventoryChanged(
        item_number="ITM000009", warehouse="300", on_hand=Decimal(9), allocatable=Decimal(8), changed_at=T0
    )
    service.apply_change(event)
    answer = await service.check(q(item="ITM000009", warehouse="300"))
    assert (answer.on_hand, answer.source) == (9, "cache")
    assert m3.stock_calls == 0


async def test_event_from_a_clock_ahead_of_ours_is_not_kept_forever(service: Availability, clock: Clock) -> None:
    event = InventoryChanged(
        item_number="ITM000001", warehouse="100", on_hand=Decimal(1), allocatable=Decimal(1),
        changed_at=T0 + timedelta(hours=1),
    )  # fmt: skip
    service.apply_change(event)
    clock.advance(31)
    assert (await service.check(q())).source == "m3"


async def test_m3_down_answers_the_last_known_figure_as_stale_with_its_age(
    service: Availability, m3: FakeM3, clock: Clock
) -> None:
    await service.check(q())
    clock.advance(95)
    m3.down = True
    answer = await service.check(q())
    assert (answer.source, answer.on_hand, answer.as_of, answer.age_s) == ("stale", 40, T0, 95.0)
    assert answer.price == Decimal("12.50")


async def test_m3_too_slow_is_stale_within_the_deadline(service: Availability, m3: FakeM3, clock: Clock) -> None:
    await service.check(q())
    clock.advance(60)
    m3.hang = True
    started = asyncio.get_running_loop().time()
    answer = await service.check(q())
    assert answer.source == "stale"
    assert asyncio.get_running_loop().time() - started < 1


async def test_nothing_known_and_m3_down_is_unavailable_with_the_reason(service: Availability, m3: FakeM3) -> None:
    m3.down = True
    with pytest.raises(UnavailableError, match="connection failed"):
        await service.check(q())


async def test_after_a_failure_known_figures_are_answered_without_waiting_for_m3(m3: FakeM3, clock: Clock) -> None:
    service = Availability(m3, ttl_s=30, deadline_s=0.2, outage_backoff_s=5, clock=clock)
    await service.check(q())
    clock.advance(40)
    m3.down = True
    assert (await service.check(q())).source == "stale"
    calls = m3.stock_calls
    assert (await service.check(q())).source == "stale"
    assert m3.stock_calls == calls  # within the back-off M3 is not asked
    clock.advance(6)
    m3.down = False
    assert (await service.check(q())).source == "m3"


async def test_prices_come_from_the_price_list_until_its_next_read_and_events_keep_them_current(
    m3: FakeM3, clock: Clock
) -> None:
    """The whole list read once answers every item's price (no GetBasePrice per item) for the list's own TTL, longer
    than the stock's; a price event of the list replaces one price; another list's or a customer's does not."""
    service = Availability(m3, ttl_s=30, price_ttl_s=660, deadline_s=0.2, outage_backoff_s=0, clock=clock)
    prices = {f"ITM{n:06d}": PriceReading(Decimal(n), "EUR") for n in range(1, 11)}
    assert service.apply_price_list(prices, clock()) == 10
    answers = [await service.check(q(item)) for item in prices]
    assert [a.price for a in answers] == [Decimal(n) for n in range(1, 11)]
    assert (m3.stock_calls, m3.price_calls) == (10, 0)
    clock.advance(300)  # stock expired, the list's prices not
    assert (await service.check(q("ITM000003"))).price == Decimal(3)
    assert (m3.stock_calls, m3.price_calls) == (11, 0)

    def change(price: str, **more: str) -> PriceChanged:
        fields = {"price_list": "STD", "currency": "EUR", **more}
        return PriceChanged(item_number="ITM000003", sales_price=Decimal(price), changed_at=clock(), **fields)

    assert not service.apply_price_change(change("99", price_list="OTHER"), price_list="STD", currency="EUR")
    assert not service.apply_price_change(change("98", customer_number="C000001"), price_list="STD", currency="EUR")
    assert service.apply_price_change(change("7.25"), price_list="STD", currency="EUR")
    assert (await service.check(q("ITM000003"))).price == Decimal("7.25")
    clock.advance(400)  # past the list's TTL: asked of M3 again
    assert (await service.check(q("ITM000004"))).price == Decimal("12.50")
    assert m3.price_calls == 1


async def test_a_failed_price_list_read_leaves_prices_to_be_read_per_item(m3: FakeM3, clock: Clock) -> None:
    from services.inventory_query.availability import read_price_lists

    class Unreachable:
        async def price_list(self) -> dict[str, PriceReading]:
            stop.set()
            raise UnreachableError("transient: connection failed")

    service = Availability(m3, ttl_s=30, price_ttl_s=660, deadline_s=0.2, outage_backoff_s=0, clock=clock)
    stop = asyncio.Event()
    await read_price_lists(service, Unreachable(), interval_s=3600, stop=stop)
    assert (await service.check(q())).price == Decimal("12.50")
    assert m3.price_calls == 1


async def test_price_missing_still_answers_the_stock(service: Availability, m3: FakeM3) -> None:
    async def no_price(item: str) -> PriceReading:
        raise UnreachableError("throttled: 429")

    m3.price = no_price  # type: ignore[method-assign]
    answer = await service.check(q())
    assert (answer.on_hand, answer.price, answer.source) == (40, None, "m3")
    assert answer.price_note is not None
    assert "429" in answer.price_note


async def test_unknown_item_is_not_found_with_m3s_message(service: Availability) -> None:
    with pytest.raises(NotFoundError, match="Item number NOSUCH does not exist"):
        await service.check(q(item="NOSUCH"))


async def test_a_batch_answers_every_line_in_order(service: Availability, m3: FakeM3) -> None:
    results = await service.check_many([q(), q(item="NOSUCH"), q(warehouse="200", quantity="100"), q()])
    assert [r.outcome for r in results] == ["answered", "not_found", "answered", "answered"]
    assert isinstance(results[1], LineProblem)
    assert "does not exist" in results[1].detail
    assert isinstance(results[2], AvailabilityAnswer)
    assert not results[2].available
    assert m3.stock_calls == 3  # the repeated line shared the first one's read


async def test_a_batch_line_without_any_figure_is_unavailable(service: Availability, m3: FakeM3) -> None:
    await service.check(q())
    m3.down = True
    results = await service.check_many([q(), q(warehouse="200")])
    assert [r.outcome for r in results] == ["answered", "unavailable"]


@pytest.mark.parametrize(
    "line",
    [
        {"item": "X" * 16, "warehouse": "100", "quantity": "1"},
        {"item": "ITM1", "warehouse": "1000", "quantity": "1"},
        {"item": "ITM1", "warehouse": "100", "quantity": "0"},
        {"item": "ITM1", "warehouse": "100", "quantity": "-2"},
        {"item": "", "warehouse": "100", "quantity": "1"},
    ],
)
def test_batch_lines_are_validated(line: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        BatchQuery.model_validate({"lines": [line]})


def test_a_batch_holds_one_to_a_hundred_lines() -> None:
    line = {"item": "ITM1", "warehouse": "100", "quantity": "1"}
    BatchQuery.model_validate({"lines": [line] * 100})
    for size in (0, 101):
        with pytest.raises(ValidationError):
            BatchQuery.model_validate({"lines": [line] * size})


def test_last_known_drops_the_least_recently_used() -> None:
    from services.inventory_query.availability import Figure

    known: LastKnown[str, int] = LastKnown(2)
    known.put("a", Figure(1, T0))
    known.put("b", Figure(2, T0))
    known.get("a")
    known.put("c", Figure(3, T0))
    assert (known.get("a"), known.get("b")) == (Figure(1, T0), None)
    assert len(known) == 2


async def test_http_api_validates_and_documents() -> None:
    from services.inventory_query.app import create_runtime

    runtime = create_runtime(InventoryQuerySettings(kafka_bootstrap_servers="127.0.0.1:1", read_key=SecretStr("rk")))
    transport = httpx.ASGITransport(app=runtime.app)  # no lifespan: validation answers before any logic runs
    headers = {"Authorization": "Bearer rk"}
    async with httpx.AsyncClient(transport=transport, base_url="http://service", headers=headers) as client:
        too_long = await client.get("/v1/availability/" + "X" * 16, params={"warehouse": "100"})
        assert too_long.status_code == 422
        assert "at most 15" in too_long.text
        zero = await client.get("/v1/availability/ITM1", params={"warehouse": "100", "quantity": "0"})
        assert zero.status_code == 422
        assert "greater than 0" in zero.text
        no_warehouse = await client.get("/v1/availability/ITM1")
        assert no_warehouse.status_code == 422
        assert "warehouse" in no_warehouse.text
        assert (await client.post("/v1/availability", json={"lines": []})).status_code == 422
        assert (await client.get("/openapi.json")).status_code == 404  # served only with M3B_HTTP_DOCS=true
        spec = runtime.app.openapi()
        health = (await client.get("/healthz")).json()
    get = spec["paths"]["/v1/availability/{item}"]["get"]
    assert {"200", "401", "404", "422", "503"} <= set(get["responses"])
    assert get["security"] == [{"bearerKey": ["read"]}, {"apiKey": ["read"]}]
    assert "AvailabilityAnswer" in spec["components"]["schemas"]
    assert health["logic"]["cache_ttl_s"] == 30


@dataclass
class Request:
    """What the replier reads of a consumed request."""

    reply_to: str
    correlation_id: str


class FakeBroker:
    """Records what is published."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def publish(self, body: bytes, **options: Any) -> None:
        self.published.append({"body": body, **options})


def replier(broker: FakeBroker, max_bytes: int = 1_048_576) -> Replier:
    return Replier(cast(KafkaBroker, broker), max_bytes=max_bytes, allowed_prefix="requester.replies")


def request(reply_to: str = "requester.replies.v1", correlation_id: str = "corr-1") -> KafkaMessage:
    return cast(KafkaMessage, Request(reply_to, correlation_id))


async def test_a_reply_is_published_to_reply_to_with_the_correlation_id_and_counted(service: Availability) -> None:
    broker = FakeBroker()
    counted = messages_published.labels(REPLIES_COUNTED_AS, "ok")  # one series whatever the requester's topic
    before = counted._value.get()
    await replier(broker).answer(service, AvailabilityRequest(lines=[q(), q(item="NOSUCH")]), request())
    [sent] = broker.published
    assert (sent["topic"], sent["key"]) == ("requester.replies.v1", b"corr-1")
    assert sent["headers"] == {"content-type": "application/json", KAFKA_HEADER: "corr-1"}
    reply = json.loads(sent["body"])
    assert reply["correlation_id"] == "corr-1"
    assert [line["outcome"] for line in reply["lines"]] == ["answered", "not_found"]
    assert counted._value.get() - before == 1


async def test_a_reply_over_the_size_limit_is_refused_before_anything_is_sent(service: Availability) -> None:
    broker = FakeBroker()
    with pytest.raises(MessageTooLargeError):
        await replier(broker, max_bytes=100).answer(service, AvailabilityRequest(lines=[q()]), request())
    assert broker.published == []


async def test_a_failed_request_is_refused_on_its_reply_to_topic() -> None:
    broker = FakeBroker()
    await replier(broker).refuse(request(correlation_id="corr-2"), Failure(UNDECODABLE, "not JSON", attempts=1))
    [sent] = broker.published
    reply = json.loads(sent["body"])
    assert (sent["topic"], reply["correlation_id"], reply["lines"]) == ("requester.replies.v1", "corr-2", [])
    assert reply["error"] == "not an availability request: not JSON"


async def test_a_request_without_reply_to_is_answered_to_nobody(service: Availability) -> None:
    broker = FakeBroker()
    await replier(broker).answer(service, AvailabilityRequest(lines=[q()]), request(reply_to=""))
    assert broker.published == []


@pytest.mark.parametrize("reply_to", ["quotewerks.quote.approved.v1", "m3.order.result.v1", "dlq.order-writer.v1"])
async def test_a_reply_to_outside_the_reply_prefix_gets_nothing_written_there(
    service: Availability, reply_to: str
) -> None:
    """inventory-query writes replies with its own credentials: a requester must not be able to make it put a message
    on the bridge's own topics. The request is refused before M3 is asked, and its refusal is not sent there either."""
    broker = FakeBroker()
    refused_before = replies_refused._value.get()
    with pytest.raises(ReplyTopicRefusedError, match="not a reply topic"):
        await replier(broker).answer(service, AvailabilityRequest(lines=[q()]), request(reply_to=reply_to))
    await replier(broker).refuse(request(reply_to=reply_to), Failure(INVALID, "no"))
    assert broker.published == []
    assert replies_refused._value.get() == refused_before + 1
    assert not ReplyTopicRefusedError.retryable


def test_the_reply_prefix_may_not_cover_a_topic_of_the_bridge() -> None:
    for prefix in ("quotewerks.", "dlq.", "inventory.availability.re", "m3"):
        with pytest.raises(ValidationError, match="starts with it"):
            InventoryQuerySettings(reply_topic_prefix=prefix)
    assert InventoryQuerySettings().reply_topic_prefix == "inventory.availability.reply."
