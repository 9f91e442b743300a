"""Two service processes over the real broker: one's heartbeat reaches the other; SIGTERM drains and exits."""

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from m3bridge.tansu import free_port
from simulators.processes import Captured, wait_ready
from simulators.stack import READ, READ_KEY
from tests.conftest import ROOT


def serve(name: str, port: int, bootstrap: str, state_url: str) -> Captured:
    env = {
        **os.environ,
        "M3B_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "M3B_HTTP_PORT": str(port),
        "M3B_STATE_URL": state_url,
        "M3B_HEARTBEAT_INTERVAL_S": "0.5",
        "M3B_LOG_FORMAT": "json",
        "M3B_READ_KEY": READ_KEY,
    }
    return Captured([sys.executable, "-m", "m3bridge.cli", "serve", name], env=env, cwd=ROOT)


@pytest.fixture
def two_services(kafka_bootstrap: str, tmp_path: Path):
    state_url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    ports = {"quote-ingest": free_port(), "order-writer": free_port()}
    processes = {name: serve(name, port, kafka_bootstrap, state_url) for name, port in ports.items()}
    try:
        yield {name: (processes[name], f"http://127.0.0.1:{port}") for name, port in ports.items()}
    finally:
        for process in processes.values():
            process.kill_all()


def test_a_message_from_one_service_process_is_consumed_by_another(two_services) -> None:
    (_, ingest_url), (_, writer_url) = two_services["quote-ingest"], two_services["order-writer"]
    for url in (ingest_url, writer_url):
        wait_ready(url, 60)
        checks = httpx.get(f"{url}/readyz", headers=READ, timeout=5).json()["checks"]
        assert checks == {"kafka": "ok", "state": "ok"}
    deadline = time.monotonic() + 30
    peers: dict = {}
    while time.monotonic() < deadline:
        peers = httpx.get(f"{writer_url}/healthz", headers=READ).json()["peers"]
        if "quote-ingest" in peers:
            break
        time.sleep(0.2)
    assert "quote-ingest" in peers, f"order-writer never heard quote-ingest: {peers}"
    assert peers["quote-ingest"]["ready"] is True
    assert peers["quote-ingest"]["last_seen_s"] < 10


def test_sigterm_drains_and_exits_cleanly(two_services) -> None:
    process, url = two_services["order-writer"]
    wait_ready(url, 60)
    process.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once shutdown is complete, so the status says "terminated by SIGTERM";
    # the log proves the lifespan finished (consumers drained, state closed) before that.
    assert process.process.wait(30) in (0, -signal.SIGTERM)
    assert '"order-writer stopped"' in process.output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=1)
