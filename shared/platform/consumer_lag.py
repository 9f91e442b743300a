"""The backlog of every consumer group a service consumes with, measured from the broker: per group, topic and
partition, the messages written that the group has not committed yet (`m3bridge_consumer_lag`).

Measured for the whole group, not for the partitions this replica holds: a partition nobody holds (its replica died,
the group is rebalancing) is the backlog that matters most. Every replica therefore exports the same series; read
them with `max by (group, topic, partition)`. A group that never committed on a partition counts from the
partition's first offset (the consumers start there: `auto_offset_reset` is earliest). Off with
`M3B_CONSUMER_LAG_INTERVAL_S=0`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Gauge

from shared.platform.kafka import aiokafka_client_options
from shared.platform.metrics import PREFIX
from shared.platform.settings import BridgeSettings

log = logging.getLogger(__name__)

consumer_lag = Gauge(
    f"{PREFIX}_consumer_lag",
    "Messages on the partition its consumer group has not committed yet (every replica reports the whole group: "
    "take the max per group, topic and partition).",
    ["group", "topic", "partition"],
)
lag_measured = Gauge(
    f"{PREFIX}_consumer_lag_measured_timestamp_seconds",
    "When this service last measured its consumer groups' lag (stale: the broker did not answer).",
)


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    partition: int
    end: int
    committed: int

    @property
    def lag(self) -> int:
        return max(self.end - self.committed, 0)


class ConsumerLag:
    """Measures `groups` ((group, topic) pairs) every `settings.consumer_lag_interval_s`."""

    def __init__(self, settings: BridgeSettings, groups: Iterable[tuple[str, str]]) -> None:
        self.settings = settings
        self.groups = sorted(set(groups))
        self.last: list[GroupLag] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def measure(self) -> list[GroupLag]:
        """One measurement of every group, exported and returned."""
        options = {**aiokafka_client_options(self.settings), "enable_auto_commit": False, "request_timeout_ms": 10_000}
        found: list[GroupLag] = []
        for group in sorted({group for group, _ in self.groups}):
            # A client with the group's id that never subscribes: it reads the group's commits (OffsetFetch through
            # the group's coordinator, as the members do) without joining the group.
            reader = AIOKafkaConsumer(**options, group_id=group)
            await reader.start()
            try:
                partitions = [
                    TopicPartition(topic, partition)
                    for topic in sorted({topic for g, topic in self.groups if g == group})
                    for partition in sorted(reader.partitions_for_topic(topic) or ())
                ]
                if not partitions:
                    continue
                ends = await reader.end_offsets(partitions)
                starts = await reader.beginning_offsets(partitions)
                for tp in partitions:
                    committed = await reader.committed(tp)
                    # Never committed: the group starts at the partition's first offset.
                    found.append(GroupLag(group, tp.topic, tp.partition, ends[tp],
                                          committed if committed is not None else starts[tp]))  # fmt: skip
            finally:
                await reader.stop()
        for lag in found:
            consumer_lag.labels(lag.group, lag.topic, str(lag.partition)).set(lag.lag)
        lag_measured.set(time.time())
        self.last = found
        return found

    async def run(self) -> None:
        interval = self.settings.consumer_lag_interval_s
        if interval <= 0 or not self.groups:
            return
        while not self._stop.is_set():
            try:
                await self.measure()
            except Exception as failed:  # the broker away: the timestamp goes stale, the service goes on
                log.warning("consumer lag not measured: %s: %s", type(failed).__name__, failed)
            try:
                await asyncio.wait_for(self._stop.wait(), interval)
            except TimeoutError:
                continue

    def describe(self) -> dict[str, int]:
        """group/topic → total lag at the last measurement, for /healthz."""
        totals: dict[str, int] = {}
        for lag in self.last:
            key = f"{lag.group}/{lag.topic}"
            totals[key] = totals.get(key, 0) + lag.lag
        return totals
