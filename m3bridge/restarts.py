"""`make run` restarts a service or simulator that exits on its own, as a container runtime's restart policy does: after
1 s, then 2, 4, ... up to 30 s between attempts while it keeps crashing, back to 1 s once it has run a minute. It never
gives up (a crash loop is one log line per attempt, not a silent stop), and it never restarts anything once the run is
stopping: a wait between attempts ends the moment stopping is set.

Kept apart from the supervisor, with the clock and the sleep passed in, so that the policy can be tested without
processes or time.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RestartPolicy:
    first_s: float = 1.0
    longest_s: float = 30.0
    #: A process that ran this long was up: its next crash is a new incident, not the same loop.
    healthy_after_s: float = 60.0

    def delay_s(self, previous_s: float | None, ran_s: float) -> float:
        """The wait before the next start of a process that ran `ran_s`, the wait before its last start being
        `previous_s` (None: it never crashed before)."""
        if previous_s is None or ran_s >= self.healthy_after_s:
            return self.first_s
        return min(previous_s * 2, self.longest_s)


def how_it_ended(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def keep_running(
    name: str,
    *,
    ended: Callable[[], Awaitable[int]],
    restart: Callable[[], Awaitable[None]],
    started_s: float,
    stopping: asyncio.Event,
    say: Callable[[str], None],
    policy: RestartPolicy | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Restarts `name` each time it ends on its own, until `stopping` is set; returns then, never in the middle of a
    start, so that whoever stops the processes afterwards sees the last one started.

    `ended` waits for the running process to end and returns its exit code (negative: the signal that killed it);
    `restart` starts it again; `started_s` is when the running one started, on `clock`."""
    policy = policy or RestartPolicy()
    previous_s: float | None = None
    restarts = 0
    while True:
        code = await _first(ended(), stopping)
        # A process that ends because the run is stopping (or just as it starts to) is not restarted.
        if code is None or stopping.is_set():
            return
        ran_s = clock() - started_s
        previous_s = policy.delay_s(previous_s, ran_s)
        restarts += 1
        say(f"{name} {how_it_ended(code)} after {duration(ran_s)}; restarting in {previous_s:g} s (restart {restarts})")
        while True:
            await _first(sleep(previous_s), stopping)
            if stopping.is_set():
                return
            try:
                await restart()
                break
            except Exception as exc:  # a failed fork or exec (out of file handles, say) is another crash: wait longer
                previous_s = policy.delay_s(previous_s, 0)
                restarts += 1
                say(f"{name} could not be started again ({type(exc).__name__}: {exc}); trying in {previous_s:g} s "
                    f"(restart {restarts})")  # fmt: skip
        started_s = clock()


async def _first(work: Awaitable[T], stopping: asyncio.Event) -> T | None:
    """`work`'s result, or None when stopping is set first (`work` is cancelled then)."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        return None
    return task.result()
