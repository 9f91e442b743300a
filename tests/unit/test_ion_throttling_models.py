"""The ION API Gateway simulator's throttling models: fixed or sliding period (`window`), constant or linear
rate-smoothing delay (`delay_growth`). Infor documents spike arrest as a count per period (429 past it) and rate
smoothing as a delay past `delayAfterCount`, but neither which period nor whether the delay grows, so the bridge is
tested against every combination.

`Throttle.admit(now, closed)` is driven with explicit times (seconds; binary fractions, so the arithmetic is exact),
without sleeping; one test goes through the ASGI app and its admin plane.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from simulators.ion.config import ThrottlePolicy, ThrottleWindow
from simulators.ion.gateway import GatewayStats, Throttle
from tests.unit.sim_gateway_client import call_m3, client_for, creds, make_app, password_token

pytestmark = pytest.mark.unit

N = 5
WINDOWS: tuple[ThrottleWindow, ...] = ("fixed", "sliding")


def throttle(**fields: Any) -> Throttle:
    return Throttle(ThrottlePolicy(**{"time_period_ms": 1000, "max_requests_per_period": N, **fields}))


def run(gate: Throttle, times: list[float], closed: deque[int] | None = None) -> list[bool]:
    """Whether each request, arriving at the given times, was accepted."""
    sink: deque[int] = deque() if closed is None else closed
    return [gate.admit(now, sink)[0] for now in times]


def delays(gate: Throttle, times: list[float]) -> list[float | None]:
    """Each request's smoothing delay (seconds), None when rejected."""
    sink: deque[int] = deque()
    out: list[float | None] = []
    for now in times:
        accepted, delay = gate.admit(now, sink)
        out.append(delay if accepted else None)
    return out


# -- spike arrest: fixed vs sliding --------------------------------------------------------------------------------
def test_fixed_window_lets_a_burst_at_the_end_of_one_period_and_the_start_of_the_next_through() -> None:
    gate = throttle(window="fixed")
    closed: deque[int] = deque()
    # The period opens at 0; N-1 more at its very end, then N right after it ended (a new period opens at 1.0).
    end_of_first = [0.0] + [0.9375] * (N - 1)
    start_of_next = [1.0 + i / 64 for i in range(N)]
    assert run(gate, end_of_first + start_of_next, closed) == [True] * (2 * N)
    # 2N-1 of them within 1/8 of a period (all 2N within 1.0625 periods): nearly twice the limit. Exactly 2N within
    # less than one period cannot happen here, since a fixed period opens with its first request.
    assert start_of_next[-1] - end_of_first[1] <= 0.125
    assert list(closed) == [N]
    assert run(gate, [1.5]) == [False]  # the second period is full too


def test_sliding_window_keeps_any_one_period_within_the_limit() -> None:
    gate = throttle(window="sliding")
    closed: deque[int] = deque()
    end_of_first = [0.0] + [0.9375] * (N - 1)
    start_of_next = [1.0 + i / 64 for i in range(N)]
    # At 1.0 the request of 0.0 has left the last period: room for one, not for N.
    assert run(gate, end_of_first + start_of_next, closed) == [True] * N + [True] + [False] * (N - 1)
    # Once the N-1 of 0.9375 have left the last period, N-1 more pass, and no more.
    assert run(gate, [1.9375] * N) == [True] * (N - 1) + [False]
    assert list(closed) == []  # a sliding window never closes


@pytest.mark.parametrize("window", WINDOWS)
def test_the_n_plus_first_request_in_a_period_gets_429(window: ThrottleWindow) -> None:
    gate = throttle(window=window)
    assert run(gate, [0.0] * N) == [True] * N
    assert run(gate, [0.0, 0.5, 0.9921875]) == [False, False, False]
    assert run(gate, [1.0]) == [True]  # a period after the first ones: room again


@pytest.mark.parametrize("window", WINDOWS)
def test_no_spike_arrest_means_no_429(window: ThrottleWindow) -> None:
    gate = throttle(window=window, max_requests_per_period=None)
    assert run(gate, [0.0] * (10 * N)) == [True] * (10 * N)


