"""shared.platform.lanes without a broker: per-key order, concurrency, commits up to the lowest unfinished offset,
pauses, rewinds, rebalances and draining, against a consumer double that records what aiokafka would be asked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from shared.platform.lanes import Lanes

TOPIC = "quotes.v1"
P0 = TopicPartition(TOPIC, 0)
P1 = TopicPartition(TOPIC, 1)


@dataclass
class FakeConsumer:
    assigned: set[TopicPartition] = field(default_factory=lambda: {P0, P1})
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    paused_now: set[TopicPartition] = field(default_factory=set)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_now |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_now -= set(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_now)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def committed_offset(self, tp: TopicPartition) -> int | None:
        offsets = [c[tp] for c in self.commits if tp in c]
        return offsets[-1] if offsets else None


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None


@dataclass
class Message:
    raw_message: Record
    consumer: FakeConsumer


class Work:
    """Work items the test releases one by one; records start and end order."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.ended: list[str] = []
        self.running: set[str] = set()
        self.most_at_once = 0
        self.failing: set[str] = set()

    def item(self, name: str) -> Any:
        gate = self.gates.setdefault(name, asyncio.Event())

        async def run() -> None:
            self.started.append(name)
            self.running.add(name)
            self.most_at_once = max(self.most_at_once, len(self.running))
            try:
                await gate.wait()
                if name in self.failing:
                    self.failing.discard(name)
                    raise RuntimeError(f"{name} could not be dead-lettered")
            finally:
                self.running.discard(name)
                self.ended.append(name)

        return run

    def release(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def until(condition: Any) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def lanes_for(max_in_flight: int = 4, **options: Any) -> Lanes:
    return Lanes(service="svc-lanes", subscriber="svc-lanes/quotes", max_in_flight=max_in_flight, **options)


async def submit(lanes: Lanes, consumer: FakeConsumer, work: Work, name: str, tp: TopicPartition, offset: int,
                 key: str | None) -> None:  # fmt: skip
    record = Record(tp.topic, tp.partition, offset, key.encode() if key else None)
    await lanes.submit(Message(record, consumer), work.item(name))


async def test_messages_of_one_key_run_in_order_and_different_keys_at_once() -> None:
    lanes, consumer, work = lanes_for(4), FakeConsumer(), Work()
    await submit(lanes, consumer, work, "Q1-a", P0, 0, "Q1")
    await submit(lanes, consumer, work, "Q2", P0, 1, "Q2")
    await submit(lanes, consumer, work, "Q1-b", P0, 2, "Q1")
    await submit(lanes, consumer, work, "Q3", P1, 0, "Q3")
    await settle()
    assert sorted(work.started) == ["Q1-a", "Q2", "Q3"]  # Q1-b waits behind Q1-a
    for name in ("Q2", "Q3", "Q1-a"):
        work.release(name)
    await until(lambda: "Q1-b" in work.started)
    work.release("Q1-b")
    await until(lambda: len(work.ended) == 4)
    assert work.ended.index("Q1-a") < work.started.index("Q1-b")
    assert work.most_at_once == 3
    await until(lambda: consumer.committed_offset(P0) == 3)
    assert consumer.committed_offset(P1) == 1


async def test_a_partition_is_committed_only_up_to_its_lowest_unfinished_offset() -> None:
    lanes, consumer, work = lanes_for(8), FakeConsumer(), Work()
    for offset, key in enumerate(["A", "B", "C", "D"]):
        await submit(lanes, consumer, work, key, P0, 10 + offset, key)
    for key in ("B", "C", "D"):
        work.release(key)
    await until(lambda: len(work.ended) == 3)
    await settle()
    assert all(c[P0] <= 10 for c in consumer.commits)  # A (offset 10) is not finished: nothing past it
    work.release("A")
    await until(lambda: consumer.committed_offset(P0) == 14)
    assert [c[P0] for c in consumer.commits] == sorted(c[P0] for c in consumer.commits)  # never goes back


async def test_fetching_pauses_at_capacity_and_a_partition_pauses_when_too_much_waits_behind_one_message() -> None:
    lanes, consumer, work = lanes_for(2, max_uncommitted=3), FakeConsumer(), Work()
    await submit(lanes, consumer, work, "A", P0, 0, "A")
    assert consumer.paused_now == set()
    await submit(lanes, consumer, work, "B", P0, 1, "B")
    assert consumer.paused_now == {P0, P1}  # two in flight: nothing more is fetched
    work.release("B")
    await until(lambda: "B" in work.ended)
    await settle()
    assert consumer.paused_now == set()
    for offset, key in [(2, "C"), (3, "D")]:
        work.release(key)
        await submit(lanes, consumer, work, key, P0, offset, key)
        await until(lambda key=key: key in work.ended)
    await settle()
    assert consumer.paused_now == {P0}  # A at offset 0 holds back 4 read offsets; P1 goes on
    work.release("A")
    await until(lambda: consumer.committed_offset(P0) == 4)
    await settle()
    assert consumer.paused_now == set()


async def test_a_message_whose_work_raised_is_not_committed_and_its_partition_is_read_again_from_it() -> None:
    lanes, consumer, work = lanes_for(4), FakeConsumer(), Work()
    work.failing.add("A")
    await submit(lanes, consumer, work, "A", P0, 5, "A")
    await submit(lanes, consumer, work, "B", P0, 6, "B")
    work.release("B")
    work.release("A")
    await until(lambda: len(work.ended) == 2)
    await settle()
    assert consumer.seeks == [(P0, 5)]
    assert all(c[P0] <= 5 for c in consumer.commits)
    # The partition delivers offsets 5 and 6 again; the second copies finish.
    work.gates["A"] = asyncio.Event()
    work.gates["B"] = asyncio.Event()
    work.release("A")
    work.release("B")
    await submit(lanes, consumer, work, "A", P0, 5, "A")
    await submit(lanes, consumer, work, "B", P0, 6, "B")
    await until(lambda: consumer.committed_offset(P0) == 7)


async def test_a_revoked_partition_drops_its_queued_messages_and_commits_what_finished() -> None:
    lanes, consumer, work = lanes_for(8, revoke_wait_s=5), FakeConsumer(), Work()
    await submit(lanes, consumer, work, "A1", P0, 0, "A")
    await submit(lanes, consumer, work, "A2", P0, 1, "A")  # queued behind A1
    await submit(lanes, consumer, work, "B", P1, 0, "B")
    await settle()
    revoking = asyncio.create_task(lanes.on_partitions_revoked({P0}))
    await settle()
    assert not revoking.done()  # waits for A1, which is running
    work.release("A1")
    await revoking
    assert consumer.committed_offset(P0) == 1  # A1 finished; A2 is left to the next owner
    await settle()
    assert "A2" not in work.started
    assert lanes.describe()["in_flight"] == 1  # only B
    work.release("B")
    await until(lambda: consumer.committed_offset(P1) == 1)


async def test_a_message_still_running_after_the_revoke_wait_is_left_uncommitted() -> None:
    lanes, consumer, work = lanes_for(8, revoke_wait_s=0.05), FakeConsumer(), Work()
    await submit(lanes, consumer, work, "A", P0, 3, "A")
    await settle()
    assert work.started == ["A"]
    await lanes.on_partitions_revoked({P0})
    work.release("A")
    await until(lambda: "A" in work.ended)
    await settle()
    assert all(c.get(P0, 0) <= 3 for c in consumer.commits)  # its partition belongs to someone else now


async def test_drain_takes_nothing_more_drops_the_queued_waits_for_the_running_and_commits() -> None:
    lanes, consumer, work = lanes_for(8), FakeConsumer(), Work()
    await submit(lanes, consumer, work, "A1", P0, 0, "A")
    await submit(lanes, consumer, work, "A2", P0, 1, "A")
    await settle()
    draining = asyncio.create_task(lanes.drain(5))
    await settle()
    assert consumer.paused_now == {P0, P1}
    await submit(lanes, consumer, work, "late", P1, 0, "L")
    work.release("A1")
    await draining
    assert work.started == ["A1"]
    assert consumer.committed_offset(P0) == 1  # A2 is read again by the next consumer
    assert consumer.committed_offset(P1) is None


async def test_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        lanes_for(0)
