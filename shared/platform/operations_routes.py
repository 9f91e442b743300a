"""The operations routes every service answers: /healthz (liveness and peers), /readyz (readiness), /metrics.

/healthz and /readyz answer everyone with the status alone (what a probe or a load balancer needs); their detail
(checks, queues, the poller's last error, peers, file paths) only to a caller presenting the read or operator key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.platform.health import Health


def add_operations_routes(
    app: FastAPI,
    health: Health,
    *,
    peers: Callable[[], dict[str, Any]],
    metrics_dependencies: Sequence[Any] | None = None,
    detail_allowed: Callable[[Request], bool] = lambda _request: False,
) -> None:
    """`peers()` is what /healthz lists as the services heard; `metrics_dependencies` guard /metrics (a key);
    `detail_allowed(request)`: whether the caller may see the detail of /healthz and /readyz."""

    # The endpoints' names make the OpenAPI operation ids (`_healthz_healthz_get`, ...): kept as they were.
    async def _healthz(request: Request) -> dict[str, Any]:
        if not detail_allowed(request):
            return {"service": health.service, "status": "ok"}
        return {**health.liveness(), "peers": peers()}

    async def _readyz(request: Request) -> JSONResponse:
        ready, checks = await health.readiness()
        body: dict[str, Any] = {"service": health.service, "ready": ready}
        if detail_allowed(request):
            body["checks"] = checks
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/healthz", _healthz, methods=["GET"], tags=["operations"], summary="Liveness")
    app.add_api_route("/readyz", _readyz, methods=["GET"], tags=["operations"], summary="Readiness")
    app.add_api_route(
        "/metrics",
        _metrics,
        methods=["GET"],
        tags=["operations"],
        summary="Prometheus metrics",
        dependencies=list(metrics_dependencies) if metrics_dependencies else None,
    )
