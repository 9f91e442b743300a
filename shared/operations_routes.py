"""The operations routes every service answers: /healthz (liveness and peers), /readyz (readiness), /metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.health import Health


def add_operations_routes(
    app: FastAPI,
    health: Health,
    *,
    peers: Callable[[], dict[str, Any]],
    metrics_dependencies: Sequence[Any] | None = None,
) -> None:
    """`peers()` is what /healthz lists as the services heard; `metrics_dependencies` guard /metrics (a key)."""

    # The endpoints' names make the OpenAPI operation ids (`_healthz_healthz_get`, ...): kept as they were.
    async def _healthz() -> dict[str, Any]:
        return {**health.liveness(), "peers": peers()}

    async def _readyz() -> JSONResponse:
        ready, checks = await health.readiness()
        return JSONResponse(
            {"service": health.service, "ready": ready, "checks": checks}, status_code=200 if ready else 503
        )

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
