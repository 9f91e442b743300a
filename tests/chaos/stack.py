"""The real processes of the quote → order path for the chaos suite, each restartable on its own port.

Tansu broker, a PostgreSQL database of its own (created on 127.0.0.1:5432 and dropped afterwards), the ION
simulator, the QuoteWerks simulator (its webhook pointed at quote-ingest), token-service, quote-ingest and
order-writer. Every process writes its output to a file in the run directory (a poison loop can log megabytes a
second; nothing is kept in memory). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx

from m3bridge.tansu import EmbeddedBroker, free_port
from shared.contracts.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = os.environ.get("M3B_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
WEBHOOK_SECRET = "chaos-webhook-secret"
QW_API_KEY = "chaos-qw-key"
KEYS = {"order-writer": "chaos-ow-key-123456", "quote-ingest": "chaos-qi-key-123456"}
#: The Gateway policy of the simulated tenant, and token-service's budget for it (the same numbers).
THROTTLE_PERIOD_MS = 1000
THROTTLE_MAX_REQUESTS = 50
#: One Gateway request's timeout in the services (M3B_M3_TIMEOUT_S). The fault schedule sets the Gateway's late
#: 504 below it (the 504 arrives) and above it (the client gives up first).
M3_TIMEOUT_S = 4.0
#: order-writer's lease on a quote (M3B_ORDER_LEASE_S): shorter than a zombie's freeze (scenario f), so a frozen
#: replica loses the quotes it held and must stop when it wakes up.
ORDER_LEASE_S = 9.0


def _log_tail(path: Path, size: int = 4000) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(path.stat().st_size - size, 0))
        return handle.read().decode("utf-8", "replace")


#: Most bytes of output kept per process log (a poison loop logs megabytes a second); the rest is counted.
LOG_CAP_BYTES = 32 * 1024 * 1024


class CappedLog:
    """Copies a child's output to a file up to LOG_CAP_BYTES, then only counts what it drops."""

    def __init__(self, path: Path, source: IO[bytes]) -> None:
        self.path = path
        self.source = source
        self.thread = threading.Thread(target=self._copy, name=f"log:{path.name}", daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        dropped = 0
        with self.path.open("ab") as log, self.source:
            while chunk := os.read(self.source.fileno(), 65536):
                room = LOG_CAP_BYTES - log.tell()
                if room > 0:
                    log.write(chunk[:room])
                    log.flush()
                dropped += max(len(chunk) - max(room, 0), 0)
            if dropped:
                log.write(f"\n===== {dropped} bytes of output dropped (log cap {LOG_CAP_BYTES})\n".encode())


@dataclass
class Proc:
    """One child process in its own session (so a SIGKILL takes its children too), output to `log_path`."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    ready_url: str  # 200 here means started (/readyz of a service, /healthz of a simulator)
    process: subprocess.Popen[bytes] | None = None
    copier: CappedLog | None = None
    starts: int = 0

    def start(self, timeout_s: float = 60) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts + 1} of {self.name} at {time.time():.3f}\n".encode())
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self.copier = CappedLog(self.log_path, self.process.stdout)
        self.starts += 1
        self.wait_started(timeout_s)

    def wait_started(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            try:
                response = httpx.get(self.ready_url, timeout=2)
                if response.status_code == 200:
                    return
                last = response.text[:300]
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"{self.name} did not start ({last}):\n{_log_tail(self.log_path)}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole process group, then reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.copier is not None:
            self.copier.thread.join(10)  # the pipe closes with the process group

    def stop(self, grace_s: float = 10) -> None:
        """SIGTERM (services drain), SIGKILL after `grace_s`."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(grace_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def restart(self, timeout_s: float = 60) -> None:
        self.kill()
        self.start(timeout_s)


async def _postgres_problem() -> str:
    try:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return str(exc)
    await connection.close()
    return ""


def require_postgres() -> None:
    """For a test of the chaos stack: PostgreSQL must answer; with CI set a missing one fails the test, elsewhere it
    is skipped with the reason."""
    import pytest

    problem = asyncio.run(_postgres_problem())
    if problem:
        message = f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {problem}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


async def _admin_sql(statement: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@dataclass
class ChaosStack:
    run_dir: Path
    seed: int = 42
    #: order-writer replicas in one consumer group: `order-writer`, `order-writer-2`, ...
    order_writers: int = 1
    broker: EmbeddedBroker | None = None
    database: str = ""
    procs: dict[str, Proc] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything; on any failure stop what was started and raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker(log_path=self.run_dir / "tansu.log")
        self.broker.start()
        asyncio.run(ensure_topics(self.bootstrap, partitions=4, replication=1))
        self.database = f"m3b_chaos_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin_sql(f'CREATE DATABASE "{self.database}"'))
        state_url = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        state_url = f"{state_url}/{self.database}"

        ports = {name: free_port() for name in ("ion", "quotewerks", "token-service", "quote-ingest", *self.writers)}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        ionapi = self.run_dir / "tenant.ionapi"
        ion_config = self.run_dir / "ion-config.json"
        ion_config.write_text(json.dumps({
            "seed": self.seed,
            "throttle": {"time_period_ms": THROTTLE_PERIOD_MS, "max_requests_per_period": THROTTLE_MAX_REQUESTS},
            "m3": {"seed": self.seed, "customers": 200, "items": 1000},
        }))  # fmt: skip
        qw_config = self.run_dir / "qw-config.json"
        qw_config.write_text(json.dumps({"seed": self.seed, "m3_seed": self.seed, "customers": 200, "products": 1000}))
        python = sys.executable
        base_env = {key: value for key, value in os.environ.items() if not key.startswith("M3B_")}
        self._add(
            "ion",
            [python, "-m", "simulators.ion", "--port", str(ports["ion"]), "--ionapi", str(ionapi),
             "--config", str(ion_config), "--log-level", "warning"],
            base_env, "/healthz",
        )  # fmt: skip
        self._add(
            "quotewerks",
            [python, "-m", "simulators.quotewerks", "--port", str(ports["quotewerks"]), "--config", str(qw_config),
             "--webhook-url", f"{self.urls['quote-ingest']}/webhooks/quotewerks", "--log-level", "warning"],
            {**base_env, "QW_API_KEY": QW_API_KEY, "QW_WEBHOOK_SECRET": WEBHOOK_SECRET}, "/healthz",
        )  # fmt: skip
        common = {
            **base_env,
            "M3B_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "M3B_LOG_FORMAT": "json",
            "M3B_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "M3B_HEARTBEAT_INTERVAL_S": "5",
            "M3B_SHUTDOWN_GRACE_S": "5",
        }
        service = [python, "-m", "m3bridge.cli", "serve"]
        self._add(
            "token-service", [*service, "token-service"],
            {**common, "M3B_HTTP_PORT": str(ports["token-service"]), "M3B_ION_API_FILE": str(ionapi),
             "M3B_SERVICE_KEYS": json.dumps(KEYS), "M3B_THROTTLE_PERIOD_MS": str(THROTTLE_PERIOD_MS),
             "M3B_THROTTLE_MAX_REQUESTS": str(THROTTLE_MAX_REQUESTS)},
            "/readyz",
        )  # fmt: skip
        self._add(
            "quote-ingest", [*service, "quote-ingest"],
            {**common, "M3B_HTTP_PORT": str(ports["quote-ingest"]), "M3B_STATE_URL": state_url,
             "M3B_QUOTEWERKS_URL": self.urls["quotewerks"], "M3B_QUOTEWERKS_API_KEY": QW_API_KEY,
             "M3B_WEBHOOK_SECRET": WEBHOOK_SECRET},
            "/readyz",
        )  # fmt: skip
        for writer in self.writers:
            self._add(
                writer, [*service, "order-writer"],
                {**common, "M3B_HTTP_PORT": str(ports[writer]), "M3B_STATE_URL": state_url,
                 "M3B_TOKEN_SERVICE_URL": self.urls["token-service"], "M3B_TOKEN_SERVICE_KEY": KEYS["order-writer"],
                 "M3B_M3_TIMEOUT_S": str(M3_TIMEOUT_S), "M3B_ORDER_LEASE_S": str(ORDER_LEASE_S)},
                "/readyz",
            )  # fmt: skip
        for name in ("ion", "quotewerks", "token-service", "quote-ingest", *self.writers):
            self.procs[name].start()

    @property
    def writers(self) -> list[str]:
        return ["order-writer", *(f"order-writer-{n}" for n in range(2, self.order_writers + 1))]

    def _add(self, name: str, command: list[str], env: dict[str, str], ready_path: str) -> None:
        url = self.urls[name]
        # A replica's name outlives its process, as a pod's does when its container is restarted.
        env = {**env, "M3B_INSTANCE_ID": f"{name}-0"}
        self.procs[name] = Proc(name, command, env, self.run_dir / f"{name}.log", f"{url}{ready_path}")

    def stop(self) -> None:
        for name in (*self.writers, "quote-ingest", "token-service", "quotewerks", "ion"):
            proc = self.procs.get(name)
            if proc is not None:
                proc.stop()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.database:
            try:
                asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                print(f"could not drop database {self.database}: {exc}", file=sys.stderr)
            self.database = ""

    # --- access ------------------------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap_servers

    @property
    def ion_url(self) -> str:
        return self.urls["ion"]

    @property
    def qw_url(self) -> str:
        return self.urls["quotewerks"]

    def restart(self, name: str) -> None:
        """SIGKILL `name` (no drain), start it again, wait until it is ready."""
        self.procs[name].restart()

    def kill(self, name: str) -> None:
        """SIGKILL `name` (no drain) and leave it down."""
        self.procs[name].kill()

    def signal(self, name: str, signum: int) -> None:
        """Send `signum` to `name`'s process group (SIGSTOP freezes it: no heartbeats, no progress; SIGCONT)."""
        process = self.procs[name].process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)

    def start_again(self, name: str) -> None:
        """Start `name` after a kill, wait until it is ready."""
        self.procs[name].start()

    def log_tail(self, name: str, size: int = 4000) -> str:
        return _log_tail(self.procs[name].log_path, size)

    def dead(self) -> list[str]:
        """Processes that exited on their own."""
        return [name for name, proc in self.procs.items() if proc.process is not None and not proc.alive]


def qw_headers() -> dict[str, Any]:
    return {"X-API-Key": QW_API_KEY}
