"""shared.consuming without a broker: decoding, retries, dead letters, progress for /healthz."""

import base64
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from faststream import AckPolicy
from prometheus_client import REGISTRY
from pydantic import BaseModel, ValidationError

from shared.consuming import (
    INVALID,
    NOT_RETRYABLE,
    RETRIES_EXHAUSTED,
    UNDECODABLE,
    Consumer,
    Consumers,
    Failure,
    PoisonMessageError,
    RetryPolicy,
    decode,
    is_retryable,
    raw_body,
)
from shared.contracts import DeadLetter, Heartbeat
from shared.dead_letters import dead_letter, payload_text
from shared.kafka import MessageTooLargeError
from shared.runtime import ServiceRuntime
from shared.settings import BridgeSettings
from shared.topics import Topic


class Order(BaseModel):
    doc_no: str
    quantity: int


class FlakyError(Exception):
    retryable = True


class RefusedError(Exception):
    retryable = False


@dataclass
class FakeMessage:
    body: bytes
    offset: int = 7
    headers: dict[str, str] = field(default_factory=lambda: {"correlation-id": "c-1"})
    correlation_id: str = "c-1"
    acked: int = 0

    @property
    def raw_message(self) -> SimpleNamespace:
        return SimpleNamespace(topic="orders.v1", partition=2, offset=self.offset, key=b"k-1")

    async def ack(self) -> None:
        self.acked += 1


@dataclass
class Letters:
    sent: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    async def __call__(
        self,
        message: Any,
        *,
        error_class: str,
        error_message: str,
        attempts: int,
        details: Mapping[str, Any] | None,
    ) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.sent.append(
            {"message": message, "class": error_class, "text": error_message, "attempts": attempts, **(details or {})}
        )


@dataclass
class Sleeps:
    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


SMALL = RetryPolicy(max_attempts=4, initial_s=0.1, max_s=0.3)


def consumer_for(
    handler: Any,
    letters: Letters,
    *,
    ack_policy: AckPolicy = AckPolicy.NACK_ON_ERROR,
    policy: RetryPolicy = SMALL,
    sleep: Sleeps | None = None,
    **extra: Any,
) -> Consumer:
    consumers = Consumers("svc", stall_after_s=30)
    name = f"svc/orders-{uuid.uuid4().hex[:8]}"  # the metrics' labels are process-wide
    extra.setdefault("model", Order)
    return Consumer(
        service="svc",
        subscriber=name,
        handler=handler,
        dead_letter=letters,
        ack_policy=ack_policy,
        policy=policy,
        progress=consumers.add(name, "orders.v1"),
        sleep=sleep or Sleeps(),
        **extra,
    )


# --- decoding ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error_class", "says"),
    [
        (b"not json at all", UNDECODABLE, "not JSON"),
        (b"\xff\xfe\x00garbage", UNDECODABLE, "not UTF-8"),
        (b"", UNDECODABLE, "empty"),
        (b'{"doc_no": "Q1"}', INVALID, "quantity: Field required"),
        (b'{"doc_no": "Q1", "quantity": "many"}', INVALID, "quantity: Input should be a valid integer"),
        (b"[1, 2]", INVALID, "not a valid Order"),
    ],
)
def test_undecodable_and_invalid_bodies_are_told_apart(body: bytes, error_class: str, says: str) -> None:
    with pytest.raises(PoisonMessageError) as raised:
        decode(Order, body)
    assert raised.value.failure.error_class == error_class
    assert says in raised.value.failure.error_message
    assert raised.value.failure.details["model"] == "Order"


def test_validation_errors_are_listed_by_field() -> None:
    with pytest.raises(PoisonMessageError) as raised:
        decode(Order, b'{"quantity": "x"}')
    errors = raised.value.failure.details["errors"]
    assert {e["loc"] for e in errors} == {"doc_no", "quantity"}
    assert "2 validation errors" in raised.value.failure.error_message


def test_a_valid_body_is_the_model() -> None:
    assert decode(Order, b'{"doc_no": "Q1", "quantity": 3}') == Order(doc_no="Q1", quantity=3)


async def test_the_faststream_decoder_hands_over_the_bytes_as_received() -> None:
    assert await raw_body(SimpleNamespace(body=b"\xff{")) == b"\xff{"
    assert await raw_body(SimpleNamespace(body=None)) == b""


