"""`m3bridge dead-letters list|replay`: what a service could not process (or held), and sending it again.

Replaying re-publishes the original message, key and headers to the topic it came from; the consuming
service's idempotency (the order ledger) makes a replay of something already done a no-op.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from shared.contracts import DeadLetter
from shared.kafka import aiokafka_client_options, create_broker
from shared.settings import BridgeSettings
from shared.topics import dead_letter_topic

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


async def replay(settings: BridgeSettings, service: str, selected: list[Found]) -> int:
    broker = create_broker(settings)
    async with broker:
        await broker.start()
        for item in selected:
            letter = item.letter
            headers = {
                **letter.original_headers,
                REPLAY_HEADER: f"{dead_letter_topic(service).name}:{item.partition}:{item.offset}",
            }
            await broker.publish(
                letter.original_payload.encode(),
                topic=letter.origin_topic,
                key=(letter.original_key or "").encode() or None,
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
