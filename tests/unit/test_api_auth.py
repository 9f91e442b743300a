"""The bridge's one API authentication scheme (shared.platform.auth), checked on every route of every service: each app
is built by its `create_runtime` (no lifespan, no broker) and every route it has is called without a key, with a wrong
key, with a key that is not ASCII and with the right one. A route that is neither public nor authenticated by its own
scheme fails here, so a new route cannot slip in unprotected."""

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services import SERVICES, settings_classes
from shared.platform.auth import GuardedRoute, KeyGuard
from shared.platform.runtime import ServiceRuntime

OPERATOR_KEY = "operator-key-0123456789"
READ_KEY = "read-key-9876543210"
PUBLIC = {"/healthz", "/readyz", "/metrics"}
SERVICE_KEY = "ow-key-0123456789"  # order-writer's key for token-service
# Routes that authenticate with their own scheme (the shared secret or HMAC signature their senders can send).
SELF_AUTHENTICATED = {
    "quote-ingest": {"/webhooks/quotewerks"},
    "bod-listener": {"/bods", "/ims/ping", "/ims/protocol", "/ims/versions", "/ims/v3/multipartMessage"},
}
# The routes behind this scheme, and the role each needs.
PROTECTED = {
    ("catalog-sync", "POST", "/v1/sync/full"): "operator",
    ("catalog-sync", "POST", "/v1/sync/poll"): "operator",
    ("catalog-sync", "POST", "/v1/sync/reconcile"): "operator",
    ("catalog-sync", "POST", "/v1/customers/reconcile"): "operator",
    ("order-writer", "POST", "/v1/orders/reconcile"): "operator",
    ("order-writer", "GET", "/v1/quotes/{doc_no}/trace"): "read",
    ("inventory-query", "GET", "/v1/availability/{item}"): "read",
    ("inventory-query", "POST", "/v1/availability"): "read",
    # token-service: the same scheme, a key per calling service (M3B_SERVICE_KEYS).
    ("token-service", "POST", "/v1/leases"): "service",
    ("token-service", "POST", "/v1/reports"): "service",
    ("token-service", "GET", "/v1/budget"): "service",
}
WRONG_KEYS: list[dict[str, Any]] = [
    {},
    {"Authorization": "Bearer not-the-key"},
    {"X-API-Key": "not-the-key"},
    {"Authorization": f"Basic {OPERATOR_KEY}"},  # the right key in another scheme
    {"Authorization": f"Bearer {OPERATOR_KEY}x"},
    {"Authorization": b"Bearer \xc3\xa9\xff"},  # not ASCII (UTF-8 and Latin-1 bytes)
    {"X-API-Key": b"\xe9" + OPERATOR_KEY.encode()},
]
WRONG_IDS = ["none", "wrong-bearer", "wrong-api-key", "basic", "longer", "non-ascii-bearer", "non-ascii-api-key"]


def settings_for(service: str, **extra: Any) -> Any:
    options: dict[str, Any] = {
        "operator_key": SecretStr(OPERATOR_KEY),
        "read_key": SecretStr(READ_KEY),
        "kafka_bootstrap_servers": "127.0.0.1:1",
        **extra,
    }
    if service == "token-service":
        options |= {"service_keys": {"order-writer": SecretStr(SERVICE_KEY)}, "ion_api_file": "/nonexistent/ionapi"}
    if service == "quote-ingest":
        options["webhook_secret"] = SecretStr("webhook-secret")
    if service == "bod-listener":
        options["bod_secret"] = SecretStr("bod-secret")
    return settings_classes()[service](**options)


@contextlib.contextmanager
def pytest_logging_kept() -> Iterator[None]:
    # Building a runtime configures logging for the whole process; later test modules expect pytest's own.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def build(service: str, **extra: Any) -> ServiceRuntime:
    module = __import__(SERVICES[service].module, fromlist=["create_runtime"])
    with pytest_logging_kept():
        runtime: ServiceRuntime = module.create_runtime(settings_for(service, **extra))
    return runtime


@pytest.fixture(scope="module")
def runtimes() -> dict[str, ServiceRuntime]:
    return {name: build(name) for name in SERVICES}


