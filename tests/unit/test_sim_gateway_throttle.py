"""The ION API Gateway simulator: throttling (windowed, smoothed, tenant-wide), latency and faults (5xx, late 504,
cut connections), the admin plane and its counters."""

from __future__ import annotations

import asyncio
import time

import pytest

from simulators.ion.config import FaultProfile, LatencyProfile, ThrottlePolicy
from simulators.ion.gateway import SimulatedConnectionDropError
from tests.unit.sim_gateway_client import (
    call_m3,
    client_for,
    creds,
    make_app,
    password_token,
)

pytestmark = pytest.mark.unit


async def test_windowed_throttle_allows_exactly_max_then_429_until_the_period_passes() -> None:
    app = make_app(throttle=ThrottlePolicy(time_period_ms=500, max_requests_per_period=5))
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        statuses = [(await call_m3(client, token)).status_code for _ in range(5)]
        throttled = await call_m3(client, token)
        await asyncio.sleep(0.6)
        after = await call_m3(client, token)
    assert statuses == [200] * 5
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "1"
    assert after.status_code == 200
    stats = app.state.ion.gateway.stats
    assert (stats.accepted, stats.throttled) == (6, 1)


async def test_throttle_is_tenant_wide_across_callers() -> None:
    app = make_app(throttle=ThrottlePolicy(time_period_ms=5000, max_requests_per_period=2))
    config = creds(app)
    async with client_for(app) as client:
        one = (await password_token(client, config))["access_token"]
        two = (await password_token(client, config))["access_token"]
        statuses = [(await call_m3(client, t)).status_code for t in (one, two, one, two)]
    assert statuses == [200, 200, 429, 429]


async def test_smoothed_throttle_rejects_a_burst_but_passes_even_pacing() -> None:
    # 5 per second smoothed = one request every 200 ms.
    app = make_app(throttle=ThrottlePolicy(time_period_ms=1000, max_requests_per_period=5, mode="smoothed"))
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        burst = [(await call_m3(client, token)).status_code for _ in range(5)]
        paced = []
        for _ in range(4):
            await asyncio.sleep(0.3)
            paced.append((await call_m3(client, token)).status_code)
    assert burst[0] == 200
    assert burst.count(429) >= 3  # the period total (5) is within the limit, yet the burst is throttled
    assert paced == [200] * 4


async def test_no_retry_after_when_not_configured() -> None:
    app = make_app(throttle=ThrottlePolicy(time_period_ms=5000, max_requests_per_period=1), retry_after_s=None)
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        assert (await call_m3(client, token)).status_code == 200
        throttled = await call_m3(client, token)
    assert throttled.status_code == 429
    assert "retry-after" not in throttled.headers


async def test_rate_smoothing_delays_requests_after_the_count() -> None:
    policy = ThrottlePolicy(
        time_period_ms=10_000, max_requests_per_period=100, delay_after_count=2, delay_factor_ms=300
    )
    app = make_app(throttle=policy)
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        elapsed = []
        for _ in range(3):
            start = time.perf_counter()
            assert (await call_m3(client, token)).status_code == 200
            elapsed.append(time.perf_counter() - start)
    # Only the third request is past the count: it is delayed (a lower bound, which a slow machine cannot break).
    assert app.state.ion.gateway.stats.delayed == 1
    assert elapsed[2] >= 0.28


def test_throttle_policy_from_gateway_xml_and_baas_json() -> None:
    xml = """<throttling xmlns="http://www.infor.com/ion/api" name="t" displayName="t" enabled="true" version="1.0">
     <timePeriodInMilliseconds>60000</timePeriodInMilliseconds>
     <rateSmoothing><delayAfterCount>5</delayAfterCount><delayFactorInMilliseconds>1000</delayFactorInMilliseconds>
     </rateSmoothing>
     <spikeArrest><maxRequestsPerPeriod>20</maxRequestsPerPeriod></spikeArrest></throttling>"""
    policy = ThrottlePolicy.from_xml(xml)
    assert policy == ThrottlePolicy(
        time_period_ms=60000, max_requests_per_period=20, delay_after_count=5, delay_factor_ms=1000
    )
    only_spike = ThrottlePolicy.from_xml(
        "<throttling><timePeriodInMilliseconds>1000</timePeriodInMilliseconds>"
        "<spikeArrest><maxRequestsPerPeriod>3</maxRequestsPerPeriod></spikeArrest></throttling>",
        mode="smoothed",
    )
    assert (only_spike.delay_after_count, only_spike.max_requests_per_period, only_spike.mode) == (None, 3, "smoothed")
    with pytest.raises(ValueError, match="delayAfterCount"):
        ThrottlePolicy.from_xml(
            "<throttling><timePeriodInMilliseconds>1</timePeriodInMilliseconds><rateSmoothing/></throttling>"
        )
    baas = ThrottlePolicy.from_baas_json(
        {
            "timePeriodInMilliseconds": 60000,
            "rateSmoothing.delayAfterCount": 500,
            "rateSmoothing.delayFactorInMilliseconds": 1000,
            "spikeArrest.maxRequestsPerPeriod": 1000,
        }
    )
    assert (baas.max_requests_per_period, baas.delay_after_count, baas.delay_factor_ms) == (1000, 500, 1000)


