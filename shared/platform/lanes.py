"""Many messages in flight on one consumer, in order per key, committed only where everything before is done.

faststream hands a subscriber one message at a time and, with its ack policies, commits every position the consumer
has read. order-writer spends most of a quote waiting for M3, so one quote at a time leaves the tenant's budget
unused; faststream's `max_workers` would run several at once, but commits ahead of unfinished ones (a crash loses
them) and lets two messages of one quote overtake each other. `Lanes`:

- runs up to `max_in_flight` messages at once in one lane per key (the message key: a quote's DocNo), so two
  messages of one key never overlap and keep their order;
- commits each partition only up to its lowest unfinished offset, after every message that finishes;
- pauses fetching from every partition while `max_in_flight` messages are accepted and unfinished, and from one
  partition whose lowest unfinished message holds back more than `max_uncommitted` read offsets;
- on a rebalance, drops the queued messages of revoked partitions (their new owner reads them again), waits up to
  `revoke_wait_s` for their running ones and commits what finished; one still running then goes on, uncommitted
  (order-writer's lease fences its writes against the new owner);
- at shutdown, `drain` takes no more messages, drops the queued ones, waits for the running ones and commits.

A message whose work raised (its dead letter could not be published, or the service stopped in the middle of it) is
not committed: its partition is rewound to it, so it and what follows are read again (handlers are idempotent).

Nothing here needs a broker: the consumer is whatever the messages carry (`message.consumer`, aiokafka's
AIOKafkaConsumer: `commit`, `seek`, `pause`, `resume`, `paused`, `assignment`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from shared.platform.metrics import consumer_in_flight

log = logging.getLogger(__name__)

Work = Callable[[], Awaitable[Any]]


@dataclass
class _Partition:
    """One assigned partition: which read offsets are unfinished, and what was committed."""

    outstanding: Counter[int] = field(default_factory=Counter)
    """Offset → copies accepted and not finished (a rewound partition can deliver one again while it runs)."""
    failed: set[int] = field(default_factory=set)
    """Offsets whose work raised: never committed past until a later copy finishes."""
    next_offset: int | None = None
    committed: int | None = None

    def committable(self) -> int | None:
        """The offset to commit: the lowest unfinished one, or the one after the highest read."""
        unfinished = set(self.outstanding) | self.failed
        return min(unfinished) if unfinished else self.next_offset

    def uncommitted(self) -> int:
        """Read offsets held back from the commit (running, queued, or finished behind an unfinished one)."""
        lowest = self.committable()
        return 0 if lowest is None or self.next_offset is None else self.next_offset - lowest


@dataclass
class _Item:
    partition: _Partition
    tp: TopicPartition
    offset: int
    work: Work


class Lanes(ConsumerRebalanceListener):
    """Per-key lanes and safe commits for one subscriber; also its rebalance listener."""

    def __init__(
        self,
        *,
        service: str,
        subscriber: str,
        max_in_flight: int,
        max_uncommitted: int | None = None,
        revoke_wait_s: float = 10.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.service = service
        self.subscriber = subscriber
        self.max_in_flight = max_in_flight
        self.max_uncommitted = max_uncommitted if max_uncommitted is not None else 16 * max_in_flight
        self.revoke_wait_s = revoke_wait_s
        self._consumer: Any = None
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._lanes: dict[bytes | str, deque[_Item]] = {}
        self._tasks: dict[bytes | str, asyncio.Task[None]] = {}
        self._in_flight = 0
        self._running: Counter[TopicPartition] = Counter()
        self._draining = False
        self._changed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        consumer_in_flight.labels(service, subscriber).set_function(lambda: self._in_flight)

    # --- taking messages -----------------------------------------------------------------------------------

    async def submit(self, message: Any, work: Work) -> None:
        """Queue `work` (the message's whole handling) in its key's lane and return at once."""
        record = message.raw_message
        if self._draining:
            return  # not tracked, so never committed: whoever consumes the partition next reads it again
        self._consumer = getattr(message, "consumer", None) or self._consumer
        tp = TopicPartition(record.topic, record.partition)
        partition = self._partitions.get(tp)
        if partition is None:
            partition = self._partitions[tp] = _Partition()
        partition.outstanding[record.offset] += 1
        partition.next_offset = max(partition.next_offset or 0, record.offset + 1)
        key: bytes | str = record.key if record.key else f"{tp.topic}/{tp.partition}@{record.offset}"
        self._lanes.setdefault(key, deque()).append(_Item(partition, tp, record.offset, work))
        self._in_flight += 1
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._run_lane(key), name=f"lane {key!r}")
        self._apply_pauses()

    async def _run_lane(self, key: bytes | str) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                item = lane.popleft()
                self._running[item.tp] += 1
                finished = False
                try:
                    await item.work()
                    finished = True
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: %s[%d]@%d failed; its partition reads it again", self.subscriber,
                                  item.tp.topic, item.tp.partition, item.offset)  # fmt: skip
                finally:
                    self._done(item, finished)
                await self._commit([item.tp])
        finally:
            # No await between the lane running empty and this: a message submitted meanwhile starts a new lane.
            if self._lanes.get(key) is lane and not lane:
                del self._lanes[key]
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]

    def _done(self, item: _Item, finished: bool) -> None:
        self._in_flight -= 1
        self._running[item.tp] -= 1
        partition = item.partition
        if self._partitions.get(item.tp) is partition:  # not revoked meanwhile
            partition.outstanding[item.offset] -= 1
            if partition.outstanding[item.offset] <= 0:
                del partition.outstanding[item.offset]
            if finished:
                partition.failed.discard(item.offset)
            else:
                partition.failed.add(item.offset)
                if not self._draining and self._consumer is not None:
                    with contextlib.suppress(Exception):  # a partition revoked meanwhile: its new owner reads it
                        self._consumer.seek(item.tp, item.offset)
        self._apply_pauses()
        self._changed.set()

    # --- committing and pausing ----------------------------------------------------------------------------

    async def _commit(self, tps: Iterable[TopicPartition]) -> None:
        async with self._commit_lock:  # one commit at a time, each computed inside: offsets only grow
            offsets: dict[TopicPartition, int] = {}
            for tp in set(tps):
                partition = self._partitions.get(tp)
                if partition is None:
                    continue
                offset = partition.committable()
                if offset is not None and (partition.committed is None or offset > partition.committed):
                    offsets[tp] = offset
            if not offsets or self._consumer is None:
                return
            try:
                await self._consumer.commit(offsets)
            except Exception as exc:  # a rebalance under way: the next owner resumes from the last commit
                log.warning("%s: committing %s failed: %s: %s", self.subscriber, _describe(offsets),
                            type(exc).__name__, exc)  # fmt: skip
                return
            for tp, offset in offsets.items():
                partition = self._partitions.get(tp)
                if partition is not None:
                    partition.committed = max(partition.committed or 0, offset)

    def _apply_pauses(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        try:
            assigned = set(consumer.assignment())
            if self._draining or self._in_flight >= self.max_in_flight:
                wanted = assigned
            else:
                wanted = {
                    tp for tp in assigned
                    if (p := self._partitions.get(tp)) is not None and p.uncommitted() > self.max_uncommitted
                }  # fmt: skip
            paused = set(consumer.paused()) & assigned
            if wanted - paused:
                consumer.pause(*(wanted - paused))
            if paused - wanted:
                consumer.resume(*(paused - wanted))
        except Exception as exc:  # the consumer stopped or is rebalancing: the next change applies them again
            log.debug("%s: pausing/resuming partitions skipped: %s", self.subscriber, exc)

    async def _wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    def _drop_queued(self, tps: set[TopicPartition] | None) -> int:
        """Take the not-yet-started messages of `tps` (all when None) out of their lanes."""
        dropped = 0
        for lane in self._lanes.values():
            keep = [item for item in lane if tps is not None and item.tp not in tps]
            dropped += len(lane) - len(keep)
            lane.clear()
            lane.extend(keep)
        self._in_flight -= dropped
        return dropped

    # --- rebalances and shutdown ---------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        mine = set(revoked) & set(self._partitions)
        if not mine:
            return
        dropped = self._drop_queued(mine)
        finished = await self._wait_until(lambda: not any(self._running[tp] > 0 for tp in mine), self.revoke_wait_s)
        await self._commit(mine)
        for tp in mine:
            self._partitions.pop(tp, None)
        log.info("%s: partitions %s revoked (%d queued message(s) left to their next owner%s)", self.subscriber,
                 _describe(mine), dropped, "" if finished else "; some still running, left uncommitted")  # fmt: skip
        self._apply_pauses()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._apply_pauses()

    async def drain(self, timeout_s: float) -> None:
        """Stop taking messages, drop the queued ones, wait up to `timeout_s` for the running ones, commit."""
        self._draining = True
        self._apply_pauses()
        dropped = self._drop_queued(None)
        done = await self._wait_until(lambda: self._in_flight <= 0, timeout_s)
        await self._commit(list(self._partitions))
        if dropped or not done:
            log.info("%s: stopped with %d queued message(s) left for the next consumer%s", self.subscriber, dropped,
                     "" if done else f" and {self._in_flight} still running")  # fmt: skip
        for task in list(self._tasks.values()):
            task.cancel()

    def describe(self) -> dict[str, Any]:
        return {
            "in_flight": self._in_flight,
            "max_in_flight": self.max_in_flight,
            "lanes": len(self._lanes),
            "partitions": {
                f"{tp.topic}[{tp.partition}]": {"committed": p.committed, "uncommitted": p.uncommitted()}
                for tp, p in sorted(self._partitions.items())
            },
        }


def _describe(tps: Iterable[TopicPartition] | dict[TopicPartition, int]) -> str:
    if isinstance(tps, dict):
        return ", ".join(f"{tp.topic}[{tp.partition}]→{offset}" for tp, offset in sorted(tps.items()))
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps))