# -- rate smoothing: constant vs linear ----------------------------------------------------------------------------
@pytest.mark.parametrize("window", WINDOWS)
def test_constant_delay_past_the_count(window: ThrottleWindow) -> None:
    gate = throttle(window=window, max_requests_per_period=10, delay_after_count=2, delay_factor_ms=100)
    assert delays(gate, [0.0] * 6) == pytest.approx([0.0, 0.0, 0.1, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("window", WINDOWS)
def test_linear_delay_grows_with_the_count_past_it(window: ThrottleWindow) -> None:
    gate = throttle(
        window=window, max_requests_per_period=10, delay_after_count=2, delay_factor_ms=100, delay_growth="linear"
    )
    assert delays(gate, [0.0] * 6) == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.4])
    # A period later the count has gone: no delay.
    assert delays(gate, [1.0]) == [0.0]


def test_delays_come_before_any_429() -> None:
    # Infor's documented example, scaled: delay past 5 in the period, 429 from the 21st.
    gate = throttle(max_requests_per_period=20, delay_after_count=5, delay_factor_ms=1000)
    got = delays(gate, [0.0] * 21)
    assert got[:5] == [0.0] * 5
    assert got[5:20] == pytest.approx([1.0] * 15)
    assert got[20] is None


def test_sliding_delay_counts_the_last_period_and_fixed_the_current_one() -> None:
    fields: dict[str, Any] = {
        "max_requests_per_period": 10,
        "delay_after_count": 2,
        "delay_factor_ms": 100,
        "delay_growth": "linear",
    }
    times = [0.0, 0.5, 0.75, 1.25]
    # Fixed: 1.25 opens a new period (the first began at 0.0): its first request, no delay.
    assert delays(throttle(window="fixed", **fields), times) == pytest.approx([0.0, 0.0, 0.1, 0.0])
    # Sliding: at 1.25 the last period holds 0.5 and 0.75, so it is the 3rd: the 1st past the count.
    assert delays(throttle(window="sliding", **fields), times) == pytest.approx([0.0, 0.0, 0.1, 0.1])


# -- rejected requests do not count --------------------------------------------------------------------------------
def test_rejected_requests_do_not_count_in_a_sliding_window() -> None:
    gate = throttle(window="sliding", max_requests_per_period=3, delay_after_count=1, delay_factor_ms=100)
    assert run(gate, [0.0] * 3) == [True] * 3
    assert run(gate, [0.5] * 10) == [False] * 10
    # Had the rejected ones counted, they would fill the last period until 1.5.
    assert delays(gate, [1.0, 1.0, 1.0, 1.0]) == pytest.approx([0.0, 0.1, 0.1, None])


def test_rejected_requests_do_not_count_in_a_fixed_window() -> None:
    gate = throttle(
        window="fixed", max_requests_per_period=3, delay_after_count=1, delay_factor_ms=100, delay_growth="linear"
    )
    closed: deque[int] = deque()
    assert run(gate, [0.0] * 3 + [0.5] * 10, closed) == [True] * 3 + [False] * 10
    assert run(gate, [1.0], closed) == [True]
    assert list(closed) == [3]
    # The 2nd and 3rd of the new period: 1 and 2 past the count; the 4th is over the limit.
    assert delays(gate, [1.0, 1.0, 1.0]) == pytest.approx([0.1, 0.2, None])


def test_smoothed_spike_arrest_still_works_with_either_window() -> None:
    # Apigee-style: 4 per second = one every 250 ms; rejected ones do not move the last accepted.
    for window in WINDOWS:
        gate = throttle(window=window, max_requests_per_period=4, mode="smoothed")
        assert run(gate, [0.0, 0.125, 0.25, 0.375, 0.5]) == [True, False, True, False, True]


