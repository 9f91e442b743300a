"""The central rate budget. Assertions are about order and upper bounds per window, which a slow or noisy
machine can only make easier to meet, never about how fast something ran."""

import asyncio
import itertools
import time

import pytest

from services.token_service.budget import BudgetPolicy, BudgetTimeoutError, RateBudget
from shared.m3.lease import Priority


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_with_rate_smoothing_the_pace_stays_below_the_delay_after_count() -> None:
    """Past delayAfterCount in a period the Gateway delays every further request: the budget paces below that count
    rather than at the spike-arrest maximum (which would be served, but slower for everyone)."""
    policy = BudgetPolicy(period_s=0.2, max_requests_per_period=40, utilisation=0.7, delay_after_count=10)
    assert policy.rate == pytest.approx(0.7 * 10 / 0.2)
    assert policy.worst_case_per_period == pytest.approx(10)
    assert BudgetPolicy(max_requests_per_period=40, delay_after_count=100).rate == pytest.approx(0.96 * 40)
    with pytest.raises(ValueError, match="delay_after_count"):
        BudgetPolicy(delay_after_count=0)
    budget = RateBudget(policy)
    granted: list[float] = []

    async def caller() -> None:
        for _ in range(10):
            await budget.acquire(Priority.TRANSACTIONAL, max_wait_s=10)
            granted.append(time.monotonic())

    await asyncio.gather(caller(), caller(), caller())
    await budget.close()
    assert max_in_any_window(granted, policy.period_s) <= 10  # delay_after_count


async def test_grants_never_exceed_the_policy_in_any_window() -> None:
    policy = BudgetPolicy(period_s=0.2, max_requests_per_period=10, utilisation=0.7, interactive_reserve=1)
    assert policy.worst_case_per_period == 10
    budget = RateBudget(policy)
    granted: list[float] = []

    async def caller(priority: Priority) -> None:
        for _ in range(8):
            await budget.acquire(priority, max_wait_s=10)
            granted.append(time.monotonic())

    await asyncio.gather(*(caller(p) for p in (Priority.BULK, Priority.BULK, Priority.TRANSACTIONAL)))
    await budget.close()
    assert len(granted) == 24
    # utilisation x max + reserve + 1 + slack = 7 + 3 = 10 = the Gateway's maximum per period.
    assert max_in_any_window(granted, policy.period_s) <= policy.max_requests_per_period


async def test_interactive_overtakes_queued_bulk() -> None:
    budget = RateBudget(BudgetPolicy(period_s=1.0, max_requests_per_period=20, utilisation=1.0, interactive_reserve=0))
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await budget.acquire(priority, max_wait_s=10)
        order.append(name)

    bulk = [asyncio.create_task(take(f"bulk{i}", Priority.BULK)) for i in range(6)]
    await asyncio.sleep(0.01)
    await asyncio.gather(take("interactive", Priority.INTERACTIVE), take("order", Priority.TRANSACTIONAL))
    await asyncio.gather(*bulk)
    await budget.close()
    assert order.index("interactive") < order.index("order") < order.index("bulk5")
    assert order.index("interactive") <= 2  # at most the one or two bulk permits already granted before it came


async def test_the_reserve_is_kept_for_interactive() -> None:
    policy = BudgetPolicy(period_s=10.0, max_requests_per_period=1, utilisation=1.0, interactive_reserve=1)
    budget = RateBudget(policy)
    # The bucket starts full with reserve + 1 + slack = 3 permits: bulk may take two, never the reserve.
    await budget.acquire(Priority.BULK, max_wait_s=1)
    await budget.acquire(Priority.BULK, max_wait_s=1)
    with pytest.raises(BudgetTimeoutError):
        await budget.acquire(Priority.BULK, max_wait_s=0.05)
    await budget.acquire(Priority.INTERACTIVE, max_wait_s=5)  # granted from the reserve bulk could not take
    await budget.close()


