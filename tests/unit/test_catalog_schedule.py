"""catalog-sync's timers (services/catalog_sync/schedule.py) without a broker: the first full load when asked,
scheduled loads and polls go on after a failure, a poll is skipped while a full load runs. That the timers start
only once the broker has is the runtime's `after_broker_start` (tests/unit/test_runtime.py)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest

from services.catalog_sync.schedule import full_loads, polls
from shared.contracts import CatalogSyncReport

pytestmark = pytest.mark.unit


def report(mode: str) -> CatalogSyncReport:
    now = datetime.now(UTC)
    return CatalogSyncReport(
        run_id=f"{mode}-1", mode=mode, path="mi", path_reason="test", started_at=now, finished_at=now, counts={}
    )


class FakeRuns:
    """Counts the runs; the first of each kind fails when `fail_first`; `third` is set at the third of either;
    `asked_three_times` once the timer has asked three times whether a full load runs."""

    def __init__(self, fail_first: bool = False) -> None:
        self.full_loads = 0
        self.polls = 0
        self.reconciles = 0
        self.fail_first = fail_first
        self._running = False
        self.asked_if_running = 0
        self.asked_three_times = asyncio.Event()
        self.third = asyncio.Event()

    @property
    def full_load_running(self) -> bool:
        self.asked_if_running += 1
        if self.asked_if_running >= 3:
            self.asked_three_times.set()
        return self._running

    @full_load_running.setter
    def full_load_running(self, running: bool) -> None:
        self._running = running

    async def full_load(self) -> CatalogSyncReport:
        self.full_loads += 1
        return self._outcome(self.full_loads, "full")

    async def poll_changes(self) -> CatalogSyncReport:
        self.polls += 1
        return self._outcome(self.polls, "poll")

    async def reconcile(self, *, dry_run: bool = False) -> CatalogSyncReport:
        self.reconciles += 1
        return self._outcome(self.reconciles, "reconcile")

    def _outcome(self, count: int, mode: str) -> CatalogSyncReport:
        if count >= 3:
            self.third.set()
        if self.fail_first and count == 1:
            raise RuntimeError("boom")
        return report(mode)


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_the_first_full_load_runs_at_once_and_a_failed_one_does_not_stop_the_schedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = FakeRuns(fail_first=True)
    task = asyncio.create_task(full_loads(runs, first=True, interval_s=0.01))
    try:
        await asyncio.wait_for(runs.third.wait(), 2)
    finally:
        await stopped(task)
    assert "first full load failed" in caplog.text


async def test_one_first_load_and_no_schedule_at_interval_zero() -> None:
    runs = FakeRuns()
    await asyncio.wait_for(
        full_loads(
            runs,
            first=True,
            interval_s=0,
        ),
        2,
    )
    assert runs.full_loads == 1


async def test_no_first_load_when_not_asked_and_no_schedule_at_interval_zero() -> None:
    runs = FakeRuns()
    await asyncio.wait_for(full_loads(runs, first=False, interval_s=0), 2)
    assert runs.full_loads == 0


async def test_scheduled_full_loads_go_on_after_a_failed_one(caplog: pytest.LogCaptureFixture) -> None:
    runs = FakeRuns(fail_first=True)
    task = asyncio.create_task(full_loads(runs, first=False, interval_s=0.01))
    try:
        await asyncio.wait_for(runs.third.wait(), 2)
    finally:
        await stopped(task)
    assert "scheduled full load failed" in caplog.text


async def test_polls_skip_a_running_full_load_and_go_on_after_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    runs = FakeRuns(fail_first=True)
    runs.full_load_running = True
    task = asyncio.create_task(polls(runs, interval_s=0.01))
    try:
        # Three poll times have come (the timer asked whether a full load runs): none of them polled.
        await asyncio.wait_for(runs.asked_three_times.wait(), 2)
        assert runs.polls == 0  # the full load reads everything anyway
        runs.full_load_running = False
        await asyncio.wait_for(runs.third.wait(), 2)
    finally:
        await stopped(task)
    assert "change poll failed" in caplog.text
