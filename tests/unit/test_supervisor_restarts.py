"""`make run`'s restart policy without processes or time: the waits between restarts (1 s doubling to 30 s, back to
1 s after a minute up), the line logged for each, and no restart once the run is stopping. The same with real child
processes is tests/e2e/test_supervisor_restarts.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from m3bridge.restarts import RestartPolicy, duration, how_it_ended, keep_running


def waits(policy: RestartPolicy, runs_s: list[float]) -> list[float]:
    delays: list[float] = []
    previous: float | None = None
    for ran_s in runs_s:
        previous = policy.delay_s(previous, ran_s)
        delays.append(previous)
    return delays


def test_a_crash_loop_waits_one_second_doubling_up_to_thirty_and_never_gives_up() -> None:
    assert waits(RestartPolicy(), [0.2] * 9) == [1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_a_process_that_ran_a_minute_starts_over_at_one_second() -> None:
    assert waits(RestartPolicy(), [0.2, 0.2, 0.2, 59, 60, 0.2, 3600]) == [1, 2, 4, 8, 1, 2, 1]


def test_how_a_process_ended_names_the_signal_that_killed_it() -> None:
    assert how_it_ended(86) == "exited with code 86"
    assert how_it_ended(0) == "exited with code 0"
    assert how_it_ended(-9) == "was killed by SIGKILL"
    assert how_it_ended(-200) == "exited with code -200"


class Scripted:
    """A child whose runs end as scripted ((exit code, seconds it ran)), on a clock that only the runs and the
    keeper's sleeps move; stopping is set when the script runs out."""

    def __init__(self, runs: list[tuple[int, float]], stopping: asyncio.Event) -> None:
        self.runs = runs
        self.stopping = stopping
        self.now = 1000.0
        self.starts = 0
        self.slept: list[float] = []
        self.lines: list[str] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def ended(self) -> int:
        if not self.runs:
            self.stopping.set()
            await asyncio.Event().wait()  # runs until stopped, as a healthy process does
        code, ran_s = self.runs.pop(0)
        self.now += ran_s
        return code

    async def restart(self) -> None:
        self.starts += 1

    def keeper(self, name: str = "order-writer", policy: RestartPolicy | None = None) -> Awaitable[None]:
        return keep_running(
            name,
            ended=self.ended,
            restart=self.restart,
            started_s=self.now,
            stopping=self.stopping,
            say=self.lines.append,
            policy=policy,
            clock=self.clock,
            sleep=self.sleep,
        )


async def test_each_crash_is_one_line_and_a_restart_after_the_policys_wait() -> None:
    child = Scripted([(86, 0.5), (86, 12), (1, 90), (-9, 3), (86, 150)], asyncio.Event())
    await asyncio.wait_for(child.keeper(), 5)
    assert child.slept == [1, 2, 1, 2, 1]
    assert child.starts == 5
    assert child.lines == [
        "order-writer exited with code 86 after 0.5 s; restarting in 1 s (restart 1)",
        "order-writer exited with code 86 after 12 s; restarting in 2 s (restart 2)",
        "order-writer exited with code 1 after 90 s; restarting in 1 s (restart 3)",
        "order-writer was killed by SIGKILL after 3.0 s; restarting in 2 s (restart 4)",
        "order-writer exited with code 86 after 2 min; restarting in 1 s (restart 5)",
    ]


async def test_a_process_that_ends_as_the_run_stops_is_not_restarted() -> None:
    stopping = asyncio.Event()
    stopping.set()
    child = Scripted([(0, 1)], stopping)  # SIGTERM from the stop: it drains and exits 0
    await asyncio.wait_for(child.keeper(), 5)
    assert (child.starts, child.slept, child.lines) == (0, [], [])


async def test_stopping_cuts_the_wait_before_a_restart_short() -> None:
    stopping = asyncio.Event()
    child = Scripted([(86, 0.1)], stopping)
    waiting = asyncio.Event()

    async def a_long_wait(seconds: float) -> None:
        child.slept.append(seconds)
        waiting.set()
        await asyncio.Event().wait()  # only stopping ends it

    keeper = asyncio.ensure_future(
        keep_running(
            "quotewerks-sim",
            ended=child.ended,
            restart=child.restart,
            started_s=child.now,
            stopping=stopping,
            say=child.lines.append,
            policy=RestartPolicy(first_s=30),
            clock=child.clock,
            sleep=a_long_wait,
        )
    )
    await asyncio.wait_for(waiting.wait(), 5)
    stopping.set()
    await asyncio.wait_for(keeper, 1)
    assert child.slept == [30]
    assert child.starts == 0
    assert child.lines == ["quotewerks-sim exited with code 86 after 0.1 s; restarting in 30 s (restart 1)"]


async def test_a_start_that_fails_is_tried_again_after_a_longer_wait() -> None:
    child = Scripted([(86, 0.5)], asyncio.Event())
    failures = [OSError(24, "Too many open files")]

    async def restart() -> None:
        if failures:
            raise failures.pop()
        child.starts += 1

    keeper = keep_running(
        "bod-listener",
        ended=child.ended,
        restart=restart,
        started_s=child.now,
        stopping=child.stopping,
        say=child.lines.append,
        clock=child.clock,
        sleep=child.sleep,
    )
    await asyncio.wait_for(keeper, 5)
    assert child.slept == [1, 2]
    assert child.starts == 1
    assert child.lines[1] == (
        "bod-listener could not be started again (OSError: [Errno 24] Too many open files); trying in 2 s (restart 2)"
    )


def test_how_long_a_process_ran_is_told_in_a_unit_that_reads_at_a_glance() -> None:
    assert [duration(s) for s in (0.04, 9.94, 12.4, 119, 125, 7199, 9000)] == [
        "0.0 s", "9.9 s", "12 s", "119 s", "2 min", "120 min", "2.5 h",
    ]  # fmt: skip