def test_dead_letters_keep_non_utf8_bodies_as_base64() -> None:
    assert payload_text(b'{"a": "\xc3\xa9"}') == ('{"a": "\u00e9"}', "utf-8")
    text, encoding = payload_text(b"\xff\x00\x80")
    assert encoding == "base64"
    assert base64.b64decode(text) == b"\xff\x00\x80"
    letter = dead_letter(
        FakeMessage(b"\xff\x00\x80"),  # type: ignore[arg-type]
        service="svc",
        error_class=UNDECODABLE,
        error_message="not UTF-8",
        attempts=1,
    )
    assert letter.original_payload_encoding == "base64"
    assert base64.b64decode(letter.original_payload) == b"\xff\x00\x80"
    assert (letter.origin_topic, letter.origin_partition, letter.origin_offset) == ("orders.v1", 2, 7)


def test_retryable_is_what_the_exception_says_and_retried_when_it_says_nothing() -> None:
    assert is_retryable(FlakyError())
    assert not is_retryable(RefusedError())
    assert is_retryable(RuntimeError("database away"))
    assert not is_retryable(KeyboardInterrupt())


# --- the consumer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"\x80\x81", b'{"doc_no": "Q1"}', b'{"doc_no": 1, "quantity": []}'])
async def test_poison_is_dead_lettered_at_once_and_the_handler_never_runs(body: bytes) -> None:
    calls: list[Order] = []

    async def handler(order: Order, _message: Any) -> None:
        calls.append(order)

    letters = Letters()
    consumer = consumer_for(handler, letters)
    message = FakeMessage(body)
    assert await consumer.consume(body, message) is None
    assert calls == []
    [letter] = letters.sent
    assert letter["message"] is message
    assert letter["class"] in (UNDECODABLE, INVALID)
    assert letter["attempts"] == 1
    assert consumer.progress.dead_lettered == 1
    assert consumer.progress.started is None  # finished: the partition moves on


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"doc_no": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_000 + b', "quantity": 1}',
        b'{"doc_no": "Q1", "quantity": 1, "extra": ' + b"[" * 300 + b"]" * 300 + b"}",
    ],
)
async def test_deeply_nested_json_is_dead_lettered_at_once_not_retried(body: bytes) -> None:
    # The JSON parser's nesting limit makes it undecodable: one dead letter, no RecursionError, no retry loop.
    async def handler(_order: Order, _message: Any) -> None:
        raise AssertionError("never called")

    letters = Letters()
    consumer = consumer_for(handler, letters)
    assert await consumer.consume(body, FakeMessage(body)) is None
    [letter] = letters.sent
    assert letter["class"] == UNDECODABLE
    assert letter["attempts"] == 1
    assert "recursion limit" in letter["text"]
    assert len(letter["text"]) < 1000  # the reason, not the payload


async def test_poison_counts_one_dead_letter_and_logs_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(_order: Order, _message: Any) -> None:
        raise AssertionError("never called")

    consumer = consumer_for(handler, Letters())
    with caplog.at_level("DEBUG", logger="shared.consuming"):
        await consumer.consume(b"<xml/>", FakeMessage(b"<xml/>"))
    records = [r for r in caplog.records if r.name == "shared.consuming"]
    assert len(records) == 1
    assert not records[0].exc_info
    assert "orders.v1[2]@7" in records[0].getMessage()
    assert "undecodable" in records[0].getMessage()


async def test_a_valid_message_is_handled_and_its_reply_returned() -> None:
    async def handler(order: Order, _message: Any) -> str:
        return f"ok {order.doc_no}"

    letters = Letters()
    consumer = consumer_for(handler, letters)
    body = b'{"doc_no": "Q9", "quantity": 1}'
    assert await consumer.consume(body, FakeMessage(body)) == "ok Q9"
    assert letters.sent == []
    assert consumer.progress.handled == 1


async def test_retryable_failures_are_retried_with_growing_waits_until_one_succeeds() -> None:
    attempts: list[int] = []

    async def handler(order: Order, _message: Any) -> str:
        attempts.append(order.quantity)
        if len(attempts) < 3:
            raise FlakyError("M3 answered 503")
        return "done"

    letters, sleeps = Letters(), Sleeps()
    consumer = consumer_for(handler, letters, policy=RetryPolicy(max_attempts=5, initial_s=1, max_s=100), sleep=sleeps)
    body = b'{"doc_no": "Q1", "quantity": 1}'
    assert await consumer.consume(body, FakeMessage(body)) == "done"
    assert len(attempts) == 3
    assert letters.sent == []
    assert consumer.progress.retried == 2
    # initial 1 s, then 2 s, each plus up to 1 s of jitter
    assert len(sleeps.waits) == 2
    assert 1 <= sleeps.waits[0] <= 2
    assert 2 <= sleeps.waits[1] <= 3


