"""The tenant's rate budget in Redis: one pace for every token-service replica.

The Gateway's limit is the tenant's, however many token-service replicas hand out permits, so the budget lives in
Redis and each permit is taken there by one atomic Lua script (GCRA: a theoretical arrival time per tenant, on
Redis' own clock, so the replicas' clocks do not matter):

- permits are spaced at `utilisation * max / period`; a caller may run ahead of that by its priority's burst
  tolerance: interactive callers by the whole capacity (the reserve included), the others by the capacity without
  the reserve, so a rep's lookup finds a slot while bulk loads use the rest. For a smoothing (spike-arrest) policy
  the tolerance is 0 for everyone;
- a slot is reserved at most `horizon` ahead; a replica whose first waiter cannot reserve is told when to ask
  again, so no replica queues far into the future ahead of another replica's interactive caller;
- within a replica, waiters ask in strict priority order (interactive, transactional, bulk; FIFO within each);
- a reported 429 sets one pause for every replica (its Retry-After, cut to `max_pause_s`) and lowers the shared
  pace, which recovers in steps on Redis' clock.

When Redis cannot be reached the replica falls back to a local `RateBudget` at its share of the rate (the rate
divided by the token-service replicas it knows of, itself included), bulk callers wait until Redis is back (they
time out as usual), the gauge `m3bridge_rate_budget_shared` is 0 and the alert RateBudgetNotShared fires. Redis is
tried again at most every `retry_shared_s`; the first success switches back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.token_service.budget import (
    PRIORITY_ORDER,
    BudgetPolicy,
    BudgetSnapshot,
    BudgetTimeoutError,
    RateBudget,
    budget_shared,
)
from shared.m3.lease import Priority

log = logging.getLogger(__name__)


MICROS = 1_000_000

# KEYS: tat, pause, pace. ARGV: emission µs at full pace, tolerance µs, permits, horizon µs, min pace factor,
# recovery step, recovery interval µs. Returns {granted (1/0), µs to wait (before sending / before asking again),
# pace factor in thousandths}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
local factor = 1.0
local pace = redis.call('HMGET', KEYS[3], 'factor', 'reduced_at')
if pace[1] then
  local steps = math.floor((now - tonumber(pace[2])) / tonumber(ARGV[7]))
  factor = math.min(1.0, tonumber(pace[1]) + tonumber(ARGV[6]) * steps)
  if factor >= 1.0 then redis.call('DEL', KEYS[3]) end
end
if now < paused then return {0, paused - now, math.floor(factor * 1000)} end
local emission = tonumber(ARGV[1]) / factor
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - tonumber(ARGV[2])
local horizon = tonumber(ARGV[4])
if allow_at > now + horizon then return {0, allow_at - horizon - now, math.floor(factor * 1000)} end
local new_tat = tat + emission * tonumber(ARGV[3])
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 60000)
local wait = allow_at - now
if wait < 0 then wait = 0 end
return {1, wait, math.floor(factor * 1000)}
"""

# KEYS: pause, pace, tat. ARGV: pause µs, backoff factor, min factor, period µs. Returns {lowered (1/0), factor in
# thousandths}.
_THROTTLED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1])
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > paused then
  redis.call('SET', KEYS[1], string.format('%.0f', until_), 'PX', math.floor(tonumber(ARGV[1]) / 1000) + 1000)
