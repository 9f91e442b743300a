"""`m3bridge dead-letters list|replay`: what a service could not process (or held), and sending it again.

Replaying re-publishes the original message, key and headers to the topic it came from; the consuming
service's idempotency (the order ledger) makes a replay of something already done a no-op.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from shared.contracts import DeadLetter
from shared.kafka import aiokafka_client_options, create_broker, publish_raw
from shared.settings import BridgeSettings
from shared.topics import BOD_INBOUND, Topic, dead_letter_topic, topic_named

REPLAY_HEADER = "m3bridge-replayed-from"


@dataclass(frozen=True)
class Found:
    partition: int
    offset: int
    letter: DeadLetter


async def read_all(settings: BridgeSettings, service: str, *, idle_s: float = 2.0) -> list[Found]:
    """Every dead letter of `service`, oldest first. Reads until the topic stays quiet for `idle_s` (end offsets
    are not trusted: the embedded broker reports them wrong)."""
    topic = dead_letter_topic(service).name
    consumer = AIOKafkaConsumer(**aiokafka_client_options(settings), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.topics()  # refresh metadata once
            partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return []
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        found: list[Found] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            batches = await consumer.getmany(timeout_ms=250)
            for records in batches.values():
                for record in records:
                    quiet_since = time.monotonic()
                    try:
                        letter = DeadLetter.model_validate_json(record.value or b"")
                    except ValidationError:
                        continue  # not ours; never crash a listing on one bad record
                    found.append(Found(record.partition, record.offset, letter))
        return sorted(found, key=lambda f: f.letter.failed_at)
    finally:
        await consumer.stop()


def matches(found: Found, *, key: str | None, error_class: str | None) -> bool:
    return (key is None or found.letter.original_key == key) and (
        error_class is None or found.letter.error_class == error_class
    )


# Where dead letters from before a topic existed came from, and the topic they are replayed to now.
LEGACY_ORIGINS = {"http:/bods": BOD_INBOUND.name}


def original_bytes(letter: DeadLetter) -> bytes:
    """The original message body as it was received (base64 decoded when the letter says it holds base64)."""
    if getattr(letter, "original_payload_encoding", "utf-8") == "base64":
        return base64.b64decode(letter.original_payload)
    return letter.original_payload.encode()


def replay_topic(letter: DeadLetter) -> Topic:
    """The topic a dead letter is replayed to: where it came from (a registered topic, or one the bridge does not
    declare, such as a producer's own; the broker refuses an unknown one)."""
    name = LEGACY_ORIGINS.get(letter.origin_topic, letter.origin_topic)
    return topic_named(name) or Topic(name, DeadLetter, "original key", "not a registered topic")


async def replay(settings: BridgeSettings, service: str, selected: list[Found]) -> int:
    """Re-publish each selected dead letter's original message, key and headers to its origin topic, through the
    one publish path (size limit, headers, counts)."""
    broker = create_broker(settings)
    async with broker:
        await broker.start()
        for item in selected:
            letter = item.letter
            headers = {
                **letter.original_headers,
                REPLAY_HEADER: f"{dead_letter_topic(service).name}:{item.partition}:{item.offset}",
            }
            await publish_raw(
                broker,
                replay_topic(letter),
                original_bytes(letter),
                key=letter.original_key or None,
                max_bytes=settings.kafka_max_request_size,
                headers=headers,
            )
    return len(selected)


def describe(found: Found) -> str:
    letter = found.letter
    return json.dumps(
        {
            "failed_at": letter.failed_at.isoformat(),
            "key": letter.original_key,
            "error_class": letter.error_class,
            "error": letter.error_message[:300],
            "origin": f"{letter.origin_topic}[{letter.origin_partition}]@{letter.origin_offset}",
            "dlq_offset": f"{found.partition}@{found.offset}",
        }
    )


def run(command: str, service: str, key: str | None, error_class: str | None, dry_run: bool) -> int:
    settings = BridgeSettings(service_name="m3bridge-cli")
    letters = [f for f in asyncio.run(read_all(settings, service)) if matches(f, key=key, error_class=error_class)]
    for found in letters:
        print(describe(found))
    if command == "list":
        print(f"{len(letters)} dead letters")
        return 0
    if dry_run:
        print(f"would replay {len(letters)} messages")
        return 0
    count = asyncio.run(replay(settings, service, letters))
    print(f"replayed {count} messages")
    return 0
