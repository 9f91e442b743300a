"""Assembles the ION API simulator: authorization server + Gateway + M3 MI REST + the simulator's control plane."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, ValidationError

from simulators.ion.auth import AuthServer, AuthStats, auth_router
from simulators.ion.config import FaultProfile, IonSimConfig, LatencyProfile, ThrottlePolicy
from simulators.ion.gateway import Gateway, IonGatewayMiddleware


@dataclass
class IonSim:
    """Everything a test or benchmark may want to reach in-process (`app.state.ion`)."""

    config: IonSimConfig
    auth: AuthServer
    gateway: Gateway
    m3: Any  # simulators.ion.m3.M3Simulator, or None when a test mounts its own router

    def stats(self, *, include_times: bool = False) -> dict[str, Any]:
        return {
            "gateway": self.gateway.snapshot(include_times=include_times),
            "auth": {**self.auth.stats.snapshot(), "active_tokens": self.auth.active_tokens()},
            # Calls per PROGRAM/TRANSACTION that reached M3 (tests use it to see how far a flow got).
            "m3": dict(self.m3.stats) if self.m3 is not None else {},
        }


class GrantRequest(BaseModel):
    user: str
    program: str = "*"
    transaction: str = "*"


class RetryAfterRequest(BaseModel):
    retry_after_s: float | None


def _default_m3(config: IonSimConfig) -> tuple[APIRouter, Any]:
    m3 = importlib.import_module("simulators.ion.m3")
    sim = m3.M3Simulator(m3.M3Config(**config.m3))
    router: APIRouter = m3.m3_router(sim)
    return router, sim


def _admin_router(ion: IonSim) -> APIRouter:
    # The simulator's own control plane. Deliberately NOT behind OAuth or the Gateway policies: tests and
    # benchmarks drive it directly. It is no part of the real ION API; never expose the simulator publicly.
    router = APIRouter(prefix="/__admin", tags=["simulator admin"])

    @router.get("/stats")
    async def stats(times: bool = False) -> dict[str, Any]:
        return ion.stats(include_times=times)

    @router.post("/reset-stats")
    async def reset_stats() -> dict[str, Any]:
        ion.gateway.reset_stats()
        ion.auth.stats = AuthStats()
        return ion.stats()

    @router.put("/throttle")
    async def put_throttle(request: Request) -> dict[str, Any]:
        """A ThrottlePolicy as JSON, or the Gateway's XML `<throttling>` policy (Content-Type …/xml,
        `?mode=smoothed` to pick the spike-arrest model)."""
        body = (await request.body()).decode()
        try:
            if "xml" in request.headers.get("content-type", ""):
                mode = request.query_params.get("mode", "windowed")
                if mode not in ("windowed", "smoothed"):
                    raise ValueError("mode must be windowed or smoothed")
                policy = ThrottlePolicy.from_xml(body, mode="smoothed" if mode == "smoothed" else "windowed")
            else:
                policy = ThrottlePolicy.model_validate_json(body)
        except (ValueError, ValidationError) as exc:
            raise HTTPException(422, str(exc)) from None
        ion.gateway.set_throttle(policy)
        return policy.model_dump()

    @router.put("/faults")
    async def put_faults(profile: FaultProfile) -> dict[str, Any]:
        ion.gateway.faults = profile
        return profile.model_dump()

    @router.put("/latency")
    async def put_latency(profile: LatencyProfile) -> dict[str, Any]:
        ion.gateway.latency = profile
        return profile.model_dump()

    @router.put("/retry-after")
    async def put_retry_after(body: RetryAfterRequest) -> dict[str, Any]:
        if body.retry_after_s is not None and body.retry_after_s < 0:
            raise HTTPException(422, "retry_after_s must be >= 0 or null")
        ion.gateway.retry_after_s = body.retry_after_s
        return {"retry_after_s": body.retry_after_s}

    @router.post("/grants")
    async def grants(grant: GrantRequest) -> dict[str, str]:
        if ion.m3 is None:
            raise HTTPException(501, "no M3 simulator mounted")
        ion.m3.grant(grant.user, program=grant.program, transaction=grant.transaction)
        return grant.model_dump()

    @router.post("/tokens/expire")
    async def expire_tokens(include_refresh: bool = True) -> dict[str, int]:
        return {"expired": ion.auth.expire_all(include_refresh=include_refresh)}

    return router


def create_app(config: IonSimConfig | None = None, *, m3_router: APIRouter | None = None) -> FastAPI:
    """The simulator app. `m3_router` replaces the real M3 MI router (tests of the Gateway alone)."""
    config = config or IonSimConfig()
    auth = AuthServer(config)
    gateway = Gateway(config, auth)
    m3_sim: Any = None
    if m3_router is None:
        m3_router, m3_sim = _default_m3(config)
    ion = IonSim(config=config, auth=auth, gateway=gateway, m3=m3_sim)

    app = FastAPI(title="ION API Gateway simulator (M3 Bridge)", docs_url="/__admin/docs", redoc_url=None)
    app.state.ion = ion
    app.include_router(auth_router(auth))
    app.include_router(m3_router, prefix=f"/{config.tenant}/M3/m3api-rest")
    app.include_router(_admin_router(ion))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "tenant": config.tenant}

    app.add_middleware(IonGatewayMiddleware, gateway=gateway)
    return app
