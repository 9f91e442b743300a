"""Heartbeats: the beat each service publishes on `bridge.heartbeat.v1` and the peers it has heard (for /healthz)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage

import shared
from shared.contracts import Heartbeat, topics
from shared.platform.health import Health
from shared.platform.kafka import publish
from shared.platform.metrics import heartbeats_seen
from shared.platform.settings import BridgeSettings

log = logging.getLogger(__name__)


class Heartbeats:
    """Sends this service's beat (its readiness) and keeps the latest beat heard from every service, itself included."""

    def __init__(self, settings: BridgeSettings, broker: KafkaBroker, health: Health) -> None:
        self.name = settings.service_name
        self.settings = settings
        self.broker = broker
        self.health = health
        self.peers: dict[str, Heartbeat] = {}
        self._instances: dict[tuple[str, str], datetime] = {}

    async def on_heartbeat(self, beat: Heartbeat, _message: KafkaMessage) -> None:
        previous = self.peers.get(beat.service)
        if previous is None or beat.sent_at >= previous.sent_at:  # beats of replicas may arrive out of order
            self.peers[beat.service] = beat
        self._instances[(beat.service, beat.instance)] = max(
            beat.sent_at, self._instances.get((beat.service, beat.instance), beat.sent_at)
        )
        heartbeats_seen.labels(self.name, beat.service).inc()

    def live_instances(self, service: str) -> int:
        """Replicas of `service` heard within three heartbeat intervals (this one included once it heard itself)."""
        horizon = datetime.now(UTC).timestamp() - 3 * self.settings.heartbeat_interval_s
        for gone in [key for key, seen in self._instances.items() if seen.timestamp() < horizon - 3600]:
            del self._instances[gone]  # replicas replaced long ago (every pod has its own name)
        return sum(1 for (name, _), seen in self._instances.items() if name == service and seen.timestamp() >= horizon)

    def describe_peers(self) -> dict[str, dict[str, Any]]:
        now = datetime.now(UTC)
        return {
            name: {
                "ready": beat.ready,
                "instance": beat.instance,
                "last_seen_s": round((now - beat.sent_at).total_seconds(), 1),
            }
            for name, beat in sorted(self.peers.items())
        }

    async def send(self) -> None:
        ready, checks = await self.health.readiness()
        beat = Heartbeat(
            service=self.name,
            instance=self.settings.instance_id,
            version=shared.__version__,
            started_at=datetime.fromtimestamp(self.health.started_at, UTC),
            sent_at=datetime.now(UTC),
            ready=ready,
            checks=checks,
        )
        await publish(self.broker, topics.HEARTBEAT, beat, key=self.name)

    async def loop(self, stopping: asyncio.Event) -> None:
        """Beat until `stopping` is set: an event, not only cancellation, because a publish that swallows the
        cancel (faststream's in-memory test broker does) would otherwise keep the loop and the shutdown going."""
        while not stopping.is_set():
            try:
                await self.send()
            except Exception as exc:  # the next beat may well succeed; /readyz reports the broker state
                log.warning("heartbeat not sent: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.settings.heartbeat_interval_s)
