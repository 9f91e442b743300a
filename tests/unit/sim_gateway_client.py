"""An in-process client of the ION API Gateway simulator for its tests (test_sim_gateway*.py): the app with a stub M3
behind it, the tenant's URLs, a password-grant token and an M3 call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request

from simulators.ion.app import create_app
from simulators.ion.config import IonSimConfig, ThrottlePolicy

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
