"""Benchmark: three services' worth of M3 load under the Gateway's throttling policy.

The same load runs twice against the ION simulator (real processes, real HTTP):
- **bridge**: every call leases the shared token and a permit from token-service (central budget, priorities);
- **naive**: each service paces itself at the full policy rate on its own and fetches a token per call.

Load: bulk catalog paging (MMS200MI/LstItmByItm, several workers, saturating), order writes (OIS100MI batch
entry: AddBatchHead, 3 x AddBatchLine, Confirm) and interactive lookups (MMS200MI/GetItmWhsBal, a few per
second). Printed: share of the policy limit used in steady state, 429 answers, token fetches, and how long an
interactive lookup waited before it could be sent (p50/p99). Targets: share >= 0.95 with zero 429s;
interactive p99 wait <= 50 ms while bulk saturates.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from m3bridge.tansu import EmbeddedBroker
from shared.contracts.topics import ensure_topics
from shared.m3 import M3Client, M3Error, wire
from shared.m3.ionapi import IonApiCredentials
from shared.m3.lease import LeaseClient, Priority
from simulators.stack import IonSim, start_ion, start_token_service

PERIOD_MS = 1000
LIMIT = 100  # requests per period: the simulated tenant's spike-arrest maximum
RUN_S = 15.0
WARMUP_S = 2.0
BULK_WORKERS = 6
ORDER_WORKERS = 2
INTERACTIVE_PER_S = 5.0
SMOOTHED_UTILISATION = 0.85
KEYS = {"catalog-sync": "bench-key-catalog", "order-writer": "bench-key-orders", "inventory-query": "bench-key-inv"}


@dataclass
class Result:
    label: str
    accepted: int = 0
    throttled: int = 0
    share_of_limit: float = 0.0
    token_fetches: int = 0
    interactive_waits_ms: list[float] = field(default_factory=list)
    interactive_failures: int = 0
    orders: int = 0
    bulk_pages: int = 0

    def percentile(self, q: float) -> float:
        if not self.interactive_waits_ms:
            return float("nan")
        values = sorted(self.interactive_waits_ms)
        return values[min(len(values) - 1, int(q * len(values)))]


# --- the load, written once against a "call" function so both setups run the same thing -----------------

Call = Callable[[str, str, dict[str, str], Priority], Awaitable[list[dict[str, Any]]]]


async def run_load(
    call: Call, waits: list[float], wait_of: Callable[[], float], result: Result, stop_at: float
) -> None:
    async def bulk_worker(worker: int) -> None:
        start = f"ITM{worker * 1000 + 1:06d}"
        while time.monotonic() < stop_at:
            with contextlib.suppress(M3Error):
                rows = await call("MMS200MI", "LstItmByItm", {"ITNO": start}, Priority.BULK)
                result.bulk_pages += 1
                start = str(rows[-1]["ITNO"]) if rows else f"ITM{worker * 1000 + 1:06d}"

    async def order_worker(worker: int) -> None:
        rng = random.Random(worker)
        while time.monotonic() < stop_at:
            with contextlib.suppress(M3Error):
                head = await call("OIS100MI", "AddBatchHead", {"CUNO": f"C{rng.randint(1, 150):06d}",
                                                               "CUOR": f"BENCH{worker}-{result.orders}"},
                                  Priority.TRANSACTIONAL)  # fmt: skip
                order = str(head[0]["ORNO"])
                for line in range(3):
                    item = f"ITM{rng.randint(1, 900) * 33 + 1 + line:06d}"  # never an inactive (n % 33 == 0) item
                    await call("OIS100MI", "AddBatchLine", {"ORNO": order, "ITNO": item, "ORQT": "2"},
                               Priority.TRANSACTIONAL)  # fmt: skip
                await call("OIS100MI", "Confirm", {"ORNO": order}, Priority.TRANSACTIONAL)
                result.orders += 1

    async def interactive() -> None:
        rng = random.Random(7)
        tasks: set[asyncio.Task[None]] = set()

        async def lookup() -> None:
            try:
                await call("MMS200MI", "GetItmWhsBal", {"WHLO": "100", "ITNO": f"ITM{rng.randint(1, 999):06d}"},
                           Priority.INTERACTIVE)  # fmt: skip
                waits.append(wait_of())
            except M3Error:
                result.interactive_failures += 1

        while time.monotonic() < stop_at:
            await asyncio.sleep(rng.expovariate(INTERACTIVE_PER_S))
            task = asyncio.create_task(lookup())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    await asyncio.gather(
        *(bulk_worker(n) for n in range(BULK_WORKERS)), *(order_worker(n) for n in range(ORDER_WORKERS)), interactive()
    )


# --- bridge: through token-service ------------------------------------------------------------------------


async def bridge_run(ion: IonSim, token_service_url: str, label: str = "bridge (token-service)") -> Result:
    result = Result(label)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as http:
        clients = {
            name: M3Client(LeaseClient(token_service_url, name, SecretStr(key), http=http), http, company=100)
            for name, key in KEYS.items()
        }
        owner = {
            Priority.BULK: "catalog-sync",
            Priority.TRANSACTIONAL: "order-writer",
            Priority.INTERACTIVE: "inventory-query",
        }
        last_wait: dict[str, float] = {}
        original_lease = LeaseClient.lease

        async def lease_and_note(self: LeaseClient, priority: Priority, **kwargs: Any) -> Any:
            lease = await original_lease(self, priority, **kwargs)
            if priority is Priority.INTERACTIVE:
                last_wait[str(id(asyncio.current_task()))] = lease.waited_ms
            return lease

        LeaseClient.lease = lease_and_note  # type: ignore[method-assign]
        try:

            async def call(
                program: str, transaction: str, fields: dict[str, str], priority: Priority
            ) -> list[dict[str, Any]]:
                return await clients[owner[priority]].execute(program, transaction, fields, priority=priority)

            for program, transaction in [("MMS200MI", "LstItmByItm"), ("MMS200MI", "GetItmWhsBal"),
                                         ("OIS100MI", "AddBatchHead"), ("OIS100MI", "AddBatchLine"),
                                         ("OIS100MI", "Confirm")]:  # fmt: skip
                for client in clients.values():
                    await client.metadata(program, transaction, priority=Priority.BULK)
            await measure(ion, result, call, lambda: last_wait.get(str(id(asyncio.current_task())), float("nan")))
        finally:
            LeaseClient.lease = original_lease  # type: ignore[method-assign]
    return result


# --- naive: per-service limiters at full rate, a token per call -------------------------------------------


class Pacer:
    """One service's own limiter at the full policy rate, knowing nothing of the others."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self._interval


