"""ServiceRuntime's start-up order (shared/platform/runtime.py) on faststream's in-memory broker: `after_broker_start`
hooks run once the broker has started and can publish, and one that fails stops the service like a shutdown does."""

from __future__ import annotations

import asyncio
import gc
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream import AckPolicy
from faststream.kafka import TestKafkaBroker

from shared.contracts import Heartbeat
from shared.contracts.topics import Topic
from shared.platform.kafka import MessageTooLargeError, publish
from shared.platform.runtime import ServiceRuntime, settle_the_collector
from shared.platform.settings import BridgeSettings
from shared.platform.started import NotStartedError, StartedPart
from tests.log_records import records_of

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


async def test_background_work_is_stopped_gracefully_or_cancelled_after_the_consumers_and_before_shutdown_hooks() -> (
    None
):
    runtime = runtime_for("svc-background")
    steps: list[str] = []
    graceful_stop = asyncio.Event()
    both_running = asyncio.Barrier(3)

    async def graceful() -> None:
        await both_running.wait()
        await graceful_stop.wait()
        steps.append("graceful work ended on stop()")

    async def endless() -> None:
        await both_running.wait()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            steps.append("endless work cancelled")
            raise

    @runtime.after_broker_start
    async def start_work() -> None:
        runtime.in_background(graceful(), name="graceful", stop=graceful_stop.set)
        runtime.in_background(endless(), name="endless")

    @runtime.on_shutdown
    async def stop() -> None:
        steps.append("shutdown hook")

    async with TestKafkaBroker(runtime.broker, connect_only=True), runtime._lifespan(runtime.app):
        await asyncio.wait_for(both_running.wait(), 2)
    assert steps == ["graceful work ended on stop()", "endless work cancelled", "shutdown hook"]
    assert not runtime._background


async def test_background_work_that_fails_is_logged_when_it_fails() -> None:
    runtime = runtime_for("svc-background-fails")

    async def broken() -> None:
        raise ValueError("the schedule broke")

    with records_of("shared.platform.runtime", logging.ERROR) as seen:
        async with TestKafkaBroker(runtime.broker, connect_only=True), runtime._lifespan(runtime.app):
            task = runtime.in_background(broken(), name="broken-schedule")
            with pytest.raises(ValueError):
                await task
            await asyncio.sleep(0)  # the done callback runs on the loop's next turn
            assert not runtime._background
    logged = [r for r in seen if "broken-schedule" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info or logged[0].exc_text


async def test_publish_goes_through_the_one_publish_path_with_the_services_size_limit() -> None:
    runtime = ServiceRuntime(
        BridgeSettings(service_name="svc-publish", kafka_bootstrap_servers="127.0.0.1:1", kafka_max_request_size=1024),
        description="test",
    )
    assert runtime.app.title == "M3 Bridge svc-publish"
    now = datetime.now(UTC)
    beat = Heartbeat(service="s", instance="i", version="0", started_at=now, sent_at=now, ready=True)
    beat.checks["detail"] = "x" * 2000
    async with TestKafkaBroker(runtime.broker, connect_only=True), runtime._lifespan(runtime.app):
        with pytest.raises(MessageTooLargeError):
            await runtime.publish(ANNOUNCED, beat, "k")


def test_a_started_part_read_before_start_names_the_service() -> None:
    part = StartedPart[list[str]]("svc-parts")
    assert part.peek() is None
    with pytest.raises(NotStartedError, match="svc-parts is not started"):
        part()
    built = part.set(["ready"])
    assert part() is built
    assert part.peek() is built


def test_the_state_store_is_a_clear_error_before_start() -> None:
    runtime = runtime_for("svc-no-state")
    with pytest.raises(NotStartedError, match="state store is not open"):
        _ = runtime.state
    with pytest.raises(NotStartedError, match="svc-no-state is not started"):
        _ = runtime.http


def test_what_start_up_built_is_out_of_the_collectors_sight_so_a_full_collection_walks_little() -> None:
    """A service's full collection must not stall its event loop walking what lives as long as the process."""
    unfrozen = gc.get_freeze_count() == 0
    walked_before = len(gc.get_objects())
    try:
        settle_the_collector()
        assert walked_before > 10_000  # this test process: pytest, the libraries, the project
        assert gc.get_freeze_count() > walked_before / 2
        assert len(gc.get_objects()) < walked_before / 100  # what the collector still walks
    finally:
        if unfrozen:
            gc.unfreeze()
