"""Assembles the ION API simulator: authorization server + Gateway + M3 MI REST + the simulator's control plane."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
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
    bods: Any = None  # simulators.ion.bods.BodPublisher (with .emitter), when the M3 simulator is mounted
    datalake: Any = None  # simulators.ion.datalake.DataLake, when the M3 simulator is mounted

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


class BodTargetRequest(BaseModel):
    url: str | None
    headers: dict[str, str] | None = None


def _default_m3(config: IonSimConfig) -> tuple[APIRouter, Any]:
    m3 = importlib.import_module("simulators.ion.m3")
    sim = m3.M3Simulator(m3.M3Config(**config.m3))
    router: APIRouter = m3.m3_router(sim)
    return router, sim


_Choice = TypeVar("_Choice", bound=str)


def _choice(query: Mapping[str, str], name: str, choices: tuple[_Choice, ...]) -> _Choice:
    """A query parameter that must be one of `choices` (the first when absent)."""
    value = query.get(name, choices[0])
    for choice in choices:
        if value == choice:
            return choice
    raise ValueError(f"{name} must be one of {', '.join(choices)}")


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
        """A ThrottlePolicy as JSON, or the Gateway's XML `<throttling>` policy (Content-Type …/xml; the query
        parameters `mode=windowed|smoothed`, `window=fixed|sliding` and `delay_growth=constant|linear` pick the
        simulator's model, as the JSON fields of the same names do)."""
        body = (await request.body()).decode()
        try:
            if "xml" in request.headers.get("content-type", ""):
                query = request.query_params
                policy = ThrottlePolicy.from_xml(
                    body,
                    mode=_choice(query, "mode", ("windowed", "smoothed")),
                    window=_choice(query, "window", ("fixed", "sliding")),
                    delay_growth=_choice(query, "delay_growth", ("constant", "linear")),
                )
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

    @router.post("/denials")
    async def denials(denial: GrantRequest) -> dict[str, str]:
        """An administrator restricts one transaction (SES005) for a user ("*": everyone): its calls answer the
        authorization error while everything else stays allowed."""
        if ion.m3 is None:
            raise HTTPException(501, "no M3 simulator mounted")
        ion.m3.deny(denial.user, program=denial.program, transaction=denial.transaction)
        return denial.model_dump()

    @router.post("/tokens/expire")
    async def expire_tokens(include_refresh: bool = True) -> dict[str, int]:
        return {"expired": ion.auth.expire_all(include_refresh=include_refresh)}

    return router


