"""`m3bridge dead-letters list|replay`: what a service could not process (or held), and sending it again.

Replaying re-publishes the original message, key and headers to the topic it came from; the consuming
service's idempotency (the order ledger) makes a replay of something already done a no-op. Every replayed letter is
remembered in the state store (M3B_STATE_URL, as the services use it): replaying it again is refused with a warning
unless `--again` says it is meant.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from m3bridge.local_run import BrokerNotFoundError, cli_settings
from shared.contracts import DeadLetter
from shared.contracts.topics import BOD_INBOUND, Topic, dead_letter_topic, topic_named
from shared.platform.kafka import REPLAY_HEADER, aiokafka_client_options, create_broker, publish_raw
from shared.platform.settings import BridgeSettings
from shared.platform.state import db
from shared.platform.state.models import ReplayedLetter


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


def letter_id(service: str, found: Found) -> str:
    """A dead letter's identity: where it sits in its service's dead-letter topic."""
    return f"{dead_letter_topic(service).name}:{found.partition}:{found.offset}"


class ReplayMemory:
    """Which dead letters were replayed, when and how often (table `replayed_letters`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def replayed(self, ids: list[str]) -> dict[str, ReplayedLetter]:
        if not ids:
            return {}
        async with self.sessions() as session:
            rows = await session.execute(select(ReplayedLetter).where(ReplayedLetter.letter_id.in_(ids)))
            return {row.letter_id: row for row in rows.scalars()}

    async def remember(self, replayed_id: str, topic: str) -> None:
        async with self.sessions.begin() as session:
            row = await session.get(ReplayedLetter, replayed_id, with_for_update=True)
            if row is None:
                session.add(ReplayedLetter(letter_id=replayed_id, replayed_to=topic, times=1))
            else:
                row.times, row.replayed_at, row.replayed_to = row.times + 1, datetime.now(UTC), topic


async def replay_remembered(
    settings: BridgeSettings, service: str, letters: list[Found], *, again: bool, dry_run: bool
) -> tuple[int, list[str]]:
    """Replay the letters not replayed before (all of them with `again`), remembering each once it is on the
    broker. Returns how many were (or would be) sent and a warning line per letter left out."""
    await db.migrate(settings.state_dsn())
    engine = db.create_engine(settings.state_dsn())
    try:
        memory = ReplayMemory(engine)
        before = await memory.replayed([letter_id(service, found) for found in letters])
        warnings, chosen = [], []
        for found in letters:
            earlier = before.get(letter_id(service, found))
            if earlier is not None and not again:
                warnings.append(f"not replayed: {letter_id(service, found)} (key {found.letter.original_key!r}) was "
                                f"replayed {earlier.times} time(s), last at {earlier.replayed_at}; --again sends it "
                                "once more")  # fmt: skip
                continue
            chosen.append(found)
        if dry_run:
            return len(chosen), warnings
        for found in chosen:
            await replay(settings, service, [found])
            await memory.remember(letter_id(service, found), replay_topic(found.letter).name)
        return len(chosen), warnings
    finally:
        await engine.dispose()


def run(
    command: str, service: str, key: str | None, error_class: str | None, dry_run: bool, again: bool = False
) -> int:
    try:
        settings = cli_settings(needs_broker=True)
        every = asyncio.run(read_all(settings, service))
    except BrokerNotFoundError as missing:
        print(missing, file=sys.stderr)
        return 2
    except KafkaError as unreachable:
        print(f"cannot read the dead letters from {settings.kafka_bootstrap_servers} (M3B_KAFKA_BOOTSTRAP_SERVERS): "
              f"{unreachable}", file=sys.stderr)  # fmt: skip
        return 2
    letters = [f for f in every if matches(f, key=key, error_class=error_class)]
    for found in letters:
        print(describe(found))
    if command == "list":
        print(f"{len(letters)} dead letters")
        return 0
    count, warnings = asyncio.run(replay_remembered(settings, service, letters, again=again, dry_run=dry_run))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{'would replay' if dry_run else 'replayed'} {count} messages"
          + (f" ({len(warnings)} replayed before, left out)" if warnings else ""))  # fmt: skip
    return 0
