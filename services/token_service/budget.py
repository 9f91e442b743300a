"""The central rate budget: one pace for the whole tenant, granted by priority.

None of the rate-limiting libraries does priorities, so this is a small token bucket in front of one FIFO
queue per priority. Shaped to the Gateway's throttling policy:

- permits accrue at `utilisation * max_requests / period`, evenly, so a smoothing (spike-arrest) policy
  sees a steady pace rather than bursts;
- the bucket holds at most `interactive_reserve + 1 + burst_slack` permits and only interactive callers may
  take the reserve, so a rep's lookup finds a permit waiting even while bulk loads saturate the rest. The
  slack keeps permits that accrue while the dispatcher wakes up late (a busy event loop) from being lost at
  the cap. In any window of one period the bridge sends at most `utilisation * max + reserve + 1 + slack`
  requests (`worst_case_per_period`): keep that ≤ max;
- strict priority among waiters: interactive, then transactional, then bulk (FIFO within each);
- a reported 429 pauses everyone (its Retry-After, cut to `max_pause_s`; without one, one period but at most 5 s)
  and lowers the pace; the pace recovers in steps while no 429 comes. Reports arriving together count as one;
- for a smoothing (spike-arrest) policy the bucket holds one permit: no bursts at all;
- with rate smoothing (`delay_after_count`: past that many requests in a period the Gateway delays each further
  one) the pace is at most `utilisation * delay_after_count` per period: the Gateway then never delays, where a pace
  up to the spike-arrest maximum would be served but slower, and every caller would wait the delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Gauge

from shared.m3.lease import Priority

# Here, not in shared_budget.py, so that a token-service without Redis exports it without importing redis.
budget_shared = Gauge(
    "m3bridge_rate_budget_shared",
    "1 while this token-service takes its permits from the tenant's whole budget (in Redis, shared by the replicas; "
    "or in its own memory when it runs alone without M3B_BUDGET_REDIS_URL); 0 while Redis cannot be reached and it "
    "paces alone at its share of the rate (bulk callers wait).",
)

PRIORITY_ORDER = (Priority.INTERACTIVE, Priority.TRANSACTIONAL, Priority.BULK)


class BudgetTimeoutError(Exception):
    """The permits could not be granted within the caller's maximum wait."""


@dataclass(frozen=True)
class BudgetPolicy:
    period_s: float = 1.0
    max_requests_per_period: int = 50
    utilisation: float = 0.96
    interactive_reserve: int = 1
    burst_slack: int = 1
    # "smoothed": the Gateway spaces requests (spike arrest: one per period/N), so the budget never bursts:
    # no reserve in the bucket, no slack; interactive callers still go first in the queue.
    smoothed: bool = False
    # The policy's rateSmoothing/delayAfterCount (None: no rate smoothing): the budget paces below it.
    delay_after_count: int | None = None
    backoff_factor: float = 0.85
    min_rate_fraction: float = 0.1
    recovery_step_fraction: float = 0.05
    recovery_interval_s: float = 2.0
    # A 429 without Retry-After: pause this long (at most one period), then the lowered pace takes over.
    pause_without_retry_after_s: float = 5.0
    # The longest pause one report imposes on every caller: a Retry-After of an hour (or a caller's bug) must not
    # stop the tenant's whole integration; a 429 after the pause extends it again.
    max_pause_s: float = 60.0

    def __post_init__(self) -> None:
        if self.period_s <= 0 or self.max_requests_per_period < 1:
            raise ValueError("the throttling period and maximum requests must be positive")
        if not 0 < self.utilisation <= 1:
            raise ValueError("utilisation must be in (0, 1]")
        if self.max_pause_s <= 0:
            raise ValueError("the longest pause must be positive")
        if self.interactive_reserve < 0 or self.burst_slack < 0:
            raise ValueError("interactive_reserve and burst_slack must be ≥ 0")
        if self.delay_after_count is not None and self.delay_after_count < 1:
            raise ValueError("delay_after_count must be positive")

    @property
    def paced_per_period(self) -> float:
        """Requests per period at full pace: a share of the spike-arrest maximum, or of the rate-smoothing count
        when that is lower."""
        ceiling = self.max_requests_per_period
        if self.delay_after_count is not None:
            ceiling = min(ceiling, self.delay_after_count)
        return self.utilisation * ceiling

    @property
    def worst_case_per_period(self) -> float:
        """The most requests the budget can let through in any window of one period."""
        return self.paced_per_period + self.capacity

    @property
    def capacity(self) -> float:
        return 1.0 if self.smoothed else float(self.interactive_reserve + 1 + self.burst_slack)

    @property
    def reserve(self) -> int:
        return 0 if self.smoothed else self.interactive_reserve

    @property
    def rate(self) -> float:
        """Permits per second at full pace."""
        return self.paced_per_period / self.period_s


@dataclass
class _Waiter:
    permits: int
    future: asyncio.Future[None]
    enqueued_at: float


@dataclass
class BudgetSnapshot:
    rate: float
    configured_rate: float
    available: float
    paused_for_s: float
    queued: dict[str, int] = field(default_factory=dict)