end
-- no burst right after the pause: the slots reserved before it are void
redis.call('SET', KEYS[3], string.format('%.0f', math.max(until_, paused)), 'PX', 120000)
local pace = redis.call('HMGET', KEYS[2], 'factor', 'reduced_at')
local factor = tonumber(pace[1] or '1')
local reduced_at = tonumber(pace[2] or '0')
if now - reduced_at < tonumber(ARGV[4]) then return {0, math.floor(factor * 1000)} end
factor = math.max(tonumber(ARGV[3]), factor * tonumber(ARGV[2]))
redis.call('HSET', KEYS[2], 'factor', tostring(factor), 'reduced_at', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[2], 3600000)
return {1, math.floor(factor * 1000)}
"""


@dataclass
class _Waiter:
    permits: int
    future: asyncio.Future[None]
    enqueued_at: float


class SharedBudget:
    """The `Budget` interface over the tenant's budget in Redis."""

    def __init__(
        self,
        redis: Redis,
        policy: BudgetPolicy,
        *,
        key_prefix: str,
        replicas: Callable[[], int] = lambda: 1,
        retry_shared_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.redis = redis
        self.replicas = replicas
        self.retry_shared_s = retry_shared_s
        self._clock = clock
        base = f"{key_prefix}:budget"
        self._keys = {"tat": f"{base}:tat", "pause": f"{base}:pause", "pace": f"{base}:pace"}
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._throttled_script = redis.register_script(_THROTTLED)
        self._queues: dict[Priority, deque[_Waiter]] = {p: deque() for p in PRIORITY_ORDER}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._shared = True
        self._last_try = -1e9
        self._fallback: RateBudget | None = None
        self._fallback_share = 0
        self._factor = 1.0
        self._paused_for_s = 0.0
        budget_shared.set(1)

    # --- what callers use -----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return "shared in Redis" if self._shared else "alone: Redis unreachable"

    async def acquire(self, priority: Priority, permits: int = 1, *, max_wait_s: float = 30.0) -> float:
        """Wait for `permits` at `priority`; returns the seconds waited. Raises BudgetTimeoutError."""
        started = self._clock()
        deadline = started + max_wait_s
        while True:
            if not self._shared and self._clock() - self._last_try >= self.retry_shared_s:
                await self._try_shared()
            if not self._shared:
                remaining = deadline - self._clock()
                if priority is Priority.BULK:
                    # Bulk work waits for the shared budget: alone, a replica cannot know what the others send.
                    await asyncio.sleep(min(self.retry_shared_s, max(remaining, 0.0)))
                    if self._clock() >= deadline:
                        raise BudgetTimeoutError(
                            f"no {priority} permit within {max_wait_s:g}s (rate budget not shared)"
                        )
                    continue
                await self._local().acquire(priority, permits, max_wait_s=max(remaining, 0.0))
                return self._clock() - started
            try:
                await self._queued(priority, permits, max(deadline - self._clock(), 0.0), max_wait_s)
                return self._clock() - started
            except _RedisUnavailableError:
                continue  # switched to the local budget: ask it

    async def report_throttled(self, retry_after_s: float | None) -> bool:
        """A 429 came back from the Gateway: pause every replica and lower the shared pace. Returns whether the pace
        was lowered (reports within one period of the last reduction only extend the pause)."""
        policy = self.policy
        pause = (
            min(retry_after_s, policy.max_pause_s)
            if retry_after_s is not None
            else min(policy.period_s, policy.pause_without_retry_after_s)
        )
        if self._shared:
            try:
                lowered, factor = await self._throttled_script(
                    keys=[self._keys["pause"], self._keys["pace"], self._keys["tat"]],
                    args=[int(pause * MICROS), policy.backoff_factor, policy.min_rate_fraction,
                          int(policy.period_s * MICROS)],
                )  # fmt: skip
                self._factor = int(factor) / 1000
                self._wake.set()
                return bool(int(lowered))
            except RedisError as exc:
                self._lose_redis(exc)
        return self._local().throttled(retry_after_s)

    def snapshot(self) -> BudgetSnapshot:
        if not self._shared and self._fallback is not None:
            local = self._fallback.snapshot()
            local.queued = {p.value: len(q) + local.queued.get(p.value, 0) for p, q in self._queues.items()}
            return local
        return BudgetSnapshot(
            rate=self.policy.rate * self._factor,
            configured_rate=self.policy.rate,
            available=0.0,
            paused_for_s=self._paused_for_s,
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
        if self._fallback is not None:
            await self._fallback.close()

    # --- shared mode: one asker per replica, in priority order ---------------------------------------------

    async def _queued(self, priority: Priority, permits: int, timeout_s: float, max_wait_s: float) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="shared-rate-budget")
        waiter = _Waiter(permits, asyncio.get_running_loop().create_future(), self._clock())
        self._queues[priority].append(waiter)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout_s)
        except TimeoutError:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                return  # granted at the last moment: keep it
            self._forget(priority, waiter)
            raise BudgetTimeoutError(f"no {priority} permit within {max_wait_s:g}s") from None
        except asyncio.CancelledError:
            self._forget(priority, waiter)
            raise

    def _forget(self, priority: Priority, waiter: _Waiter) -> None:
        if not waiter.future.done():
            waiter.future.cancel()
        with contextlib.suppress(ValueError):
            self._queues[priority].remove(waiter)

    def _head(self) -> tuple[Priority, _Waiter] | None:
        for priority in PRIORITY_ORDER:
            queue = self._queues[priority]
            while queue and queue[0].future.done():
                queue.popleft()
            if queue:
                return priority, queue[0]
        return None

    async def _dispatch(self) -> None:
        policy = self.policy
        emission_us = MICROS / policy.rate
        full = (policy.capacity - 1) * emission_us
        tolerance = {p: full if p is Priority.INTERACTIVE else max(full - policy.reserve * emission_us, 0.0)
                     for p in PRIORITY_ORDER}  # fmt: skip
        horizon_us = max(2 * emission_us, 20_000.0)
        while True:
            head = self._head()
            if head is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            priority, waiter = head
            try:
                granted, wait_us, factor = await self._acquire_script(
                    keys=[self._keys["tat"], self._keys["pause"], self._keys["pace"]],
                    args=[emission_us, tolerance[priority], waiter.permits, horizon_us, policy.min_rate_fraction,
                          policy.recovery_step_fraction, int(policy.recovery_interval_s * MICROS)],
                )  # fmt: skip
            except RedisError as exc:
                self._lose_redis(exc)
                for queue in self._queues.values():  # every waiter asks the local budget instead
                    while queue:
                        pending = queue.popleft()
                        if not pending.future.done():
                            pending.future.set_exception(_RedisUnavailableError())
                return
            self._factor = int(factor) / 1000
            wait_s = int(wait_us) / MICROS
            if int(granted):
                self._queues[priority].popleft()
                self._paused_for_s = 0.0
                if waiter.future.done():  # gave up meanwhile: the slot is spent, as a request would have been
                    continue
                if wait_s > 0:
                    # Released when its slot comes, while the next waiter already asks for the one after.
                    asyncio.get_running_loop().call_later(wait_s, _grant, waiter.future)
                else:
                    waiter.future.set_result(None)
                continue
            self._paused_for_s = wait_s if wait_s > self.policy.period_s / 10 else 0.0
            self._wake.clear()
            # A higher-priority arrival asks at once; otherwise ask again when a slot may be reservable.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait_s, 0.0005))

    # --- losing and finding Redis ------------------------------------------------------------------------------

    def _lose_redis(self, exc: BaseException) -> None:
        self._last_try = self._clock()
        if self._shared:
            self._shared = False
            budget_shared.set(0)
            log.error("rate budget: Redis unreachable (%s: %s); pacing alone at 1/%d of the tenant's rate, bulk "
                      "callers wait until it is back", type(exc).__name__, exc, max(1, self.replicas()))  # fmt: skip

    async def _try_shared(self) -> None:
        self._last_try = self._clock()
        try:
            await self.redis.ping()
        except (RedisError, OSError):
            return
        self._shared = True
        budget_shared.set(1)
        log.warning("rate budget: Redis reachable again; the tenant's budget is shared again")

    def _local(self) -> RateBudget:
        share = max(1, self.replicas())
        if self._fallback is None or share != self._fallback_share:
            alone = dataclasses.replace(self.policy, utilisation=self.policy.utilisation / share, burst_slack=0)
            previous, self._fallback, self._fallback_share = self._fallback, RateBudget(alone), share
            if previous is not None:
                asyncio.get_running_loop().create_task(previous.close())
        return self._fallback


class _RedisUnavailableError(Exception):
    """Redis failed while this waiter was queued for it: ask the local budget."""


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
