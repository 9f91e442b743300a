"""The HTTP side every service shares, exercised without starting the broker (no lifespan)."""

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from services import SERVICES
from services.catalog_sync.app import CatalogSyncSettings, create_runtime
from shared.platform.correlation import HTTP_HEADER
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import BridgeSettings

READ = {"Authorization": "Bearer read-key-for-the-http-tests"}


@pytest.fixture(scope="module")
def runtime() -> ServiceRuntime:
    settings = CatalogSyncSettings(read_key=SecretStr("read-key-for-the-http-tests"))
    return create_runtime(settings)


def client(runtime: ServiceRuntime) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.app), base_url="http://service")


async def test_healthz_says_what_the_service_does_and_hears_to_a_reader(runtime: ServiceRuntime) -> None:
    async with client(runtime) as http:
        body = (await http.get("/healthz", headers=READ)).json()
    assert body["service"] == "catalog-sync"
    assert body["status"] == "alive"
    assert body["logic"]["state"] == "starting"  # no lifespan here: the full load has not begun
    assert body["peers"] == {}


async def test_without_a_key_healthz_and_readyz_say_the_status_alone(runtime: ServiceRuntime) -> None:
    """What a probe, a load balancer or a stranger gets: no checks, queues, errors, peers or paths."""
    async with client(runtime) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
        wrong = await http.get("/healthz", headers={"Authorization": "Bearer not-the-key"})
    assert (health.status_code, health.json()) == (200, {"service": "catalog-sync", "status": "ok"})
    assert (ready.status_code, ready.json()) == (503, {"service": "catalog-sync", "ready": False})
    assert wrong.json() == {"service": "catalog-sync", "status": "ok"}


async def test_readyz_is_503_with_reasons_while_broker_and_state_are_down(runtime: ServiceRuntime) -> None:
    async with client(runtime) as http:
        response = await http.get("/readyz", headers=READ)
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["kafka"] == "broker not reachable"
    assert checks["state"] == "state store not open"


async def test_metrics_are_prometheus_text_with_our_prefix(runtime: ServiceRuntime) -> None:
    async with client(runtime) as http:
        await http.get("/readyz")
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'm3bridge_service_ready{service="catalog-sync"} 0.0' in response.text
    assert 'm3bridge_health_check_ok{check="kafka",service="catalog-sync"} 0.0' in response.text


async def test_correlation_id_is_echoed_or_made(runtime: ServiceRuntime) -> None:
    async with client(runtime) as http:
        given = await http.get("/healthz", headers={HTTP_HEADER: "trace-42"})
        made = await http.get("/healthz")
        forged = await http.get("/healthz", headers={HTTP_HEADER: "x" * 500})
    assert given.headers[HTTP_HEADER] == "trace-42"
    assert len(made.headers[HTTP_HEADER]) == 32
    assert forged.headers[HTTP_HEADER] != "x" * 500


def test_every_service_builds_its_runtime() -> None:
    for entry in SERVICES.values():
        runtime = entry.create_runtime()
        assert runtime.name == entry.name
        assert "logic" in runtime.health.details  # what it does, or that it is not built yet


async def test_a_start_hook_that_fails_leaves_nothing_open(tmp_path: Path) -> None:
    settings = BridgeSettings(service_name="test-start", state_url=f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    failing = ServiceRuntime(settings, title="t", description="d", uses_state=True)

    @failing.on_startup
    async def boom() -> None:
        raise RuntimeError("cannot start")

    with pytest.raises(RuntimeError, match="cannot start"):
        async with failing._lifespan(failing.app):
            pass
    assert failing._http is not None
    assert failing._http.is_closed