async def test_a_429_pauses_everyone_and_lowers_the_pace_once_per_burst() -> None:
    policy = BudgetPolicy(period_s=0.5, max_requests_per_period=50, utilisation=1.0, recovery_interval_s=100)
    budget = RateBudget(policy)
    await budget.acquire(Priority.BULK)
    reported = time.monotonic()
    assert budget.throttled(retry_after_s=0.3) is True
    assert budget.throttled(retry_after_s=0.3) is False  # a second service reporting the same burst
    assert budget.snapshot().rate == pytest.approx(policy.rate * policy.backoff_factor)
    await budget.acquire(Priority.INTERACTIVE, max_wait_s=5)
    assert time.monotonic() - reported >= 0.3
    await budget.close()


async def test_without_retry_after_the_pause_is_one_period() -> None:
    budget = RateBudget(BudgetPolicy(period_s=0.2, max_requests_per_period=50))
    reported = time.monotonic()
    budget.throttled(retry_after_s=None)
    await budget.acquire(Priority.INTERACTIVE, max_wait_s=5)
    assert time.monotonic() - reported >= 0.2
    await budget.close()


async def test_pace_recovers_in_steps_after_throttling() -> None:
    policy = BudgetPolicy(
        period_s=0.05, max_requests_per_period=10, recovery_interval_s=0.01, recovery_step_fraction=0.5
    )
    budget = RateBudget(policy)
    budget.throttled(retry_after_s=0)
    assert budget.snapshot().rate < policy.rate
    for _ in range(5):
        await budget.acquire(Priority.BULK, max_wait_s=5)
        await asyncio.sleep(0.02)
    assert budget.snapshot().rate == pytest.approx(policy.rate)
    await budget.close()


async def test_timed_out_waiters_leave_the_queue() -> None:
    budget = RateBudget(BudgetPolicy(period_s=100.0, max_requests_per_period=1, interactive_reserve=0, burst_slack=0))
    await budget.acquire(Priority.BULK)
    with pytest.raises(BudgetTimeoutError, match="bulk"):
        await budget.acquire(Priority.BULK, max_wait_s=0.05)
    assert budget.snapshot().queued == {"interactive": 0, "transactional": 0, "bulk": 0}
    await budget.close()


async def test_smoothed_policies_get_no_bursts() -> None:
    policy = BudgetPolicy(period_s=0.1, max_requests_per_period=10, utilisation=0.8, smoothed=True)
    assert policy.capacity == 1
    budget = RateBudget(policy)
    granted: list[float] = []
    for _ in range(6):
        await budget.acquire(Priority.BULK, max_wait_s=5)
        granted.append(time.monotonic())
    await budget.close()
    # One at once from the full bucket, then one every period / (utilisation x N) = 12.5 ms, never closer.
    gaps = [b - a for a, b in itertools.pairwise(granted)]
    assert min(gaps) >= 0.0125 * 0.95


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="utilisation"):
        BudgetPolicy(utilisation=1.5)
    with pytest.raises(ValueError, match="positive"):
        BudgetPolicy(max_requests_per_period=0)


async def test_without_retry_after_a_long_period_pauses_at_most_five_seconds() -> None:
    budget = RateBudget(BudgetPolicy(period_s=60.0, max_requests_per_period=3000))
    budget.throttled(retry_after_s=None)
    assert 4.9 < budget.snapshot().paused_for_s <= 5.0
    await budget.close()


async def test_one_report_pauses_everyone_for_at_most_the_longest_pause() -> None:
    budget = RateBudget(BudgetPolicy(period_s=1.0, max_requests_per_period=50, max_pause_s=60.0))
    budget.throttled(retry_after_s=3600)  # a Gateway asking for an hour, or a caller's bug
    assert 59.9 < budget.snapshot().paused_for_s <= 60.0
    budget.throttled(retry_after_s=10)  # a shorter one does not shorten the pause
    assert budget.snapshot().paused_for_s > 59.9
    await budget.close()
