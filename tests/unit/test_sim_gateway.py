"""The ION API Gateway simulator: OAuth 2 server, bearer check, .ionapi file, the real M3 router behind it.
Throttling, faults and the admin plane: test_sim_gateway_throttle.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from shared.m3.ionapi import IonApiCredentials
from simulators.ion.app import create_app
from simulators.ion.auth import ionapi_dict, write_ionapi
from simulators.ion.config import IonSimConfig
from tests.unit.sim_gateway_client import (
    BASE,
    M3,
    NO_THROTTLE,
    REVOKE_URL,
    TENANT,
    TOKEN_URL,
    bearer,
    call_m3,
    client_for,
    creds,
    make_app,
    password_token,
)

pytestmark = pytest.mark.unit


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
