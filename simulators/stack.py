"""Real processes of the M3 path for tests and benchmarks: the ION simulator and token-service."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from m3bridge.tansu import free_port
from services import SERVICES
from simulators.processes import Captured, wait_ready

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_KEY = "test-operator-key"
READ_KEY = "test-read-key"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
"""Headers of a call to an operator route (catalog-sync's `/v1/sync/...`) of a service `start_service` started."""
READ = {"Authorization": f"Bearer {READ_KEY}"}
"""Headers of a read (inventory-query's `/v1/availability`)."""


@dataclass
class IonSim:
    process: Captured
    url: str
    ionapi: Path

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, f"{self.url}/__admin/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("GET", "stats")
        return result

    def stop(self) -> None:
        self.process.kill_all()


@dataclass
class TokenService:
    process: Captured
    url: str
    keys: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        self.process.kill_all()


def start_ion(tmp: Path, config: Mapping[str, Any] | None = None) -> IonSim:
    port = free_port()
    ionapi = tmp / "tenant.ionapi"
    command = [
        sys.executable,
        "-m",
        "simulators.ion",
        "--port",
        str(port),
        "--ionapi",
        str(ionapi),
        "--log-level",
        "warning",
    ]
    if config:
        config_file = tmp / "ion-config.json"
        config_file.write_text(json.dumps(config))
        command += ["--config", str(config_file)]
    process = Captured(command, env=dict(os.environ), cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    healthy = False
    for _ in range(300):
        try:
            healthy = httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy:
            break
        if process.process.poll() is not None:
            break
        time.sleep(0.05)
    if not healthy:
        process.kill_all()
        raise AssertionError(f"ION simulator did not start:\n{process.output[-3000:]}")
    return IonSim(process, url, ionapi)


@dataclass
class QuoteWerksSim:
    process: Captured
    url: str
    api_key: str

    def api(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(
            method, f"{self.url}/api/v1/{path}", json=body, headers={"X-API-Key": self.api_key}, timeout=10
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def stop(self) -> None:
        self.process.kill_all()


def wait_http(url: str, process: Captured, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill_all()
    raise AssertionError(f"{what} did not start:\n{process.output[-3000:]}")


def start_quotewerks(
    webhook_url: str, webhook_secret: str, api_key: str = "qw-test-key", config_file: Path | None = None
) -> QuoteWerksSim:
    """`config_file`: a QwSimConfig as JSON (e.g. how many products it seeds)."""
    port = free_port()
    env = {**os.environ, "QW_API_KEY": api_key, "QW_WEBHOOK_SECRET": webhook_secret}
    command = [sys.executable, "-m", "simulators.quotewerks", "--port", str(port), "--webhook-url", webhook_url,
               "--log-level", "warning"]  # fmt: skip
    if config_file is not None:
        command += ["--config", str(config_file)]
    process = Captured(command, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", process, "QuoteWerks simulator")
    return QuoteWerksSim(process, url, api_key)


def start_service(
    name: str, bootstrap: str, settings: Mapping[str, str], port: int | None = None
) -> tuple[Captured, str]:
    """One bridge service as its own process (`m3bridge serve NAME`), ready on /readyz."""
    port = port or free_port()
    env = {
        **os.environ,
        "M3B_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "M3B_HTTP_PORT": str(port),
        "M3B_LOG_FORMAT": "json",
        "M3B_OPERATOR_KEY": OPERATOR_KEY,
        "M3B_READ_KEY": READ_KEY,
        # A replica's name outlives its process, as a pod's does when its container is restarted.
        "M3B_INSTANCE_ID": f"{name}-0",
        **settings,
    }
    process = Captured([sys.executable, "-m", "m3bridge.cli", "serve", name], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 60)
    except AssertionError:
        process.kill_all()
        raise AssertionError(f"{name} did not become ready:\n{process.output[-3000:]}") from None
    return process, url


def start_token_service(
    ion: IonSim, bootstrap: str, keys: Mapping[str, str], settings: Mapping[str, str] | None = None
) -> TokenService:
    port = free_port()
    env = {
        **os.environ,
        "M3B_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "M3B_HTTP_PORT": str(port),
        "M3B_ION_API_FILE": str(ion.ionapi),
        "M3B_SERVICE_KEYS": json.dumps(dict(keys)),
        "M3B_READ_KEY": READ_KEY,
        "M3B_LOG_FORMAT": "json",
        **(settings or {}),
    }
    process = Captured([sys.executable, "-m", "m3bridge.cli", "serve", "token-service"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 60)
    except AssertionError:
        process.kill_all()
        raise AssertionError(f"token-service did not become ready:\n{process.output[-3000:]}") from None
    return TokenService(process, url, dict(keys))


#: A line of `m3bridge run`'s summary: `| <name> pid <pid> <url or kafka://…>`.
RUN_SUMMARY = re.compile(r"\|\s+(?P<name>[a-z-]+)\s+pid (?P<pid>\d+)\s+(?P<where>\S+)")


def start_local_run(command: list[str], tmp_path: Path) -> Captured:
    """`make run` or `m3bridge run` on free ports, its state (and run-keys.json) under `tmp_path/var`."""
    env = {
        **os.environ,
        "M3B_RUN_PORT_BASE": "0",
        "M3B_RUN_KAFKA_PORT": str(free_port()),
        "M3B_RUN_ION_PORT": "0",
        "M3B_RUN_QUOTEWERKS_PORT": "0",
        "M3B_RUN_STATE_DIR": str(tmp_path / "var"),
        "M3B_RUN_COLOR": "never",
    }
    return Captured(command, env=env, cwd=ROOT)


def started(stack: Captured, simulators: tuple[str, ...] = ("ion-sim", "quotewerks-sim")) -> dict[str, tuple[int, str]]:
    """Each child of a local run once it says READY: name → (pid, URL)."""
    # 60 s for the services, plus the time make needs to see the venv is current.
    stack.wait_for_line("| READY", 90)
    found = {m["name"]: (int(m["pid"]), m["where"]) for m in map(RUN_SUMMARY.search, stack.lines) if m}
    assert set(found) == {"kafka", *simulators, *SERVICES}, stack.output
    return found
