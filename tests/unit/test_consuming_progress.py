"""shared.platform.consuming without a broker: progress for /healthz and the stalled gauge, the backoff settings, raw
subscribers, and the runtime's wiring of consumers (healthz, oversized dead letters)."""

import asyncio
import time
from typing import Any

import httpx
import pytest
from faststream import AckPolicy
from prometheus_client import REGISTRY
from pydantic import SecretStr, ValidationError

from shared.contracts import DeadLetter
from shared.contracts.topics import Topic
from shared.platform.consuming import (
    NOT_RETRYABLE,
    RETRIES_EXHAUSTED,
    UNDECODABLE,
    Consumer,
    Consumers,
    RetryPolicy,
)
from shared.platform.kafka import MessageTooLargeError
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import BridgeSettings
from tests.unit.consuming_doubles import (
    FakeMessage,
    FlakyError,
    Letters,
    Order,
    RefusedError,
    Sleeps,
    consumer_for,
)

# --- progress: what /healthz and the gauge show --------------------------------------------------------


async def test_a_subscriber_retrying_or_stuck_on_one_message_is_listed_as_stalled() -> None:
    now = [1000.0]
    consumers = Consumers("svc-stall", stall_after_s=60, clock=lambda: now[0])
    seen: list[dict[str, Any]] = []

    async def handler(_order: Order, _message: Any) -> None:
        now[0] += 5
        seen.append(consumers.describe())
        if len(seen) < 2:
            raise FlakyError("once")

    progress = consumers.add("svc-stall/orders", "orders.v1")
    consumer = Consumer(
        service="svc-stall",
        subscriber="svc-stall/orders",
        model=Order,
        handler=handler,
        dead_letter=Letters(),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        policy=RetryPolicy(max_attempts=3, initial_s=0.01, max_s=0.01),
        progress=progress,
        sleep=Sleeps(),
    )
    assert consumers.describe()["stalled"] == []
    await consumer.consume(b'{"doc_no": "Q1", "quantity": 1}', FakeMessage(b""))
    first, retrying = seen
    assert first["stalled"] == []  # first attempt, 5 s in
    assert first["subscribers"]["svc-stall/orders"]["state"] == "handling"
    assert retrying["stalled"] == ["svc-stall/orders"]  # second attempt: not advancing
    assert retrying["subscribers"]["svc-stall/orders"]["state"] == "retrying"
    assert retrying["subscribers"]["svc-stall/orders"]["busy_s"] == 10.0

    done = consumers.describe()
    assert done["stalled"] == []
    assert done["subscribers"]["svc-stall/orders"]["state"] == "idle"
    assert done["subscribers"]["svc-stall/orders"]["handled"] == 1
    assert (
        REGISTRY.get_sample_value(
            "m3bridge_consumer_busy_seconds", {"service": "svc-stall", "subscriber": "svc-stall/orders"}
        )
        == 0.0
    )

    # A single attempt that takes longer than stall_after_s is stalled too, and the gauge shows it.
    async def slow(_order: Order, _message: Any) -> None:
        now[0] += 61
        seen.append(consumers.describe())
        seen.append(
            {
                "gauge": REGISTRY.get_sample_value(
                    "m3bridge_consumer_busy_seconds", {"service": "svc-stall", "subscriber": "svc-stall/orders"}
                )
            }
        )

    consumer.handler = slow
    await consumer.consume(b'{"doc_no": "Q2", "quantity": 2}', FakeMessage(b""))
    assert seen[-2]["stalled"] == ["svc-stall/orders"]
    assert seen[-1]["gauge"] == 61.0


def test_one_name_per_subscriber() -> None:
    consumers = Consumers("svc-dup", stall_after_s=1)
    consumers.add("svc-dup/a", "t")
    with pytest.raises(ValueError, match="twice"):
        consumers.add("svc-dup/a", "t")


# --- settings ----------------------------------------------------------------------------------------------


def test_default_backoff_stays_well_under_the_poll_interval() -> None:
    settings = BridgeSettings()
    assert settings.consumer_max_attempts == 8
    assert settings.consumer_backoff_initial_s < settings.consumer_backoff_max_s


def test_backoff_settings_that_could_outlast_the_poll_interval_are_refused() -> None:
    with pytest.raises(ValidationError, match="M3B_CONSUMER_MAX_ATTEMPTS"):
        BridgeSettings(consumer_max_attempts=30, consumer_backoff_max_s=60)
    BridgeSettings(consumer_max_attempts=30, consumer_backoff_initial_s=0.01, consumer_backoff_max_s=0.05)