def _m3_admin_router(ion: IonSim) -> APIRouter:
    """`/__admin/m3/...`: a user editing records in M3 (the data changes, MI reads see it, a BOD is published)
    and `/__admin/bods`: delivery stats and the BOD target."""
    router = APIRouter(prefix="/__admin", tags=["simulator admin: M3 edits and BODs"])
    bods_module = importlib.import_module("simulators.ion.bods")

    def publisher() -> Any:
        if ion.bods is None:
            raise HTTPException(501, "no M3 simulator mounted")
        return ion.bods

    async def edit(method: str, *args: Any) -> dict[str, Any]:
        try:
            record: dict[str, object] = getattr(publisher(), method)(*args)
        except bods_module.EditError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return {name: str(value) for name, value in record.items()}

    @router.post("/m3/items")
    async def add_item(fields: dict[str, Any]) -> dict[str, Any]:
        """A user creates an item in M3: {"ITNO": "NOPE-123", "ITDS": "…"} (STAT 20, SAPR 10.00 unless given);
        publishes SyncItemMaster with actionCode Add."""
        return await edit("add_item", fields)

    @router.post("/m3/items/{itno}")
    async def edit_item(itno: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Changed MITMAS fields, e.g. {"ITDS": "…", "STAT": "90"}; publishes SyncItemMaster."""
        return await edit("edit_item", itno, fields)

    @router.post("/m3/balances/{whlo}/{itno}")
    async def edit_balance(whlo: str, itno: str, fields: dict[str, Any]) -> dict[str, Any]:
        """{"STQT": "12", "ALQT": "2"}; publishes SyncInventoryCount."""
        return await edit("edit_balance", whlo, itno, fields)

    @router.post("/m3/prices/{itno}")
    async def edit_price(itno: str, fields: dict[str, Any]) -> dict[str, Any]:
        """{"SAPR": "12.50"} (price list STD); publishes SyncPriceList."""
        return await edit("edit_price", itno, fields)

    @router.post("/m3/orders/{orno}")
    async def progress_order(orno: str, fields: dict[str, Any]) -> dict[str, Any]:
        """{"ORST": "66"}: the order moved on in M3 (e.g. delivered); publishes SyncSalesOrder."""
        return await edit("progress_order", orno, fields)

    @router.delete("/m3/orders/{orno}")
    async def delete_order(orno: str) -> dict[str, Any]:
        """A user deletes a customer order in M3; publishes SyncSalesOrder with actionCode Delete."""
        return await edit("delete_order", orno)

    @router.get("/m3/customers/{cuno}")
    async def read_customer(cuno: str) -> dict[str, Any]:
        """The OCUSMA record as M3 holds it (a look at the data, no Gateway call)."""
        return await edit("customer", cuno)

    @router.post("/m3/customers")
    async def add_customer(fields: dict[str, Any]) -> dict[str, Any]:
        """A user creates a customer in M3 (number assigned); publishes SyncCustomerPartyMaster with actionCode Add."""
        return await edit("add_customer", fields)

    @router.post("/m3/customers/{cuno}")
    async def edit_customer(cuno: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Changed OCUSMA fields, e.g. {"CUNM": "…"}; publishes SyncCustomerPartyMaster."""
        return await edit("edit_customer", cuno, fields)

    @router.get("/bods")
    async def bod_stats() -> dict[str, Any]:
        stats: dict[str, Any] = publisher().emitter.snapshot()
        return stats

    @router.put("/bods/target")
    async def bod_target(body: BodTargetRequest) -> dict[str, Any]:
        emitter = publisher().emitter
        emitter.configure(body.url, body.headers)
        return {"url": emitter.target_url, "headers": sorted(emitter.headers)}  # header values may be secrets

    return router


def _inspection_router(ion: IonSim) -> APIRouter:
    """`GET /__admin/m3/...`: read-only views of the M3 simulator's data (no Gateway, no stats, no BODs), for
    tests and the chaos suite to measure what M3 really holds: orders by CUOR with their lines, batch orders
    not (yet) confirmed, customers by name and e-mail."""
    router = APIRouter(prefix="/__admin/m3", tags=["simulator admin: M3 inspection (read-only)"])
    fmt = importlib.import_module("simulators.ion.m3.core").fmt  # values as MI answers them

    def _text(value: object) -> str:
        return str(fmt(value))

    def store() -> Any:
        if ion.m3 is None:
            raise HTTPException(501, "no M3 simulator mounted")
        return ion.m3.store

    @router.get("/orders")
    async def orders(cuor: str | None = None) -> dict[str, Any]:
        """Confirmed customer orders (OOHEAD/OOLINE), oldest first; `cuor` selects one customer order number."""
        rows = []
        for orno in sorted(store().orders):
            order = store().orders[orno]
            head = {name: _text(value) for name, value in order.head.items()}
            if cuor is not None and head.get("CUOR") != cuor:
                continue
            lines = [{name: _text(value) for name, value in line.items()} for line in order.lines]
            rows.append({**head, "lines": lines})
        return {"orders": rows}

    @router.get("/batch-orders")
    async def batch_orders(unconfirmed: bool = False) -> dict[str, Any]:
        """Batch orders (AddBatchHead … Confirm): status "" new, "15" rejected by Confirm, "90" confirmed (then
        FINAL_ORNO is the order). `unconfirmed=true`: only those not confirmed (orphans once nobody works on them)."""
        rows = []
        for orno, batch in sorted(store().batch_orders.items()):
            if unconfirmed and batch.status == "90":
                continue
            rows.append({
                "ORNO": orno, "CUNO": batch.head.get("CUNO", ""), "CUOR": batch.head.get("CUOR", ""),
                "STATUS": batch.status, "LINES": len(batch.lines), "FINAL_ORNO": batch.final_orno or "",
                "ERRORS": [dict(error) for error in batch.errors],
            })  # fmt: skip
        return {"batch_orders": rows}

    @router.get("/customers")
    async def customers() -> dict[str, Any]:
        """Every customer (OCUSMA): number, name, e-mail, status, registration date."""
        fields = ("CUNO", "CUNM", "MAIL", "STAT", "RGDT")
        rows = [{name: _text(record.get(name)) for name in fields} for record in store().customers.values()]
        return {"customers": sorted(rows, key=lambda row: row["CUNO"])}

    return router


def create_app(
    config: IonSimConfig | None = None,
    *,
    m3_router: APIRouter | None = None,
    bod_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The simulator app. `m3_router` replaces the real M3 MI router (tests of the Gateway alone);
    `bod_transport` is the HTTP transport the BOD emitter uses (tests point it at an in-process receiver)."""
    config = config or IonSimConfig()
    auth = AuthServer(config)
    gateway = Gateway(config, auth)
    m3_sim: Any = None
    if m3_router is None:
        m3_router, m3_sim = _default_m3(config)
    ion = IonSim(config=config, auth=auth, gateway=gateway, m3=m3_sim)
    if m3_sim is not None:
        bods = importlib.import_module("simulators.ion.bods")
        emitter = bods.BodEmitter(
            config.bod_target_url,
            config.bod_headers,
            protocol=config.bod_protocol,
            encodings=config.bod_encodings,
            tenant=config.tenant,
            attempts=config.bod_retry_attempts,
            backoff_s=config.bod_retry_backoff_s,
            transport=bod_transport,
        )
        context = bods.BodContext(
            tenant=config.tenant,
            accounting_entity=f"{m3_sim.config.company}_{m3_sim.config.division}",
            location=config.bod_location,
        )
        ion.bods = bods.BodPublisher(m3_sim, emitter, context)

    app = FastAPI(title="ION API Gateway simulator (M3 Bridge)", docs_url="/__admin/docs", redoc_url=None)
    app.state.ion = ion
    app.include_router(auth_router(auth))
    app.include_router(m3_router, prefix=f"/{config.tenant}/M3/m3api-rest")
    app.include_router(_admin_router(ion))
    app.include_router(_m3_admin_router(ion))
    app.include_router(_inspection_router(ion))
    if m3_sim is not None:
        # Data Lake (Compass v2) over the M3 simulator's tables; under /{tenant}/, so the Gateway applies.
        datalake = importlib.import_module("simulators.ion.datalake")
        ion.datalake = datalake.DataLake(lambda: m3_sim.store)
        app.include_router(datalake.datalake_router(ion.datalake), prefix=f"/{config.tenant}/DATAFABRIC/compass/v2")
        app.include_router(datalake.datalake_admin_router(ion.datalake))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "tenant": config.tenant}

    app.add_middleware(IonGatewayMiddleware, gateway=gateway)
    return app
