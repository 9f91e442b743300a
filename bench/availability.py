"""Benchmark: a sales rep's availability check through inventory-query.

Cold: items never asked before (each answer needs M3). Then each of 10 hot items is asked once (filling the cache).
Warm, one rep: 200 checks one after the other on those items (what a cached answer costs a single rep). Warm, 20
reps: 1,000 checks spread over the hot items from 20 concurrent reps (the cache and single flight answer most; on
2 cores this is mostly queueing in the one service process). Printed: p50/p99 for each, and how many M3 calls the
1,210 hot-item checks caused (from an empty cache). The simulated Gateway latency is M3B_BENCH_LATENCY_MS (default
50 ms)."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from m3bridge.tansu import EmbeddedBroker
from shared.contracts.topics import ensure_topics
from simulators.stack import READ, IonSim, start_ion, start_service, start_token_service

LATENCY_MS = int(os.environ.get("M3B_BENCH_LATENCY_MS", "50"))
COLD_ITEMS = 40
WARM_QUERIES = 1000
SINGLE_REP_QUERIES = 200
HOT_ITEMS = 10
REPS = 20
KEYS = {"inventory-query": "bench-inventory-key"}


def m3_calls(ion: IonSim) -> int:
    calls = ion.stats()["m3"]
    return sum(int(calls.get(name, 0)) for name in ("MMS200MI/GetItmWhsBal", "OIS017MI/GetBasePrice",
                                                   "OIS017MI/LstBasePrice"))  # fmt: skip


def price_list_reads(ion: IonSim) -> int:
    return int(ion.stats()["m3"].get("OIS017MI/LstBasePrice", 0))


async def price_list_read(http: httpx.AsyncClient) -> None:
    """Until the service has read the price list it starts with (its metric says so)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metrics = (await http.get("/metrics")).text
        if 'm3bridge_inventory_price_lists_read_total{outcome="ok"}' in metrics:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("inventory-query read no price list within 30 s")


async def measure(url: str, ion: IonSim) -> list[str]:
    limits = httpx.Limits(max_connections=REPS * 2)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits, headers=READ) as http:

        async def check(item: str) -> float:
            started = time.monotonic()
            response = await http.get(f"/v1/availability/{item}", params={"warehouse": "100", "quantity": "1"})
            response.raise_for_status()
            return (time.monotonic() - started) * 1000

        await price_list_read(http)
        await check("ITM000001")  # connections, metadata
        cold = [await check(f"ITM{n:06d}") for n in range(100, 100 + COLD_ITEMS) if n % 33]
        hot = [f"ITM{n:06d}" for n in range(2, 2 + HOT_ITEMS)]
        rng = random.Random(3)
        calls_before = m3_calls(ion)  # the hot items are not cached yet: their first checks need M3
        first = [await check(item) for item in hot]
        single = [await check(rng.choice(hot)) for _ in range(SINGLE_REP_QUERIES)]
        warm: list[float] = []

        async def rep(count: int) -> None:
            for _ in range(count):
                warm.append(await check(rng.choice(hot)))

        started = time.monotonic()
        await asyncio.gather(*(rep(WARM_QUERIES // REPS) for _ in range(REPS)))
        elapsed = time.monotonic() - started
        calls = m3_calls(ion) - calls_before

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return [
        f"{'':<34}{'p50 ms':>8}{'p99 ms':>9}",
        f"{f'cold ({len(cold)} new items, one at a time)':<34}{statistics.median(cold):>8.1f}{p(cold, 0.99):>9.1f}",
        f"{f'warm, one rep ({len(single)} checks)':<34}{statistics.median(single):>8.1f}{p(single, 0.99):>9.1f}",
        f"{f'warm, {REPS} reps ({len(warm)} checks)':<34}{statistics.median(warm):>8.1f}{p(warm, 0.99):>9.1f}",
        "",
        f"M3 calls for the {len(first) + len(single) + len(warm)} hot-item checks: {calls} "
        f"({calls / (len(first) + len(single) + len(warm)) * 1000:.1f} per 1,000; without the cache 2,000: stock "
        f"and price each); prices from the price list, read {price_list_reads(ion)} time(s) since start in one call "
        f"each (every M3B_PRICE_LIST_READ_INTERVAL_S); {len(warm) / elapsed:.0f} checks/s from {REPS} reps",
    ]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="m3bench-avail-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log")
        broker.start()
        asyncio.run(ensure_topics(broker.bootstrap_servers, partitions=4, replication=1))
        ion = start_ion(Path(tmp), {"latency": {"base_ms": LATENCY_MS, "jitter_ms": LATENCY_MS / 2}})
        token_service = start_token_service(ion, broker.bootstrap_servers, KEYS, {"M3B_LOG_LEVEL": "WARNING"})
        service, url = start_service("inventory-query", broker.bootstrap_servers, {
            "M3B_TOKEN_SERVICE_URL": token_service.url, "M3B_TOKEN_SERVICE_KEY": KEYS["inventory-query"],
            "M3B_LOG_LEVEL": "WARNING",
        })  # fmt: skip
        try:
            print(f"Availability checks through inventory-query; simulated Gateway latency {LATENCY_MS}-"
                  f"{LATENCY_MS * 1.5:g} ms per M3 call\n")  # fmt: skip
            print("\n".join(asyncio.run(measure(url, ion))))
            return 0
        finally:
            service.kill_all()
            token_service.stop()
            ion.stop()
            broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
