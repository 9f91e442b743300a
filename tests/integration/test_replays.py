"""`m3bridge dead-letters replay` remembers what it replayed (in the state store): a second replay of the same letter
is left out with a warning, and `--again` sends it once more. The letters here come from a topic of the test's
own, so the replays land there and nowhere else."""

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from m3bridge import dead_letters
from m3bridge.dead_letters import Found, replay_remembered
from shared.contracts import DeadLetter
from shared.platform.settings import BridgeSettings


def letter(topic: str, key: str) -> DeadLetter:
    return DeadLetter(
        service="order-writer", origin_topic=topic, origin_partition=0, origin_offset=7, original_key=key,
        original_payload=json.dumps({"DocNo": key}), error_class="held", error_message="item unknown", attempts=1,
        failed_at=datetime.now(UTC),
    )  # fmt: skip


async def keys_on(bootstrap: str, topic: str, expected: int) -> list[str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: list[str] = []
    try:
        async with asyncio.timeout(20):
            while len(found) < expected:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found += [(r.key or b"").decode() for r in records]
    finally:
        await consumer.stop()
    return found


async def test_a_replayed_letter_is_not_replayed_again_unless_asked(
    kafka_bootstrap: str, fresh_topic: str, tmp_path: Path
) -> None:
    settings = BridgeSettings(kafka_bootstrap_servers=kafka_bootstrap, service_name="m3bridge-cli",
                              state_url=f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")  # fmt: skip
    held = Found(partition=1, offset=int(uuid.uuid4().int % 10_000), letter=letter(fresh_topic, "AAAQ4242"))
    assert await replay_remembered(settings, "order-writer", [held], again=False, dry_run=False) == (1, [])
    sent, warnings = await replay_remembered(settings, "order-writer", [held], again=False, dry_run=False)
    assert sent == 0
    [warning] = warnings
    assert "replayed 1 time(s)" in warning
    assert "--again" in warning
    assert await replay_remembered(settings, "order-writer", [held], again=True, dry_run=True) == (1, [])
    assert await replay_remembered(settings, "order-writer", [held], again=True, dry_run=False) == (1, [])
    assert await keys_on(kafka_bootstrap, fresh_topic, 2) == ["AAAQ4242", "AAAQ4242"]
    assert dead_letters.letter_id("order-writer", held) == f"dlq.order-writer.v1:1:{held.offset}"