@contextlib.asynccontextmanager
async def client(runtime: ServiceRuntime) -> AsyncIterator[httpx.AsyncClient]:
    # Handlers that need the started service fail (500) without a lifespan: all that matters here is "not 401".
    transport = httpx.ASGITransport(app=runtime.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        yield http


def walk(service: str, routes: list[Any], prefix: str = "") -> list[tuple[str, str, str]]:
    """(service, method, path) of every route, into included routers (FastAPI keeps them as one entry each)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found += [(service, method, prefix + route.path) for method in sorted(route.methods or ())]
            continue
        router = getattr(route, "original_router", None)
        assert router is not None, f"{service}: {route!r} is neither an API route nor an included router"
        found += walk(service, router.routes, prefix + getattr(getattr(route, "include_context", None), "prefix", ""))
    return found


def routes(runtimes: dict[str, ServiceRuntime]) -> list[tuple[str, str, str]]:
    found = [entry for service, runtime in runtimes.items() for entry in walk(service, runtime.app.routes)]
    for service, runtime in runtimes.items():  # the OpenAPI document lists the same operations
        documented = {
            (method.upper(), path) for path, item in runtime.app.openapi()["paths"].items() for method in item
        }
        assert documented == {(m, p) for s, m, p in found if s == service}, service
    return found


def concrete(path: str) -> str:
    return path.replace("{item}", "ITM000001")


def rejected(service: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("m3bridge_http_rejected_total", {"service": service, "reason": reason})
    return value or 0.0


async def test_every_route_of_every_service_is_public_self_authenticated_or_behind_a_key(
    runtimes: dict[str, ServiceRuntime],
) -> None:
    seen: set[tuple[str, str, str]] = set()
    for service, method, path in routes(runtimes):
        async with client(runtimes[service]) as http:
            anonymous = await http.request(method, concrete(path))
            if path in PUBLIC:
                assert anonymous.status_code != 401, (service, path)
                continue
            if path in SELF_AUTHENTICATED.get(service, ()):
                assert anonymous.status_code == 401, (service, method, path, anonymous.text)
                bearer = {"Authorization": f"Bearer {OPERATOR_KEY}", "X-API-Key": OPERATOR_KEY}
                with_ours = await http.request(method, concrete(path), headers=bearer)
                assert with_ours.status_code == 401, f"{service} {path} must not take the operator key"
                continue
            role = PROTECTED.get((service, method, path))
            assert role is not None, f"{service} {method} {path}: not public, not self-authenticated, not protected"
            seen.add((service, method, path))
            for headers in WRONG_KEYS:
                refused = await http.request(method, concrete(path), headers=headers)
                assert refused.status_code == 401, (service, path, headers, refused.text)
                assert refused.headers["WWW-Authenticate"] == "Bearer"
                assert refused.json() == {"detail": "not authenticated"}
            right = {"operator": [OPERATOR_KEY], "read": [READ_KEY, OPERATOR_KEY], "service": [SERVICE_KEY]}[role]
            for key in right:
                for headers in (
                    {"Authorization": f"Bearer {key}"},
                    {"X-API-Key": key},
                    {"authorization": f"bearer {key}"},
                ):
                    admitted = await http.request(method, concrete(path), headers=headers)
                    assert admitted.status_code != 401, (service, path, headers, admitted.text)
            if role == "operator":
                read_only = await http.request(method, concrete(path), headers={"Authorization": f"Bearer {READ_KEY}"})
                assert read_only.status_code == 401, "the read key must not start operator actions"
            if role == "service":
                for key in (OPERATOR_KEY, READ_KEY):
                    theirs = await http.request(method, concrete(path), headers={"Authorization": f"Bearer {key}"})
                    assert theirs.status_code == 401, "the bridge's API keys are not token-service's"
    assert seen == set(PROTECTED)


def test_each_protected_operation_lists_the_security_schemes_in_openapi(runtimes: dict[str, ServiceRuntime]) -> None:
    for service, runtime in runtimes.items():
        spec = runtime.app.openapi()
        operations = {
            (method.upper(), path): operation
            for path, item in spec["paths"].items()
            for method, operation in item.items()
        }
        assert set(operations) == {(m, p) for s, m, p in routes({service: runtime})}, service
        for (method, path), operation in operations.items():
            role = PROTECTED.get((service, method, path))
            if role is None:
                assert "security" not in operation, (service, method, path)
                continue
            assert operation["security"] == [{"bearerKey": [role]}, {"apiKey": [role]}], (service, path)
            assert "401" in operation["responses"]
            schemes = spec["components"]["securitySchemes"]
            assert schemes["bearerKey"] == {
                "type": "http",
                "scheme": "bearer",
                "description": schemes["bearerKey"]["description"],
            }
            assert schemes["apiKey"]["in"] == "header"
            assert schemes["apiKey"]["name"] == "X-API-Key"


async def test_without_a_configured_key_the_routes_are_locked_and_say_so_once(caplog: pytest.LogCaptureFixture) -> None:
    runtime = build("catalog-sync", operator_key=SecretStr(""), read_key=SecretStr(""))
    async with client(runtime) as http:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}, {"X-API-Key": ""}):
            assert (await http.post("/v1/sync/poll", headers=headers)).status_code == 401
    with caplog.at_level(logging.WARNING):
        runtime._report_locked_routes()
    [line] = [r.getMessage() for r in caplog.records if "answer 401" in r.getMessage()]
    assert "/v1/sync/full" in line
    assert "/v1/sync/poll" in line
    assert "M3B_OPERATOR_KEY" in line
    # Reads still take the operator key when the read key is not set.
    inventory = build("inventory-query", read_key=SecretStr(""))
    async with client(inventory) as http:
        read = await http.post("/v1/availability", json={"lines": []}, headers={"X-API-Key": OPERATOR_KEY})
        assert read.status_code == 422
        assert (
            await http.post("/v1/availability", json={"lines": []}, headers={"X-API-Key": READ_KEY})
        ).status_code == 401


async def test_a_refusal_is_counted_logged_once_and_the_body_is_never_read(
    runtimes: dict[str, ServiceRuntime], caplog: pytest.LogCaptureFixture
) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(50_000):
            sent.append(1024)
            yield b" " * 1024

    before = rejected("inventory-query", "unauthenticated"), rejected("inventory-query", "wrong_key")
    with caplog.at_level(logging.DEBUG):
        async with client(runtimes["inventory-query"]) as http:
            anonymous = await http.post(
                "/v1/availability", content=chunks(), headers={"Content-Type": "application/json"}
            )
            wrong = await http.get("/v1/availability/ITM1", params={"warehouse": "100"}, headers={"X-API-Key": "nope"})
    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert sum(sent) <= 1024  # refused before the body was read
    assert (rejected("inventory-query", "unauthenticated"), rejected("inventory-query", "wrong_key")) == (
        before[0] + 1,
        before[1] + 1,
    )
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2
    assert all("nope" not in line and OPERATOR_KEY not in line for line in refusals)


async def test_metrics_can_be_put_behind_the_read_key() -> None:
    runtime = build("order-writer", metrics_require_key=True)
    async with client(runtime) as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": f"Bearer {READ_KEY}"})).status_code == 200
        assert (await http.get("/healthz")).status_code == 200
    assert runtime.app.openapi()["paths"]["/metrics"]["get"]["security"] == [
        {"bearerKey": ["read"]},
        {"apiKey": ["read"]},
    ]


async def test_the_openapi_document_and_its_pages_are_served_only_when_enabled(
    runtimes: dict[str, ServiceRuntime],
) -> None:
    async with client(runtimes["inventory-query"]) as http:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert (await http.get(path)).status_code == 404, path
    documented = build("inventory-query", http_docs=True)
    async with client(documented) as http:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert (await http.get(path)).status_code == 200, path
        assert "/v1/availability" in (await http.get("/openapi.json")).json()["paths"]


def test_guarded_routes_are_the_runtimes_route_class(runtimes: dict[str, ServiceRuntime]) -> None:
    for service, method, path in PROTECTED:
        [route] = [
            r
            for r in runtimes[service].app.routes
            if isinstance(r, APIRoute) and r.path == path and method in (r.methods or ())
        ]
        assert isinstance(route, GuardedRoute)
        assert len(route.guards) == 1
        assert isinstance(route.guards[0], KeyGuard)  # token-service's is a CallerGuard, a KeyGuard naming the caller
        assert route.guards[0].role == PROTECTED[(service, method, path)]