async def naive_run(ion: IonSim) -> Result:
    result = Result("naive (own limiters)")
    credentials = IonApiCredentials.load(ion.ionapi)
    basic = base64.b64encode(
        f"{credentials.client_id}:{credentials.client_secret.get_secret_value()}".encode()
    ).decode()
    pacers = {p: Pacer(LIMIT / (PERIOD_MS / 1000)) for p in Priority}
    wait_of_task: dict[int, float] = {}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as http:

        async def call(
            program: str, transaction: str, fields: dict[str, str], priority: Priority
        ) -> list[dict[str, Any]]:
            while True:
                wanted = time.monotonic()
                await pacers[priority].wait()
                token = await http.post(
                    credentials.token_url,
                    data={"grant_type": "password", "username": credentials.service_account_access_key,
                          "password": credentials.service_account_secret_key.get_secret_value()},
                    headers={"Authorization": f"Basic {basic}"},
                )  # fmt: skip
                access = token.json()["access_token"]
                wait_of_task[id(asyncio.current_task())] = (time.monotonic() - wanted) * 1000
                path = wire.v1_path(program, transaction, maxrecs=100, returncols=None, company=100, division=None)
                response = await http.get(credentials.m3_base_url + path, params=fields,
                                          headers={"Authorization": f"Bearer {access}"})  # fmt: skip
                if response.status_code == 429:
                    await asyncio.sleep(wire.parse_retry_after(response.headers.get("retry-after")) or 1.0)
                    continue
                if response.status_code != 200:
                    raise M3Error(f"HTTP {response.status_code}", program=program, transaction=transaction)
                rows, _specs = wire.parse_v1(response.json(), program, transaction)
                return [{k: v.rstrip() for k, v in row.items()} for row in rows]

        await measure(ion, result, call, lambda: wait_of_task.get(id(asyncio.current_task()), float("nan")))
    return result


async def measure(ion: IonSim, result: Result, call: Call, wait_of: Callable[[], float]) -> None:
    ion.admin("POST", "reset-stats")
    tokens_before = ion.stats()["auth"]["tokens_issued_total"]
    started = time.time()
    await run_load(call, result.interactive_waits_ms, wait_of, result, time.monotonic() + RUN_S)
    stats = ion.admin("GET", "stats?times=true")
    gateway = stats["gateway"]
    result.accepted = gateway["accepted"]
    result.throttled = gateway["throttled"]
    result.token_fetches = stats["auth"]["tokens_issued_total"] - tokens_before
    window_start, window_end = started + WARMUP_S, started + RUN_S - 1.0
    steady = [t for t in gateway["accepted_times"] if window_start <= t < window_end]
    result.share_of_limit = len(steady) / ((window_end - window_start) * LIMIT / (PERIOD_MS / 1000))


