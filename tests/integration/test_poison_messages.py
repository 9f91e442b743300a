"""Poison never loops, against the real (Tansu) broker: a ServiceRuntime subscriber dead-letters what it cannot
decode or keeps failing on, commits past it, and goes on with the next message on the same partition."""

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from pydantic import BaseModel

from services.inventory_query.app import InventoryQuerySettings, create_runtime
from services.inventory_query.messages import REQUEST_TOPIC
from shared.contracts.topics import Topic, dead_letter_topic, ensure_topics
from shared.platform.consuming import INVALID, RETRIES_EXHAUSTED, UNDECODABLE
from shared.platform.correlation import KAFKA_HEADER
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import BridgeSettings

WAIT_S = 30


class Line(BaseModel):
    sku: str
    quantity: int


class FlakyError(Exception):
    retryable = True


async def new_runtime(bootstrap: str, **settings: Any) -> ServiceRuntime:
    """A runtime with a dead-letter topic of its own, so the test reads only its own letters."""
    name = f"poison-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, partitions=1, replication=1, topics=(dead_letter_topic(name),))
    return ServiceRuntime(
        BridgeSettings(service_name=name, kafka_bootstrap_servers=bootstrap, heartbeat_interval_s=60, **settings),
        title=name,
        description="poison message test",
    )


@contextlib.asynccontextmanager
async def running(runtime: ServiceRuntime) -> AsyncIterator[None]:
    async with runtime.app.router.lifespan_context(runtime.app):
        yield


async def produce(bootstrap: str, topic: str, bodies: list[bytes]) -> list[int]:
    """Each body to partition 0, in order; returns their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        offsets = []
        for n, body in enumerate(bodies):
            headers = [("content-type", b"application/json"), (KAFKA_HEADER, f"poison-{n}".encode())]
            sent = await producer.send_and_wait(topic, body, key=f"k{n}".encode(), partition=0, headers=headers)
            offsets.append(sent.offset)
        return offsets
    finally:
        await producer.stop()


async def read_letters(
    bootstrap: str, topic: str, count: int, match: Callable[[dict[str, Any]], bool] = lambda _letter: True
) -> list[dict[str, Any]]:
    """The first `count` dead letters on `topic` that `match`."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    letters: list[dict[str, Any]] = []
    try:

        async def collect() -> None:
            while len(letters) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        letter = json.loads(record.value)
                        if match(letter):
                            letters.append(letter)

        await asyncio.wait_for(collect(), WAIT_S)
    finally:
        await consumer.stop()
    return letters