async def test_a_message_that_keeps_failing_is_dead_lettered_after_the_attempt_limit() -> None:
    calls = 0

    async def handler(_order: Order, _message: Any) -> None:
        nonlocal calls
        calls += 1
        raise FlakyError(f"M3 answered 503 (call {calls})")

    letters, sleeps = Letters(), Sleeps()
    policy = RetryPolicy(max_attempts=4, initial_s=0.1, max_s=0.25)
    consumer = consumer_for(handler, letters, policy=policy, sleep=sleeps)
    body = b'{"doc_no": "Q1", "quantity": 1}'
    assert await consumer.consume(body, FakeMessage(body)) is None
    assert calls == 4
    assert len(sleeps.waits) == 3
    assert all(wait <= 0.25 for wait in sleeps.waits)
    [letter] = letters.sent
    assert letter["class"] == RETRIES_EXHAUSTED
    assert letter["attempts"] == 4
    assert letter["text"] == "FlakyError: M3 answered 503 (call 4)"
    assert letter["exception"].endswith("test_consuming.FlakyError")
    retries = REGISTRY.get_sample_value(
        "m3bridge_message_retries_total", {"service": "svc", "subscriber": consumer.subscriber}
    )
    assert retries == 3


async def test_a_failure_that_says_it_is_not_retryable_is_dead_lettered_at_once() -> None:
    calls = 0

    async def handler(_order: Order, _message: Any) -> None:
        nonlocal calls
        calls += 1
        raise RefusedError("authorization denied for OIS100MI")

    letters, sleeps = Letters(), Sleeps()
    consumer = consumer_for(handler, letters, sleep=sleeps)
    body = b'{"doc_no": "Q1", "quantity": 1}'
    await consumer.consume(body, FakeMessage(body))
    assert calls == 1
    assert sleeps.waits == []
    assert [(letter["class"], letter["attempts"]) for letter in letters.sent] == [(NOT_RETRYABLE, 1)]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_handler_bug_is_dead_lettered_after_its_attempts_with_one_traceback() -> None:
    async def handler(_order: Order, _message: Any) -> None:
        raise KeyError("oops")

    letters = Letters()
    consumer = consumer_for(handler, letters, policy=RetryPolicy(max_attempts=2, initial_s=0.01, max_s=0.01))
    body = b'{"doc_no": "Q1", "quantity": 1}'
    # Its own handler on the module's logger: what other tests of the session did to the root logger does not matter.
    # (An earlier in-process test of the session leaves this logger disabled, e.g. a logging config with
    # disable_existing_loggers; enabled here for the test's own handler, then put back.)
    logger, seen = logging.getLogger("shared.consuming"), Records()
    was_disabled, logger.disabled = logger.disabled, False
    logger.addHandler(seen)
    try:
        await consumer.consume(body, FakeMessage(body))
    finally:
        logger.removeHandler(seen)
        logger.disabled = was_disabled
    assert [letter["class"] for letter in letters.sent] == [RETRIES_EXHAUSTED]
    # The secret mask (shared.logs), when a service's logging is set up, moves the traceback to exc_text.
    with_traceback = [r for r in seen.records if r.exc_info or r.exc_text]
    assert len(with_traceback) == 1


async def test_stopping_while_retrying_leaves_the_message_uncommitted() -> None:
    stopping = False

    async def handler(_order: Order, _message: Any) -> None:
        nonlocal stopping
        stopping = True  # the service is told to stop while this attempt runs
        raise FlakyError("M3 answered 503")

    letters = Letters()
    consumer = consumer_for(handler, letters, stopping=lambda: stopping)
    body = b'{"doc_no": "Q1", "quantity": 1}'
    with pytest.raises(FlakyError):
        await consumer.consume(body, FakeMessage(body))
    assert letters.sent == []


