"""shared.platform.consuming without a broker: decoding, retries and dead letters."""

import base64
from types import SimpleNamespace
from typing import Any

import pytest
from faststream import AckPolicy
from prometheus_client import REGISTRY

from shared.contracts import Heartbeat
from shared.platform.consuming import (
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
from shared.platform.dead_letters import dead_letter, payload_text
from tests.log_records import records_of
from tests.unit.consuming_doubles import (
    SMALL,
    FakeMessage,
    FlakyError,
    Letters,
    Order,
    RefusedError,
    Sleeps,
    consumer_for,
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
    with caplog.at_level("DEBUG", logger="shared.platform.consuming"):
        await consumer.consume(b"<xml/>", FakeMessage(b"<xml/>"))
    records = [r for r in caplog.records if r.name == "shared.platform.consuming"]
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
    assert letter["exception"].endswith("consuming_doubles.FlakyError")
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


async def test_a_handler_bug_is_dead_lettered_after_its_attempts_with_one_traceback() -> None:
    async def handler(_order: Order, _message: Any) -> None:
        raise KeyError("oops")

    letters = Letters()
    consumer = consumer_for(handler, letters, policy=RetryPolicy(max_attempts=2, initial_s=0.01, max_s=0.01))
    body = b'{"doc_no": "Q1", "quantity": 1}'
    # Its own handler on the module's logger: what other tests of the session did to the root logger does not matter.
    with records_of("shared.platform.consuming") as seen:
        await consumer.consume(body, FakeMessage(body))
    assert [letter["class"] for letter in letters.sent] == [RETRIES_EXHAUSTED]
    # The secret mask (shared.platform.logs), when a service's logging is set up, moves the traceback to exc_text.
    with_traceback = [r for r in seen if r.exc_info or r.exc_text]
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