class Budget(Protocol):
    """What the lease desk needs of a budget: this process's `RateBudget`, or `SharedBudget` in Redis."""

    policy: BudgetPolicy

    @property
    def mode(self) -> str: ...

    async def acquire(self, priority: Priority, permits: int = 1, *, max_wait_s: float = 30.0) -> float: ...

    async def report_throttled(self, retry_after_s: float | None) -> bool: ...

    def snapshot(self) -> BudgetSnapshot: ...

    async def close(self) -> None: ...


class RateBudget:
    mode = "in this process"

    def __init__(self, policy: BudgetPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._rate = policy.rate
        self._capacity = policy.capacity
        self._tokens = self._capacity
        self._updated = clock()
        self._paused_until = 0.0
        self._last_reduction = -1e9
        self._last_recovery = clock()
        self._queues: dict[Priority, deque[_Waiter]] = {p: deque() for p in PRIORITY_ORDER}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    # --- what callers use -----------------------------------------------------------------------------

    async def acquire(self, priority: Priority, permits: int = 1, *, max_wait_s: float = 30.0) -> float:
        """Wait for `permits` at `priority`; returns the seconds waited. Raises BudgetTimeoutError."""
        self._ensure_dispatcher()
        loop = asyncio.get_running_loop()
        waiter = _Waiter(permits, loop.create_future(), self._clock())
        self._queues[priority].append(waiter)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), max_wait_s)
        except TimeoutError:
            if waiter.future.done():  # granted at the last moment: keep it
                return self._clock() - waiter.enqueued_at
            waiter.future.cancel()
            with contextlib.suppress(ValueError):
                self._queues[priority].remove(waiter)
            raise BudgetTimeoutError(f"no {priority} permit within {max_wait_s:g}s") from None
        except asyncio.CancelledError:
            if not waiter.future.done():
                waiter.future.cancel()
                with contextlib.suppress(ValueError):
                    self._queues[priority].remove(waiter)
            raise
        return self._clock() - waiter.enqueued_at

    def throttled(self, retry_after_s: float | None) -> bool:
        """A 429 came back from the Gateway: pause everyone and slow down. Returns whether the pace was lowered
        (reports within one period of the last reduction only extend the pause)."""
        now = self._clock()
        pause = (
            min(retry_after_s, self.policy.max_pause_s)
            if retry_after_s is not None
            else min(self.policy.period_s, self.policy.pause_without_retry_after_s)
        )
        self._paused_until = max(self._paused_until, now + pause)
        self._refill(now)
        self._tokens = min(self._tokens, 0.0)
        lowered = now - self._last_reduction >= self.policy.period_s
        if lowered:
            floor = self.policy.rate * self.policy.min_rate_fraction
            self._rate = max(floor, self._rate * self.policy.backoff_factor)
            self._last_reduction = now
            self._last_recovery = now
        self._wake.set()
        return lowered

    async def report_throttled(self, retry_after_s: float | None) -> bool:
        return self.throttled(retry_after_s)

    def snapshot(self) -> BudgetSnapshot:
        now = self._clock()
        self._refill(now)
        return BudgetSnapshot(
            rate=self._rate,
            configured_rate=self.policy.rate,
            available=self._tokens,
            paused_for_s=max(0.0, self._paused_until - now),
            queued={p.value: len(q) for p, q in self._queues.items()},
        )

    async def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for queue in self._queues.values():
            for waiter in queue:
                waiter.future.cancel()
            queue.clear()

    # --- the dispatcher -------------------------------------------------------------------------------

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="rate-budget")

    def _refill(self, now: float) -> None:
        if now > self._updated:
            if now > self._paused_until:
                accrue_from = max(self._updated, self._paused_until)
                self._tokens = min(self._capacity, self._tokens + (now - accrue_from) * self._rate)
            self._updated = now

    def _recover(self, now: float) -> None:
        if self._rate < self.policy.rate and now - self._last_recovery >= self.policy.recovery_interval_s:
            step = self.policy.rate * self.policy.recovery_step_fraction
            self._rate = min(self.policy.rate, self._rate + step)
            self._last_recovery = now

    def _next_waiter(self) -> tuple[Priority, _Waiter] | None:
        for priority in PRIORITY_ORDER:
            queue = self._queues[priority]
            while queue and queue[0].future.done():  # cancelled or timed out
                queue.popleft()
            if queue:
                return priority, queue[0]
        return None

    async def _dispatch(self) -> None:
        while True:
            now = self._clock()
            self._recover(now)
            self._refill(now)
            head = self._next_waiter()
            if head is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            priority, waiter = head
            # Others must leave the reserve in the bucket; a lease of several permits is granted once the first
            # is affordable and the rest is paid off before anyone else is served (tokens go negative).
            needed = 1.0 if priority is Priority.INTERACTIVE else 1.0 + self.policy.reserve
            if now >= self._paused_until and self._tokens >= needed:
                self._queues[priority].popleft()
                self._tokens -= waiter.permits
                waiter.future.set_result(None)
                continue
            paused = now < self._paused_until
            delay = self._paused_until - now if paused else (needed - self._tokens) / self._rate
            self._wake.clear()
            # A new arrival may be of higher priority, or a 429 may change the pause: wake up for either.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(delay, 0.0005))