async def test_admin_puts_throttle_as_json_or_xml() -> None:
    app = make_app()
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        xml = (
            "<throttling><timePeriodInMilliseconds>5000</timePeriodInMilliseconds>"
            "<spikeArrest><maxRequestsPerPeriod>1</maxRequestsPerPeriod></spikeArrest></throttling>"
        )
        put = await client.put("/__admin/throttle", content=xml, headers={"Content-Type": "application/xml"})
        assert put.status_code == 200
        statuses = [(await call_m3(client, token)).status_code for _ in range(2)]
        assert statuses == [200, 429]
        put_json = await client.put("/__admin/throttle", json={"enabled": False})
        assert put_json.json()["enabled"] is False
        assert (await call_m3(client, token)).status_code == 200
        bad = await client.put("/__admin/throttle", json={"time_period_ms": 0})
    assert bad.status_code == 422


# -- latency and faults ----------------------------------------------------------------------------------------
async def test_latency_is_added() -> None:
    app = make_app(latency=LatencyProfile(base_ms=150))
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        start = time.perf_counter()
        assert (await call_m3(client, token)).status_code == 200
    assert time.perf_counter() - start >= 0.14


async def test_error_faults_give_5xx_without_reaching_m3() -> None:
    calls: list[str] = []
    app = make_app(calls, faults=FaultProfile(error_rate=1.0))
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        statuses = [(await call_m3(client, token)).status_code for _ in range(20)]
        await client.put("/__admin/faults", json={"error_rate": 1.0, "status_weights": {"503": 1}})
        only_503 = (await call_m3(client, token)).status_code
        stats = (await client.get("/__admin/stats")).json()["gateway"]
    assert set(statuses) <= {500, 502, 503, 504}
    assert len(set(statuses)) > 1
    assert only_503 == 503
    assert calls == []
    assert stats["faults_total"] == 21


async def test_timeout_fault_processes_then_answers_504_late() -> None:
    calls: list[str] = []
    app = make_app(calls, faults=FaultProfile(timeout_rate=1.0, gateway_timeout_s=0.2))
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        start = time.perf_counter()
        response = await call_m3(client, token)
    assert response.status_code == 504
    assert time.perf_counter() - start >= 0.19
    assert calls == ["CRS610MI/LstByNumber"]  # the outcome is unknown to the caller, but the target did it
    assert app.state.ion.gateway.stats.faults["timeout"] == 1


async def test_drop_fault_processes_then_cuts_the_connection() -> None:
    calls: list[str] = []
    app = make_app(calls, faults=FaultProfile(drop_rate=1.0))
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        with pytest.raises(SimulatedConnectionDropError):
            await call_m3(client, token)
    assert calls == ["CRS610MI/LstByNumber"]
    assert app.state.ion.gateway.stats.faults["drop"] == 1


# -- stats -----------------------------------------------------------------------------------------------------
async def test_stats_counters_and_reset() -> None:
    app = make_app(throttle=ThrottlePolicy(time_period_ms=5000, max_requests_per_period=3))
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        for _ in range(4):
            await call_m3(client, token)
        await call_m3(client, "nope")
        stats = (await client.get("/__admin/stats", params={"times": "true"})).json()
        reset = (await client.post("/__admin/reset-stats")).json()
    gateway, auth = stats["gateway"], stats["auth"]
    assert (gateway["accepted"], gateway["throttled"], gateway["unauthorized"]) == (3, 1, 1)
    assert gateway["accepted_by_user"] == {creds(app).saak: 3}
    assert len(gateway["accepted_times"]) == 3
    assert gateway["peak_accepted_per_period"] == 3
    assert gateway["peak_share_of_limit"] == 1.0
    assert auth["tokens_issued"] == {"password": 1}
    assert auth["active_tokens"] == 1
    assert reset["gateway"]["accepted"] == 0
    assert reset["auth"]["tokens_issued_total"] == 0


# -- the .ionapi file ------------------------------------------------------------------------------------------


async def test_a_stall_of_the_simulators_event_loop_is_recorded_beside_the_429s_times() -> None:
    """The simulator counts a request when its loop gets to it: benchmarks set its stalls beside the 429s."""
    app = make_app(throttle=ThrottlePolicy(time_period_ms=5000, max_requests_per_period=1), probe_loop=True)
    gateway = app.state.ion.gateway
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        assert (await call_m3(client, token)).status_code == 200  # the first request starts the probe
        await asyncio.sleep(0)
        time.sleep(0.08)  # noqa: ASYNC251 - the stall under test
        for _ in range(200):
            if gateway.stats.late_loop:
                break
            await asyncio.sleep(0.005)
        assert (await call_m3(client, token)).status_code == 429
    assert gateway._loop_probe is not None
    gateway._loop_probe.cancel()
    [(stalled_at, late_ms)] = list(gateway.stats.late_loop)
    assert late_ms >= 50
    assert len(gateway.stats.throttled_times) == 1
    assert app.state.ion.stats(include_times=True)["gateway"]["late_loop"] == [[stalled_at, late_ms]]
