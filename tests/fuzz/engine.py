"""One fuzz pass: schemathesis (its CLI, a pinned dev dependency) against one service's OpenAPI document, with the
service's credentials and without, every request and answer read back from the HAR report it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from simulators.processes import alive

#: Open on every service (health, readiness, metrics); every other route needs a credential.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Schemathesis' phases: its own examples, the coverage phase's boundary and wrong-type cases, random fuzzing.
PHASES = "examples,coverage,fuzzing"


def schemathesis_command() -> list[str]:
    """The CLI installed beside this interpreter (the dev extra pins it); missing is an error, never a skip."""
    executable = Path(sys.executable).parent / "schemathesis"
    if not executable.exists():
        raise RuntimeError(f"schemathesis is not installed at {executable}: `make venv` installs the dev extra")
    return [str(executable)]


def credentials(service: str, keys: dict[str, Any]) -> dict[str, str]:
    """The headers a legitimate caller of `service` sends, from a local run's run-keys.json."""
    operator = {"Authorization": f"Bearer {keys['operator']}"}
    return {
        "token-service": {"Authorization": f"Bearer {keys['token_service']['order-writer']}"},
        "quote-ingest": {**operator, "X-M3Bridge-Webhook-Secret": keys["webhook_secret"]},
        "bod-listener": {**operator, "X-M3Bridge-BOD-Secret": keys["bod_secret"]},
        "catalog-sync": operator,
        "inventory-query": {"Authorization": f"Bearer {keys['read']}"},
        "order-writer": operator,
    }[service]


@dataclass
class Pass:
    """What one schemathesis run sent to one service and what came back."""

    service: str
    with_keys: bool
    statuses: Counter[int] = field(default_factory=Counter)
    #: (method, path, status) of answers that break a rule: any 5xx, no answer (0); without keys, a 2xx from a
    #: non-public route.
    violations: list[tuple[str, str, int]] = field(default_factory=list)
    protected_answers: Counter[int] = field(default_factory=Counter)
    exit_code: int = 0
    output_tail: str = ""

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


@dataclass
class ServiceResult:
    service: str
    passes: list[Pass]
    alive_after: bool
    ready_after: bool
    ready_detail: str = ""

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.passes)

    @property
    def server_errors(self) -> int:
        return sum(p.server_errors for p in self.passes)

    @property
    def problems(self) -> list[str]:
        found = [f"{p.service} {'with' if p.with_keys else 'without'} keys: {m} {path} answered {status}"
                 for p in self.passes for m, path, status in p.violations]  # fmt: skip
        for p in self.passes:
            if p.requests == 0:
                found.append(f"{p.service}: schemathesis sent nothing (exit {p.exit_code}):\n{p.output_tail}")
            if p.with_keys and p.protected_answers and set(p.protected_answers) == {401}:
                found.append(f"{p.service}: every call with the service's keys was refused (401): wrong credentials")
        if not self.alive_after:
            found.append(f"{self.service}: the process died")
        if not self.ready_after:
            found.append(f"{self.service}: not ready after the fuzzing: {self.ready_detail}")
        return found


def read_har(path: Path, result: Pass) -> None:
    entries = json.loads(path.read_text(encoding="utf-8"))["log"]["entries"]
    for entry in entries:
        status = int(entry["response"]["status"])
        method = entry["request"]["method"]
        route = urlsplit(entry["request"]["url"]).path
        result.statuses[status] += 1
        protected = route not in PUBLIC_PATHS
        if protected:
            result.protected_answers[status] += 1
        # 0: no answer within the request timeout (schemathesis records it so), as bad for a caller as a 5xx.
        if status >= 500 or status == 0 or (protected and not result.with_keys and 200 <= status < 300):
            result.violations.append((method, route, status))


def fuzz_pass(
    service: str, url: str, headers: dict[str, str], *, with_keys: bool, examples: int, seed: int, workdir: Path
) -> Pass:
    """Runs schemathesis once; its own verdict is its exit code, ours is read from every answer in the HAR."""
    result = Pass(service, with_keys)
    workdir = workdir / f"fuzz-{service}"  # its own cache dir: services may be fuzzed at the same time
    workdir.mkdir(parents=True, exist_ok=True)
    har = workdir / f"{service}-{'keys' if with_keys else 'nokeys'}.har"
    command = [
        *schemathesis_command(), "run", f"{url}/openapi.json",
        "--checks", "not_a_server_error",
        "--phases", PHASES,
        "--max-examples", str(examples),
        "--seed", str(seed),
        "--workers", "1",
        "--request-timeout", "30",
        "--suppress-health-check", "all",
        "--no-shrink",
        "--report", "har", "--report-har-path", str(har),
    ]  # fmt: skip
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=3600, check=False, cwd=workdir,  # its cache dir goes there
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )  # fmt: skip
    result.exit_code = completed.returncode
    result.output_tail = (completed.stdout + completed.stderr)[-4000:]
    if har.exists():
        read_har(har, result)
    return result


def fuzz_service(
    service: str, url: str, pid: int, keys: dict[str, Any], *, examples: int, seed: int, workdir: Path
) -> ServiceResult:
    """Both passes (with the service's credentials, then with none), then: is the process alive and ready?"""
    passes = [
        fuzz_pass(service, url, credentials(service, keys), with_keys=True, examples=examples, seed=seed,
                  workdir=workdir),
        fuzz_pass(service, url, {}, with_keys=False, examples=examples, seed=seed + 1, workdir=workdir),
    ]  # fmt: skip
    try:
        ready = httpx.get(f"{url}/readyz", timeout=10)
        ready_after, detail = ready.status_code == 200, ready.text[:500]
    except httpx.HTTPError as exc:
        ready_after, detail = False, f"{type(exc).__name__}: {exc}"
    return ServiceResult(service, passes, alive_after=alive(pid), ready_after=ready_after, ready_detail=detail)
