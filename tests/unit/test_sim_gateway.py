"""The ION API Gateway simulator: OAuth 2 server, bearer check, throttling, faults, admin plane, .ionapi file."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request

from shared.ionapi import IonApiCredentials
from simulators.ion.app import create_app
from simulators.ion.auth import ionapi_dict, write_ionapi
from simulators.ion.config import FaultProfile, IonSimConfig, LatencyProfile, ThrottlePolicy
from simulators.ion.gateway import SimulatedConnectionDropError

pytestmark = pytest.mark.unit

BASE = "http://ion.test"
TENANT = "M3BRIDGE_TST"
M3 = f"/{TENANT}/M3/m3api-rest"
TOKEN_URL = f"/{TENANT}/as/token.oauth2"
REVOKE_URL = f"/{TENANT}/as/revoke_token.oauth2"
NO_THROTTLE = ThrottlePolicy(enabled=False)


def stub_router(calls: list[str]) -> APIRouter:
    """Stands in for the M3 MI router: records each call that reached it."""
    router = APIRouter()

    @router.get("/execute/{program}/{transaction}")
    async def execute(program: str, transaction: str, request: Request) -> dict[str, Any]:
        calls.append(f"{program}/{transaction}")
        return {"ok": True, "user": request.state.user, "pad": "x" * 200}

    return router


def make_app(calls: list[str] | None = None, **overrides: Any) -> FastAPI:
    overrides.setdefault("throttle", NO_THROTTLE)
    return create_app(IonSimConfig(**overrides), m3_router=stub_router([] if calls is None else calls))


@asynccontextmanager
async def client_for(app: FastAPI, *, raise_app_exceptions: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


def creds(app: FastAPI) -> IonSimConfig:
    config: IonSimConfig = app.state.ion.config
    return config


async def password_token(client: httpx.AsyncClient, config: IonSimConfig) -> dict[str, Any]:
    response = await client.post(
        TOKEN_URL,
        auth=(config.client_id, config.client_secret.get_secret_value()),
        data={"grant_type": "password", "username": config.saak, "password": config.sask.get_secret_value()},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call_m3(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get(f"{M3}/execute/CRS610MI/LstByNumber", headers=bearer(token))


# -- OAuth 2 ---------------------------------------------------------------------------------------------------
async def test_password_grant_with_basic_client_auth() -> None:
    app = make_app()
    async with client_for(app) as client:
        response = await client.post(
            TOKEN_URL,
            auth=(creds(app).client_id, creds(app).client_secret.get_secret_value()),
            data={
                "grant_type": "password",
                "username": creds(app).saak,
                "password": creds(app).sask.get_secret_value(),
            },
        )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 7200
    assert body["access_token"]
    assert body["refresh_token"]
    assert response.headers["cache-control"] == "no-store"


async def test_password_grant_with_body_client_auth_and_token_subject_is_saak() -> None:
    app = make_app()
    config = creds(app)
    async with client_for(app) as client:
        response = await client.post(
            TOKEN_URL,
            data={
                "grant_type": "password",
                "username": config.saak,
                "password": config.sask.get_secret_value(),
                "client_id": config.client_id,
                "client_secret": config.client_secret.get_secret_value(),
            },
        )
        assert response.status_code == 200
        m3 = await call_m3(client, response.json()["access_token"])
    assert m3.status_code == 200
    assert m3.json()["user"] == config.saak == f"{TENANT}#svc-account"


async def test_client_credentials_grant_subject_is_client_id() -> None:
    app = make_app()
    config = creds(app)
    async with client_for(app) as client:
        response = await client.post(
            TOKEN_URL,
            auth=(config.client_id, config.client_secret.get_secret_value()),
            data={"grant_type": "client_credentials"},
        )
        assert response.status_code == 200
        body = response.json()
        assert "refresh_token" not in body
        m3 = await call_m3(client, body["access_token"])
    assert m3.json()["user"] == config.client_id == f"{TENANT}~m3bridge-sim"
    assert app.state.ion.auth.stats.issued["client_credentials"] == 1


async def test_wrong_client_secret_is_invalid_client_401() -> None:
    app = make_app()
    config = creds(app)
    form = {"grant_type": "password", "username": config.saak, "password": config.sask.get_secret_value()}
    async with client_for(app) as client:
        basic = await client.post(TOKEN_URL, auth=(config.client_id, "wrong"), data=form)
        body = await client.post(TOKEN_URL, data={**form, "client_id": config.client_id, "client_secret": "wrong"})
        missing = await client.post(TOKEN_URL, data=form)
    for response in (basic, body, missing):
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
    assert basic.headers["www-authenticate"].startswith("Basic")


async def test_wrong_sask_is_invalid_grant_400_and_unknown_grant_type() -> None:
    app = make_app()
    config = creds(app)
    client_auth = (config.client_id, config.client_secret.get_secret_value())
    async with client_for(app) as client:
        bad = await client.post(
            TOKEN_URL, auth=client_auth, data={"grant_type": "password", "username": config.saak, "password": "nope"}
        )
        unknown = await client.post(TOKEN_URL, auth=client_auth, data={"grant_type": "implicit"})
        not_form = await client.post(TOKEN_URL, auth=client_auth, json={"grant_type": "client_credentials"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_grant")
    assert (unknown.status_code, unknown.json()["error"]) == (400, "unsupported_grant_type")
    assert (not_form.status_code, not_form.json()["error"]) == (400, "invalid_request")


async def test_refresh_token_grant_rotates_the_refresh_token() -> None:
    app = make_app()
    config = creds(app)
    client_auth = (config.client_id, config.client_secret.get_secret_value())
    async with client_for(app) as client:
        first = await password_token(client, config)
        form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        refreshed = await client.post(TOKEN_URL, auth=client_auth, data=form)
        again = await client.post(TOKEN_URL, auth=client_auth, data=form)
        assert refreshed.status_code == 200
        m3 = await call_m3(client, refreshed.json()["access_token"])
    assert m3.json()["user"] == config.saak
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


# -- bearer check ----------------------------------------------------------------------------------------------
async def test_missing_garbage_and_non_bearer_tokens_are_401() -> None:
    calls: list[str] = []
    app = make_app(calls)
    async with client_for(app) as client:
        missing = await client.get(f"{M3}/execute/CRS610MI/LstByNumber")
        garbage = await call_m3(client, "garbage")
        basic = await client.get(f"{M3}/execute/CRS610MI/LstByNumber", headers={"Authorization": "Basic eDp5"})
        other_api = await client.get(f"/{TENANT}/IONSERVICES/api/ion/messaging/service/ping")
    for response in (missing, garbage, basic, other_api):
        assert response.status_code == 401
        assert response.json() == {"error": "Unauthorized"}
    assert calls == []
    assert app.state.ion.gateway.stats.unauthorized == 4


async def test_expired_tokens_are_401() -> None:
    app = make_app()
    async with client_for(app) as client:
        token = (await password_token(client, creds(app)))["access_token"]
        assert (await call_m3(client, token)).status_code == 200
        expired = await client.post("/__admin/tokens/expire")
        assert expired.json() == {"expired": 2}  # the access token and its refresh token
        assert (await call_m3(client, token)).status_code == 401

    app_ttl0 = make_app(token_ttl_s=0)
    async with client_for(app_ttl0) as client:
        body = await password_token(client, creds(app_ttl0))
        assert body["expires_in"] == 0
        assert (await call_m3(client, body["access_token"])).status_code == 401


async def test_revoked_token_is_401() -> None:
    app = make_app()
    config = creds(app)
    async with client_for(app) as client:
        token = (await password_token(client, config))["access_token"]
        revoke = await client.post(
            REVOKE_URL,
            auth=(config.client_id, config.client_secret.get_secret_value()),
            data={"token": token, "token_type_hint": "access_token"},
        )
        assert revoke.status_code == 200
        assert (await call_m3(client, token)).status_code == 401
        bad_client = await client.post(REVOKE_URL, auth=(config.client_id, "x"), data={"token": token})
    assert bad_client.status_code == 401
    assert app.state.ion.auth.stats.revocations == 1


async def test_admin_and_health_are_not_behind_oauth_and_unknown_tenant_paths_404() -> None:
    app = make_app()
    async with client_for(app) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        assert (await client.get("/__admin/stats")).status_code == 200
        token = (await password_token(client, creds(app)))["access_token"]
        unknown = await client.get(f"/{TENANT}/NOPE/x", headers=bearer(token))
    assert unknown.status_code == 404


# -- throttling ------------------------------------------------------------------------------------------------
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
def test_write_ionapi_has_all_keys_and_mode_0600(tmp_path: Path) -> None:
    config = IonSimConfig()
    path = write_ionapi(tmp_path / "var" / "sim.ionapi", config, "http://127.0.0.1:8200/")
    data = json.loads(path.read_text())
    assert set(data) == {"ti", "cn", "dt", "ci", "cs", "iu", "pu", "oa", "ot", "or", "ev", "v", "saak", "sask"}
    assert data["ti"] == TENANT
    assert data["dt"] == "12"
    assert data["v"] == "1.0"
    assert data["iu"] == "http://127.0.0.1:8200"
    assert data["pu"] == f"http://127.0.0.1:8200/{TENANT}/as/"
    assert (data["oa"], data["ot"], data["or"]) == ("authorization.oauth2", "token.oauth2", "revoke_token.oauth2")
    assert data["cs"] == config.client_secret.get_secret_value()
    assert data["sask"] == config.sask.get_secret_value()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "saak" not in ionapi_dict(config, "http://x", service_account=False)


def test_secrets_are_not_in_the_config_repr() -> None:
    config = IonSimConfig()
    text = repr(config) + str(config.model_dump())
    assert config.client_secret.get_secret_value() not in text
    assert config.sask.get_secret_value() not in text
    assert IonSimConfig(seed=1).sask != config.sask
    assert IonSimConfig().sask == config.sask  # deterministic from the seed


async def test_ionapi_urls_drive_the_whole_flow() -> None:
    """What a client does with only the .ionapi file: token at pu+ot, API at iu/ti/M3/…, revoke at pu+or."""
    app = make_app()
    ionapi = ionapi_dict(creds(app), BASE)
    async with client_for(app) as client:
        token_response = await client.post(
            ionapi["pu"] + ionapi["ot"],
            auth=(ionapi["ci"], ionapi["cs"]),
            data={"grant_type": "password", "username": ionapi["saak"], "password": ionapi["sask"]},
        )
        assert token_response.status_code == 200
        token = token_response.json()["access_token"]
        api = await client.get(
            f"{ionapi['iu']}/{ionapi['ti']}/M3/m3api-rest/execute/CRS610MI/LstByNumber", headers=bearer(token)
        )
        assert api.status_code == 200
        revoked = await client.post(
            ionapi["pu"] + ionapi["or"], auth=(ionapi["ci"], ionapi["cs"]), data={"token": token}
        )
        assert revoked.status_code == 200
        assert (await call_m3(client, token)).status_code == 401
    assert ionapi["pu"] + ionapi["ot"] == f"{BASE}{TOKEN_URL}"


def test_ionapi_file_loads_with_the_bridge_reader(tmp_path: Path) -> None:
    """The file the simulator writes is the file the bridge's token service reads."""
    config = IonSimConfig()
    path = write_ionapi(tmp_path / "sim.ionapi", config, "http://127.0.0.1:8200")
    credentials = IonApiCredentials.load(path)
    assert credentials.grant_type == "password"
    assert credentials.token_url == f"http://127.0.0.1:8200/{TENANT}/as/token.oauth2"
    assert credentials.revoke_url == f"http://127.0.0.1:8200/{TENANT}/as/revoke_token.oauth2"
    assert credentials.m3_base_url == f"http://127.0.0.1:8200/{TENANT}/M3"
    cc_path = write_ionapi(tmp_path / "cc.ionapi", config, "http://127.0.0.1:8200", service_account=False)
    assert IonApiCredentials.load(cc_path).grant_type == "client_credentials"


async def test_real_m3_router_behind_the_gateway() -> None:
    """The assembled simulator with the real M3 MI programs: token, grant, one MI call through the Gateway."""
    m3_config = {"seed": 42, "customers": 5, "items": 5, "authorization_enabled": True}
    app = create_app(IonSimConfig(throttle=NO_THROTTLE, m3=m3_config))
    config = creds(app)
    url = f"{M3}/execute/CRS610MI/LstByNumber;maxrecs=2"
    async with client_for(app) as client:
        token = (await password_token(client, config))["access_token"]
        unauthorized = await client.get(url)
        denied = await client.get(url, headers=bearer(token))  # authorization mode: nothing until granted
        grant = await client.post("/__admin/grants", json={"user": config.saak, "program": "CRS610MI"})
        response = await client.get(url, headers=bearer(token))
    assert unauthorized.status_code == 401
    assert denied.json()["@type"] == "ServerReturnedNOK"
    assert "MIRecord" not in denied.json()
    assert grant.status_code == 200
    assert response.status_code == 200
    body = response.json()
    assert body["Program"] == "CRS610MI"
    assert len(body["MIRecord"]) == 2
    assert app.state.ion.gateway.stats.accepted_by_user == {config.saak: 2}