async def test_a_raw_subscriber_gets_the_bytes_unvalidated_and_its_failures_are_still_dead_lettered() -> None:
    received: list[bytes] = []

    async def handler(body: bytes, _message: Any) -> None:
        received.append(body)
        if body.startswith(b"<bad"):
            raise RefusedError("not a BOD")

    letters = Letters()
    consumer = consumer_for(handler, letters, model=None)
    await consumer.consume(b"<SyncItemMaster/>", FakeMessage(b"<SyncItemMaster/>"))
    await consumer.consume(b"<bad\xff", FakeMessage(b"<bad\xff"))
    assert received == [b"<SyncItemMaster/>", b"<bad\xff"]
    assert [letter["class"] for letter in letters.sent] == [NOT_RETRYABLE]


# --- the runtime's wiring --------------------------------------------------------------------------------


def runtime_for(name: str) -> ServiceRuntime:
    settings = BridgeSettings(service_name=name, kafka_bootstrap_servers="127.0.0.1:1", read_key=SecretStr("rk"))
    return ServiceRuntime(settings, title=name, description="test")


async def test_healthz_lists_every_subscriber_and_the_stalled_ones() -> None:
    runtime = runtime_for("svc-healthz")

    @runtime.subscriber(
        Topic("orders.v1", Order, "doc_no", "orders"),
        group="g",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="svc-healthz/orders",
        description="orders",
    )
    async def on_order(_order: Order, _message: Any) -> None:
        return None

    transport = httpx.ASGITransport(app=runtime.app)  # no lifespan: nothing consumed
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        consumers = (await http.get("/healthz", headers={"Authorization": "Bearer rk"})).json()["consumers"]
    assert set(consumers["subscribers"]) == {"svc-healthz/heartbeats", "svc-healthz/orders"}
    assert consumers["stalled"] == []
    assert consumers["subscribers"]["svc-healthz/orders"]["state"] == "idle"


async def test_a_dead_letter_too_large_for_the_topic_is_kept_without_the_payload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = runtime_for("svc-large")
    sent: list[DeadLetter] = []

    async def send(_broker: Any, letter: DeadLetter, *, max_bytes: int) -> None:
        if len(letter.original_payload) > max_bytes:
            raise MessageTooLargeError("too large")
        sent.append(letter)

    monkeypatch.setattr("shared.platform.dead_lettering.send_to_dead_letters", send)
    body = b"\xff" * runtime.settings.kafka_max_request_size  # base64 makes it larger still
    await runtime.dead_letter(
        FakeMessage(body),  # type: ignore[arg-type]
        error_class=UNDECODABLE,
        error_message="not UTF-8",
    )
    [letter] = sent
    assert letter.original_payload == ""
    assert letter.details["payload_omitted"].startswith(f"{len(body)} bytes")
    assert (letter.origin_topic, letter.origin_offset, letter.error_class) == ("orders.v1", 7, UNDECODABLE)


async def test_a_message_whose_time_budget_runs_out_is_cancelled_and_dead_lettered() -> None:
    """One slow attempt (a call that hangs) is cancelled when the message's budget is spent, and no new attempt
    starts after it: the message never outlives the consumer's max.poll.interval."""
    started = 0

    async def handler(_order: Order, _message: Any) -> None:
        nonlocal started
        started += 1
        await asyncio.Event().wait()  # an M3 call that never answers

    letters = Letters()
    policy = RetryPolicy(max_attempts=8, initial_s=0.01, max_s=0.02, budget_s=0.3)
    consumer = consumer_for(handler, letters, policy=policy)
    body = b'{"doc_no": "Q1", "quantity": 1}'
    began = time.monotonic()
    assert await consumer.consume(body, FakeMessage(body)) is None
    assert time.monotonic() - began < 5  # bounded by the budget, not by the hanging call
    assert started == 1
    [letter] = letters.sent
    assert letter["class"] == RETRIES_EXHAUSTED
    assert letter["text"] == "TimeBudgetSpentError: the message's time budget of 0.3s ran out during attempt 1"


def test_a_message_budget_at_or_over_the_poll_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="M3B_CONSUMER_MESSAGE_BUDGET_S"):
        BridgeSettings(consumer_message_budget_s=300, kafka_max_poll_interval_ms=300_000)