async def test_a_dead_letter_that_cannot_be_sent_raises_so_the_message_is_redelivered() -> None:
    async def handler(_order: Order, _message: Any) -> None:
        raise AssertionError("never called")

    consumer = consumer_for(handler, Letters(fail=True))
    with pytest.raises(ConnectionError):
        await consumer.consume(b"nope", FakeMessage(b"nope"))
    assert consumer.progress.dead_lettered == 0


async def test_manual_subscribers_are_acknowledged_after_a_dead_letter() -> None:
    async def handler(_order: Order, _message: Any) -> None:
        raise AssertionError("never called")

    consumer = consumer_for(handler, Letters(), ack_policy=AckPolicy.MANUAL)
    message = FakeMessage(b"nope")
    await consumer.consume(b"nope", message)
    assert message.acked == 1


async def test_a_requester_is_answered_when_its_request_is_dead_lettered() -> None:
    async def handler(_order: Order, _message: Any) -> str:
        raise AssertionError("never called")

    def answer(message: Any, failure: Failure) -> str:
        return f"{message.correlation_id}: {failure.error_class}: {failure.error_message}"

    letters = Letters()
    consumer = consumer_for(handler, letters, reply_on_failure=answer)
    reply = await consumer.consume(b'{"doc_no": "Q1"}', FakeMessage(b'{"doc_no": "Q1"}'))
    assert reply.startswith("c-1: invalid: not a valid Order")
    assert len(letters.sent) == 1


async def test_a_valid_message_given_up_on_is_announced_after_its_dead_letter() -> None:
    told: list[tuple[Any, Failure, int]] = []
    letters = Letters()

    async def handler(_order: Order, _message: Any) -> None:
        raise FlakyError("M3 answered 503")

    async def notice(order: Order, failure: Failure) -> None:
        told.append((order, failure, len(letters.sent)))

    consumer = consumer_for(handler, letters, on_give_up=notice)
    body = b'{"doc_no": "Q7", "quantity": 2}'
    assert await consumer.consume(body, FakeMessage(body)) is None
    [(order, failure, letters_before)] = told
    assert order == Order(doc_no="Q7", quantity=2)
    assert (failure.error_class, failure.attempts) == (RETRIES_EXHAUSTED, SMALL.max_attempts)
    assert letters_before == 1  # the dead letter is on the broker before anyone is told

    told.clear()
    assert await consumer.consume(b"not json", FakeMessage(b"not json")) is None
    assert told == []  # nothing to announce about a message that is not a valid payload


async def test_a_notice_that_fails_does_not_redeliver_a_dead_lettered_message() -> None:
    async def handler(_order: Order, _message: Any) -> None:
        raise RefusedError("no such item")

    async def notice(_order: Order, _failure: Failure) -> None:
        raise ConnectionError("broker gone")

    letters = Letters()
    consumer = consumer_for(handler, letters, on_give_up=notice)
    body = b'{"doc_no": "Q8", "quantity": 1}'
    assert await consumer.consume(body, FakeMessage(body)) is None
    assert [letter["class"] for letter in letters.sent] == [NOT_RETRYABLE]


async def test_without_dead_letters_poison_is_skipped_and_counted() -> None:
    async def handler(_beat: Heartbeat, _message: Any) -> None:
        raise AssertionError("never called")

    letters = Letters()
    consumers = Consumers("svc-hb", stall_after_s=30)
    consumer = Consumer(
        service="svc-hb",
        subscriber="svc-hb/heartbeats",
        model=Heartbeat,
        handler=handler,
        dead_letter=letters,
        ack_policy=AckPolicy.ACK_FIRST,
        policy=RetryPolicy(max_attempts=1),
        progress=consumers.add("svc-hb/heartbeats", "orders.v1"),
        dead_letters=False,
    )
    await consumer.consume(b"garbage", FakeMessage(b"garbage"))
    assert letters.sent == []
    labels = {"service": "svc-hb", "topic": "orders.v1", "error_class": UNDECODABLE}
    assert REGISTRY.get_sample_value("m3bridge_messages_discarded_total", labels) == 1


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
    return ServiceRuntime(
        BridgeSettings(service_name=name, kafka_bootstrap_servers="127.0.0.1:1"), title=name, description="test"
    )


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
        consumers = (await http.get("/healthz")).json()["consumers"]
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

    monkeypatch.setattr("shared.runtime.send_to_dead_letters", send)
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
