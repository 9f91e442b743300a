"""A service's HTTP side: the FastAPI app with the bridge's key check on every route before its body is read, the
body limit, correlation ids, refusal answers and the operations routes (/healthz, /readyz, /metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

import shared
from shared.platform.auth import GuardedRoute
from shared.platform.http_middleware import BodyLimitMiddleware, CorrelationIdMiddleware
from shared.platform.http_refusals import add_refusal_handlers
from shared.platform.operations_routes import add_operations_routes

if TYPE_CHECKING:
    from shared.platform.runtime import ServiceRuntime


def create_app(runtime: ServiceRuntime, *, title: str | None, description: str) -> FastAPI:
    settings = runtime.settings
    docs = settings.http_docs  # off: the OpenAPI document is still app.openapi(), for `m3bridge docs` and tests
    app = FastAPI(
        title=title or f"M3 Bridge {runtime.name}",
        description=description,
        version=shared.__version__,
        lifespan=runtime._lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    # Every route added on the app checks its key (runtime.require) before its body is read.
    app.router.route_class = GuardedRoute
    # Added first, so inside the correlation id: a refused body's answer carries one too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, service=runtime.name)
    app.add_middleware(CorrelationIdMiddleware)
    add_refusal_handlers(app, runtime.name)
    add_operations_routes(
        app,
        runtime.health,
        peers=runtime.heartbeats.describe_peers,
        metrics_dependencies=[runtime.require("read")] if settings.metrics_require_key else None,
        detail_allowed=lambda request: runtime._guard("read").allows(request.scope),
    )
    return app