async def committed(bootstrap: str, group: str, topic: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()


async def test_undecodable_and_invalid_messages_are_dead_lettered_and_the_partition_moves_on(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    runtime = await new_runtime(kafka_bootstrap)
    group = f"g-{fresh_topic}"
    handled: list[Line] = []
    valid_seen = asyncio.Event()

    @runtime.subscriber(
        Topic(fresh_topic, Line, "sku", "test lines"),
        group=group,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="poison/lines",
        description="lines",
    )
    async def on_line(line: Line, _message: KafkaMessage) -> None:
        handled.append(line)
        valid_seen.set()

    bodies = [
        b"this is not JSON",  # (a)
        b"\xff\xfe\x80 not UTF-8",  # (b)
        b'{"sku": "A-1"}',  # (c) quantity missing
        b'{"sku": "A-1", "quantity": "a dozen"}',  # (d) wrong type
        b'{"sku": "A-2", "quantity": 3}',  # valid, after all of them on the same partition
    ]
    async with running(runtime):
        offsets = await produce(kafka_bootstrap, fresh_topic, bodies)
        await asyncio.wait_for(valid_seen.wait(), WAIT_S)
        health = runtime.health.liveness()["consumers"]
    # Stopped: the broker drained the subscriber, so the valid message's commit is done.
    assert handled == [Line(sku="A-2", quantity=3)]
    assert await committed(kafka_bootstrap, group, fresh_topic) == offsets[-1] + 1

    letters = await read_letters(kafka_bootstrap, dead_letter_topic(runtime.name).name, 4)
    by_offset = {letter["origin_offset"]: letter for letter in letters}
    assert sorted(by_offset) == offsets[:4]
    not_json, not_utf8, missing, wrong_type = (by_offset[offset] for offset in offsets[:4])
    for letter, body in zip((not_json, not_utf8, missing, wrong_type), bodies, strict=False):
        assert letter["service"] == runtime.name
        assert letter["origin_partition"] == 0
        assert letter["attempts"] == 1
        raw = (
            base64.b64decode(letter["original_payload"])
            if letter["original_payload_encoding"] == "base64"
            else letter["original_payload"].encode()
        )
        assert raw == body
    assert (not_json["error_class"], not_json["original_payload_encoding"]) == (UNDECODABLE, "utf-8")
    assert "not JSON" in not_json["error_message"]
    assert (not_utf8["error_class"], not_utf8["original_payload_encoding"]) == (UNDECODABLE, "base64")
    assert "not UTF-8" in not_utf8["error_message"]
    assert missing["error_class"] == INVALID
    assert "quantity: Field required" in missing["error_message"]
    assert wrong_type["error_class"] == INVALID
    assert "quantity: Input should be a valid integer" in wrong_type["error_message"]
    assert missing["original_key"] == "k2"
    assert missing["original_headers"][KAFKA_HEADER] == "poison-2"

    progress = health["subscribers"]["poison/lines"]
    assert (progress["handled"], progress["dead_lettered"], health["stalled"]) == (5, 4, [])


async def test_a_message_that_keeps_failing_is_dead_lettered_after_its_attempts_and_the_next_is_processed(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    runtime = await new_runtime(
        kafka_bootstrap, consumer_max_attempts=3, consumer_backoff_initial_s=0.01, consumer_backoff_max_s=0.05
    )
    group = f"g-{fresh_topic}"
    attempts: list[str] = []
    stalled_while_retrying: list[list[str]] = []
    next_seen = asyncio.Event()

    @runtime.subscriber(
        Topic(fresh_topic, Line, "sku", "test lines"),
        group=group,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="poison/failing",
        description="lines",
    )
    async def on_line(line: Line, _message: KafkaMessage) -> None:
        attempts.append(line.sku)
        if line.sku == "BAD":
            stalled_while_retrying.append(runtime.health.liveness()["consumers"]["stalled"])
            raise FlakyError(f"M3 answered 503 (attempt {len(attempts)})")
        next_seen.set()

    async with running(runtime):
        offsets = await produce(
            kafka_bootstrap, fresh_topic, [b'{"sku": "BAD", "quantity": 1}', b'{"sku": "NEXT", "quantity": 1}']
        )
        await asyncio.wait_for(next_seen.wait(), WAIT_S)
    assert attempts == ["BAD", "BAD", "BAD", "NEXT"]
    assert stalled_while_retrying == [[], ["poison/failing"], ["poison/failing"]]
    assert await committed(kafka_bootstrap, group, fresh_topic) == offsets[-1] + 1

    [letter] = await read_letters(kafka_bootstrap, dead_letter_topic(runtime.name).name, 1)
    assert letter["origin_offset"] == offsets[0]
    assert letter["error_class"] == RETRIES_EXHAUSTED
    assert letter["attempts"] == 3
    assert letter["error_message"] == "FlakyError: M3 answered 503 (attempt 3)"
    assert letter["details"]["exception"].endswith(".FlakyError")
    assert json.loads(letter["original_payload"]) == {"sku": "BAD", "quantity": 1}


async def test_an_unreadable_availability_request_is_dead_lettered_and_answered(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    """inventory-query's request/reply subscriber: the requester gets the reason, the request a dead letter."""
    runtime = create_runtime(InventoryQuerySettings(kafka_bootstrap_servers=kafka_bootstrap, heartbeat_interval_s=60,
                                                    reply_topic_prefix="test."))  # fmt: skip
    correlation_id = uuid.uuid4().hex
    replies = AIOKafkaConsumer(fresh_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await replies.start()
    try:
        async with running(runtime):
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                sent = await producer.send_and_wait(
                    REQUEST_TOPIC,
                    b"\x00\x01 how many widgets?",
                    headers=[
                        ("content-type", b"application/json"),
                        ("reply_to", fresh_topic.encode()),
                        ("correlation_id", correlation_id.encode()),
                    ],
                )
            finally:
                await producer.stop()
            reply = await asyncio.wait_for(replies.getone(), WAIT_S)
    finally:
        await replies.stop()
    answer = json.loads(reply.value)
    assert answer["correlation_id"] == correlation_id
    assert answer["lines"] == []
    assert answer["error"].startswith("not an availability request: not JSON")

    [letter] = await read_letters(
        kafka_bootstrap,
        dead_letter_topic("inventory-query").name,
        1,
        lambda letter: (
            (letter["origin_topic"], letter["origin_partition"], letter["origin_offset"])
            == (REQUEST_TOPIC, sent.partition, sent.offset)
        ),
    )
    assert letter["error_class"] == UNDECODABLE
    assert letter["original_payload"] == "\x00\x01 how many widgets?"