def report(results: list[Result]) -> str:
    rows = [
        ("share of the policy limit used", lambda r: f"{r.share_of_limit:.3f}"),
        ("429 answers", lambda r: str(r.throttled)),
        ("Gateway requests accepted", lambda r: str(r.accepted)),
        ("token fetches during the run", lambda r: str(r.token_fetches)),
        ("interactive wait p50 (ms)", lambda r: f"{r.percentile(0.5):.1f}"),
        ("interactive wait p99 (ms)", lambda r: f"{r.percentile(0.99):.1f}"),
        ("interactive lookups done / failed", lambda r: f"{len(r.interactive_waits_ms)} / {r.interactive_failures}"),
        ("orders confirmed", lambda r: str(r.orders)),
        ("catalog pages read", lambda r: str(r.bulk_pages)),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{r.label:>24}" for r in results)]
    lines += [f"{label:<{width}}  " + "  ".join(f"{fmt(r):>24}" for r in results) for label, fmt in rows]
    bridge = results[0]
    share_ok = bridge.share_of_limit >= 0.95 and bridge.throttled == 0
    wait_ok = bridge.percentile(0.99) <= 50
    lines.append("")
    lines.append(f"target share >= 0.95 with 0 x 429: {'met' if share_ok else 'MISSED'} "
                 f"({bridge.share_of_limit:.3f}, {bridge.throttled} x 429)")  # fmt: skip
    lines.append(
        f"target interactive p99 wait <= 50 ms: {'met' if wait_ok else 'MISSED'} ({bridge.percentile(0.99):.1f} ms)"
    )
    if len(results) > 2:
        smoothed = results[2]
        lines.append(f"against a smoothed (spike-arrest) policy: share {smoothed.share_of_limit:.3f}, "
                     f"{smoothed.throttled} x 429, interactive p99 {smoothed.percentile(0.99):.1f} ms")  # fmt: skip
    if len(results) > 1 and results[1].accepted:
        naive = results[1]
        lines.append(
            f"ratios bridge/naive: 429s {bridge.throttled}/{naive.throttled}, token fetches "
            f"{bridge.token_fetches}/{naive.token_fetches}, interactive p99 "
            f"{bridge.percentile(0.99) / naive.percentile(0.99):.2f}x"
        )
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="m3bench-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log")
        broker.start()
        asyncio.run(ensure_topics(broker.bootstrap_servers, partitions=4, replication=1))
        ion = start_ion(Path(tmp), {
            "throttle": {"time_period_ms": PERIOD_MS, "max_requests_per_period": LIMIT, "mode": "windowed"},
            "latency": {"base_ms": 5, "jitter_ms": 5},
            "retry_after_s": 1.0,
        })  # fmt: skip
        token_service = start_token_service(ion, broker.bootstrap_servers, KEYS, {
            "M3B_THROTTLE_PERIOD_MS": str(PERIOD_MS), "M3B_THROTTLE_MAX_REQUESTS": str(LIMIT),
            "M3B_BUDGET_UTILISATION": "0.97", "M3B_INTERACTIVE_RESERVE": "1", "M3B_LOG_LEVEL": "WARNING",
        })  # fmt: skip
        try:
            print(f"M3 path benchmark: policy {LIMIT} requests / {PERIOD_MS} ms (windowed), simulated latency 5-10 ms,")
            print(f"{BULK_WORKERS} bulk workers, {ORDER_WORKERS} order writers, "
                  f"~{INTERACTIVE_PER_S:g} interactive lookups/s, {RUN_S:g} s per setup "
                  f"(steady state after {WARMUP_S:g} s)\n")  # fmt: skip
            bridge = asyncio.run(bridge_run(ion, token_service.url))
            naive = asyncio.run(naive_run(ion))
            # Apigee-style spike arrest: N per period smoothed to one request every period/N; bursts fail.
            ion.admin("PUT", "throttle", {"time_period_ms": PERIOD_MS, "max_requests_per_period": LIMIT,
                                          "mode": "smoothed"})  # fmt: skip
            token_service.stop()
            token_service = start_token_service(ion, broker.bootstrap_servers, KEYS, {
                "M3B_THROTTLE_PERIOD_MS": str(PERIOD_MS), "M3B_THROTTLE_MAX_REQUESTS": str(LIMIT),
                "M3B_THROTTLE_MODE": "smoothed", "M3B_BUDGET_UTILISATION": str(SMOOTHED_UTILISATION),
                "M3B_LOG_LEVEL": "WARNING",
            })  # fmt: skip
            smoothed = asyncio.run(bridge_run(ion, token_service.url, label="bridge, smoothed policy"))
            print(report([bridge, naive, smoothed]))
            return 0
        finally:
            token_service.stop()
            ion.stop()
            broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
