"""A whole fuzz run: a local stack (`m3bridge run` on free ports), every service fuzzed in turn, then a canary quote
through the whole path (approved in QuoteWerks → one confirmed M3 order written back, its BODs accepted by
bod-listener): the fuzzing left every service working and lost nothing of what came after."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services import SERVICES
from simulators.processes import Captured, wait_until
from simulators.stack import start_local_run, started
from tests.fuzz.engine import ServiceResult, fuzz_service

#: An open quote of the QuoteWerks simulator's demo data that no fuzz request names.
CANARY_QUOTE = "AAAQ1006"
#: token-service goes last: its fuzzed 429 reports pause every M3 call (up to a minute each, by design), which
#: would make the other services' M3-backed answers wait. The canary then also proves the budget recovers.
CANARY_TIMEOUT_S = 240


@dataclass
class FuzzRun:
    results: list[ServiceResult] = field(default_factory=list)
    canary: str = ""  # the M3 order number the canary quote got, or what went wrong
    canary_ok: bool = False
    bods_failed: int = 0

    @property
    def problems(self) -> list[str]:
        found = [problem for result in self.results for problem in result.problems]
        if not self.canary_ok:
            found.append(f"canary quote {CANARY_QUOTE}: {self.canary}")
        if self.bods_failed:
            found.append(f"{self.bods_failed} BOD deliveries from ION failed after the fuzzing")
        return found


def run_keys(state_dir: Path) -> dict[str, Any]:
    keys: dict[str, Any] = json.loads((state_dir / "run-keys.json").read_text(encoding="utf-8"))
    return keys


def canary(children: dict[str, tuple[int, str]], keys: dict[str, Any], run: FuzzRun, timeout_s: float) -> None:
    quotewerks, ion = children["quotewerks-sim"][1], children["ion-sim"][1]
    api = httpx.Client(base_url=f"{quotewerks}/api/v1", headers={"X-API-Key": keys["quotewerks_api_key"]}, timeout=10)
    with api:
        api.post(f"documents/{CANARY_QUOTE}/approve").raise_for_status()

        def order_number() -> str:
            header = api.get(f"documents/{CANARY_QUOTE}").json()["DocumentHeader"]
            return str(header.get("CustomText02") or "")

        try:
            run.canary = wait_until(f"the canary quote {CANARY_QUOTE} written back", order_number, timeout_s)
            run.canary_ok = True
        except AssertionError as exc:
            run.canary = str(exc)

    def delivered() -> dict[str, Any] | None:
        stats: dict[str, Any] = httpx.get(f"{ion}/__admin/bods", timeout=5).json()
        return stats if stats["pending"] == 0 else None

    stats = wait_until("ION's BOD deliveries done", delivered, timeout_s)
    run.bods_failed = int(stats["failed"])


def fuzz_started(
    children: dict[str, tuple[int, str]],
    keys: dict[str, Any],
    workdir: Path,
    *,
    examples: int,
    seed: int,
    services: list[str] | None = None,
    progress: Any = None,
    parallel: int = 3,
) -> FuzzRun:
    """Fuzzes each service (all by default) of a local run that is already up, then checks the canary. The services
    other than token-service are fuzzed `parallel` at a time (each pass is a schemathesis process of its own);
    token-service goes last, alone."""
    run = FuzzRun()
    chosen = list(services or SERVICES)

    def one(service: str) -> ServiceResult:
        pid, url = children[service]
        began = time.monotonic()
        result = fuzz_service(service, url, pid, keys, examples=examples, seed=seed, workdir=workdir)
        if progress is not None:
            progress(result, time.monotonic() - began)
        return result

    with ThreadPoolExecutor(max_workers=max(parallel, 1), thread_name_prefix="fuzz") as pool:
        run.results += pool.map(one, [service for service in chosen if service != "token-service"])
    if "token-service" in chosen:
        run.results.append(one("token-service"))
    canary(children, keys, run, timeout_s=CANARY_TIMEOUT_S)
    return run


def fuzz_everything(
    tmp: Path, *, examples: int, seed: int, services: list[str] | None = None, progress: Any = None
) -> FuzzRun:
    """Starts the local stack in `tmp`, fuzzes each service (all by default), checks the canary, stops it all."""
    stack: Captured = start_local_run([sys.executable, "-m", "m3bridge.cli", "run"], tmp)
    try:
        children = started(stack)
        return fuzz_started(
            children, run_keys(tmp / "var"), tmp, examples=examples, seed=seed, services=services, progress=progress
        )
    finally:
        stack.kill_all()
        (tmp / "stack.log").write_text(stack.output, encoding="utf-8")
