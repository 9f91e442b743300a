"""ServiceRuntime's start-up order (shared/runtime.py) on faststream's in-memory broker: `after_broker_start` hooks run
once the broker has started and can publish, and one that fails stops the service like a shutdown does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faststream import AckPolicy
from faststream.kafka import TestKafkaBroker

from shared.contracts import Heartbeat
from shared.kafka import publish
from shared.runtime import ServiceRuntime
from shared.settings import BridgeSettings
from shared.topics import Topic

pytestmark = pytest.mark.unit

ANNOUNCED = Topic("test.runtime.announced.v1", Heartbeat, "service", "what an after-broker-start hook publishes")


def runtime_for(name: str) -> ServiceRuntime:
    return ServiceRuntime(
        BridgeSettings(service_name=name, kafka_bootstrap_servers="127.0.0.1:1"), title=name, description="test"
    )


def broker_starts(runtime: ServiceRuntime) -> int:
    """How often the lifespan started the broker (TestKafkaBroker records `start` as a mock)."""
    start: Any = runtime.broker.start
    return int(start.await_count)


async def test_after_broker_start_hooks_run_in_order_once_the_broker_has_started() -> None:
    runtime = runtime_for("svc-after-start")
    steps: list[str] = []
    heard = asyncio.Event()

    @runtime.subscriber(
        ANNOUNCED,
        group="g",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="svc-after-start/announced",
        description="what the hook publishes",
    )
    async def on_announced(beat: Heartbeat, _message: Any) -> None:
        steps.append(f"heard {beat.service}")
        heard.set()

    @runtime.on_startup
    async def start() -> None:
        steps.append(f"start hook, broker started {broker_starts(runtime)} times")

    @runtime.after_broker_start
    async def announce() -> None:
        steps.append(f"after hook, broker started {broker_starts(runtime)} times")
        await runtime.heartbeats.send()  # publishing works: the producer is up
        beat = runtime.peers[runtime.name]  # the broker delivers already: our own beat came back
        await publish(runtime.broker, ANNOUNCED, beat, key=beat.service)

    @runtime.after_broker_start
    async def second() -> None:
        steps.append("second after hook")

    @runtime.on_shutdown
    async def stop() -> None:
        steps.append("shutdown hook")

    async with TestKafkaBroker(runtime.broker, connect_only=True), runtime._lifespan(runtime.app):
        await asyncio.wait_for(heard.wait(), 2)
        steps.append("serving")
    assert steps == [
        "start hook, broker started 0 times",
        "after hook, broker started 1 times",
        "heard svc-after-start",
        "second after hook",
        "serving",
        "shutdown hook",
    ]


async def test_a_failing_after_broker_start_hook_stops_the_service_and_fails_the_start() -> None:
    runtime = runtime_for("svc-after-start-fails")
    steps: list[str] = []

    @runtime.after_broker_start
    async def boom() -> None:
        raise RuntimeError("cannot schedule")

    @runtime.after_broker_start
    async def never() -> None:
        steps.append("hook after the failed one")

    @runtime.on_shutdown
    async def stop() -> None:
        # The start hooks all ran: their shutdown counterparts undo them, after the broker stopped.
        stop_mock: Any = runtime.broker.stop
        steps.append(f"shutdown hook, broker stopped {stop_mock.await_count} times")

    async with TestKafkaBroker(runtime.broker, connect_only=True):
        with pytest.raises(RuntimeError, match="cannot schedule"):
            async with runtime._lifespan(runtime.app):
                steps.append("served")
    assert steps == ["shutdown hook, broker stopped 1 times"]
    assert runtime._http is not None
    assert runtime._http.is_closed
    assert runtime._heartbeat_task is None  # never started
    assert runtime.health.stopping  # /readyz says so while the process exits