# -- stats ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("window", WINDOWS)
def test_stats_peak_and_closed_windows(window: ThrottleWindow) -> None:
    gate = throttle(window=window)
    stats = GatewayStats()
    for now in [0.0] + [0.9375] * (N - 1) + [1.0 + i / 64 for i in range(N)] + [2.5]:
        if gate.admit(now, stats.windows)[0]:
            stats.accepted_times.append(now)
    data = stats.snapshot(gate.policy)
    assert data["window"] == window
    if window == "fixed":
        assert data["peak_accepted_per_period"] == 2 * N - 1  # above the limit: the fixed window's blind spot
        assert data["closed_windows"] == [N, N]
    else:
        assert data["peak_accepted_per_period"] == N
        assert data["closed_windows"] == []


# -- the policy model and the admin plane ----------------------------------------------------------------------
def test_policy_defaults_and_loaders_take_the_new_choices() -> None:
    default = ThrottlePolicy()
    assert (default.mode, default.window, default.delay_growth) == ("windowed", "fixed", "constant")
    xml = (
        "<throttling><timePeriodInMilliseconds>60000</timePeriodInMilliseconds>"
        "<rateSmoothing><delayAfterCount>5</delayAfterCount><delayFactorInMilliseconds>1000</delayFactorInMilliseconds>"
        "</rateSmoothing><spikeArrest><maxRequestsPerPeriod>20</maxRequestsPerPeriod></spikeArrest></throttling>"
    )
    from_xml = ThrottlePolicy.from_xml(xml, window="sliding", delay_growth="linear")
    assert (from_xml.mode, from_xml.window, from_xml.delay_growth) == ("windowed", "sliding", "linear")
    assert ThrottlePolicy.from_xml(xml).window == "fixed"
    baas = ThrottlePolicy.from_baas_json(
        {"timePeriodInMilliseconds": 60000, "spikeArrest.maxRequestsPerPeriod": 20},
        mode="smoothed",
        window="sliding",
        delay_growth="linear",
    )
    assert (baas.mode, baas.window, baas.delay_growth) == ("smoothed", "sliding", "linear")
    assert ThrottlePolicy.model_validate_json(from_xml.model_dump_json()) == from_xml
    with pytest.raises(ValueError, match="window"):
        ThrottlePolicy.model_validate({"window": "rolling"})
    with pytest.raises(ValueError, match="delay_growth"):
        ThrottlePolicy.model_validate({"delay_growth": "exponential"})


async def test_admin_puts_a_sliding_policy_and_the_gateway_answers_429() -> None:
    app = make_app()
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        policy = {
            "time_period_ms": 60_000,
            "max_requests_per_period": 2,
            "window": "sliding",
            "delay_growth": "linear",
        }
        put = await client.put("/__admin/throttle", json=policy)
        assert put.status_code == 200, put.text
        assert (put.json()["window"], put.json()["delay_growth"]) == ("sliding", "linear")
        statuses = [(await call_m3(client, token)).status_code for _ in range(3)]
        stats = (await client.get("/__admin/stats")).json()["gateway"]
        xml = (
            "<throttling><timePeriodInMilliseconds>1000</timePeriodInMilliseconds>"
            "<spikeArrest><maxRequestsPerPeriod>3</maxRequestsPerPeriod></spikeArrest></throttling>"
        )
        xml_headers = {"Content-Type": "application/xml"}
        put_xml = await client.put(
            "/__admin/throttle", content=xml, headers=xml_headers, params={"window": "sliding", "mode": "smoothed"}
        )
        bad_json = await client.put("/__admin/throttle", json={"window": "rolling"})
        bad_xml = await client.put("/__admin/throttle", content=xml, headers=xml_headers, params={"window": "rolling"})
    assert statuses == [200, 200, 429]
    assert (stats["accepted"], stats["throttled"], stats["window"]) == (2, 1, "sliding")
    assert stats["throttle"]["window"] == "sliding"
    assert put_xml.status_code == 200
    assert (put_xml.json()["window"], put_xml.json()["mode"], put_xml.json()["delay_growth"]) == (
        "sliding",
        "smoothed",
        "constant",
    )
    assert bad_json.status_code == 422
    assert bad_xml.status_code == 422
