"""Benchmark: a full catalog load of M3B_BENCH_FULL_LOAD_ITEMS items (default 100,000) through catalog-sync.

Every box is a process: the ION simulator (each Gateway call delayed M3B_BENCH_LATENCY_MS, default 50 ms, and
the tenant policy of LIMIT requests/s), token-service, catalog-sync, the QuoteWerks simulator. Runs:

1. the first full load, path chosen by catalog-sync itself (above its threshold: the Data Lake), landing every
   product in QuoteWerks;
2. the same through the Data Lake again: nothing changed, so nothing is pushed; this is the M3 read;
3. the same through MI paging (MMS200MI/LstItmByItm pages, OIS017MI/LstBasePrice, MMS200MI/GetItmWhsBal in v2
   bulk requests): the read a bridge without the Data Lake path would do.

4. a first load again, into a QuoteWerks database through the SQL connector (the bridge's product table; on the
   machine's PostgreSQL, as SQL Server does not run here), by a second catalog-sync with a state of its own.

Printed: Gateway calls, 429s and time of each run, and the MI/Data Lake ratios of the two reads. Products are
written to QuoteWerks in batches of 500 (one request to the REST API, one transaction in the database).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from bench.databases import create_database, drop_database
from m3bridge.tansu import EmbeddedBroker
from shared.contracts.topics import ensure_topics
from shared.quotewerks.schema import metadata
from simulators.stack import OPERATOR, IonSim, start_ion, start_quotewerks, start_service, start_token_service

ITEMS = int(os.environ.get("M3B_BENCH_FULL_LOAD_ITEMS", "100000"))
LATENCY_MS = int(os.environ.get("M3B_BENCH_LATENCY_MS", "50"))
# How long a Data Lake query stays RUNNING before its result can be read: real Compass queries take seconds to
# minutes; the simulator's own default (0.3 s) flatters the Lake path.
DATA_LAKE_S = float(os.environ.get("M3B_BENCH_DATA_LAKE_S", "15"))
MI_PAGE_SIZE = int(os.environ.get("M3B_BENCH_MI_PAGE_SIZE", "1000"))
LIMIT = 100  # Gateway requests per second for the tenant
KEYS = {"catalog-sync": "bench-catalog-key"}


async def quotewerks_database(name: str) -> str:
    """A new PostgreSQL database with the QuoteWerks schema subset and the bridge's product table; its URL."""
    url = await create_database(name)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as schema:
            await schema.run_sync(metadata.create_all)
    finally:
        await engine.dispose()
    return url


def gateway(ion: IonSim) -> tuple[int, int]:
    stats = ion.stats()["gateway"]
    return int(stats["accepted"]), int(stats["throttled"])


def run(ion: IonSim, url: str, path: str | None) -> dict[str, Any]:
    accepted, throttled = gateway(ion)
    started = time.monotonic()
    params = {"wait": "true", **({"path": path} if path else {})}
    response = httpx.post(f"{url}/v1/sync/full", params=params, headers=OPERATOR, timeout=3600)
    response.raise_for_status()
    report: dict[str, Any] = response.json()
    after_accepted, after_throttled = gateway(ion)
    report["seconds"] = time.monotonic() - started
    report["gateway_calls"] = after_accepted - accepted
    report["throttled"] = after_throttled - throttled
    return report


def row(label: str, report: dict[str, Any]) -> str:
    counts = report["counts"]
    pushed = counts.get("created", 0) + counts.get("updated", 0)
    return (
        f"{label:<30}{report['path']:>10}{report['gateway_calls']:>10}{report['throttled']:>6}"
        f"{report['seconds']:>9.1f}{pushed:>9}{counts.get('unchanged', 0):>10}{counts.get('failed', 0):>7}"
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="m3bench-load-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log")
        broker.start()
        started: list[Any] = []
        try:
            asyncio.run(ensure_topics(broker.bootstrap_servers, partitions=4, replication=1))
            ion = start_ion(Path(tmp), {
                "m3": {"items": ITEMS},
                "throttle": {"time_period_ms": 1000, "max_requests_per_period": LIMIT},
                "latency": {"base_ms": LATENCY_MS, "jitter_ms": LATENCY_MS / 2},
            })  # fmt: skip
            started.append(ion.stop)
            ion.admin("PUT", "datalake", {"running_s": DATA_LAKE_S})
            token_service = start_token_service(ion, broker.bootstrap_servers, KEYS, {
                "M3B_THROTTLE_PERIOD_MS": "1000", "M3B_THROTTLE_MAX_REQUESTS": str(LIMIT), "M3B_LOG_LEVEL": "WARNING",
            })  # fmt: skip
            started.append(token_service.stop)
            qw_config = Path(tmp) / "qw.json"
            qw_config.write_text(json.dumps({"products": 40, "customers": 10, "extra_documents": 0}))
            quotewerks = start_quotewerks("http://127.0.0.1:9/unused", "unused-secret", config_file=qw_config)
            started.append(quotewerks.stop)
            service, url = start_service("catalog-sync", broker.bootstrap_servers, {
                "M3B_STATE_URL": f"sqlite+aiosqlite:///{tmp}/state.db", "M3B_TOKEN_SERVICE_URL": token_service.url,
                "M3B_TOKEN_SERVICE_KEY": KEYS["catalog-sync"], "M3B_QUOTEWERKS_URL": quotewerks.url,
                "M3B_QUOTEWERKS_API_KEY": quotewerks.api_key, "M3B_FULL_LOAD_AT_START": "false",
                "M3B_FULL_LOAD_INTERVAL_S": "0", "M3B_DATA_LAKE_POLL_S": "0.5", "M3B_LOG_LEVEL": "WARNING",
                "M3B_MI_PAGE_SIZE": str(MI_PAGE_SIZE),
            })  # fmt: skip
            started.append(service.kill_all)
            print(f"Full load of {ITEMS:,} M3 items: ION simulator {LATENCY_MS}-{LATENCY_MS * 1.5:g} ms per call, "
                  f"policy {LIMIT} req/s, bulk priority; each Data Lake query RUNNING for {DATA_LAKE_S:g} s "
                  f"(M3B_BENCH_DATA_LAKE_S), MI pages of {MI_PAGE_SIZE} items (M3B_MI_PAGE_SIZE)\n")  # fmt: skip
            first = run(ion, url, None)
            lake = run(ion, url, "data_lake")
            mi = run(ion, url, "mi")
            database = f"m3b_bench_qw_{uuid.uuid4().hex[:10]}"
            qw_url = asyncio.run(quotewerks_database(database))
            started.append(lambda: asyncio.run(drop_database(database)))
            sql_service, sql_url = start_service("catalog-sync", broker.bootstrap_servers, {
                "M3B_STATE_URL": f"sqlite+aiosqlite:///{tmp}/state-sql.db", "M3B_TOKEN_SERVICE_URL": token_service.url,
                "M3B_TOKEN_SERVICE_KEY": KEYS["catalog-sync"], "M3B_QUOTEWERKS_URL": qw_url,
                "M3B_CATALOG_CONSUMER_GROUP": "m3bridge.catalog-sync.bench-sql", "M3B_FULL_LOAD_AT_START": "false",
                "M3B_FULL_LOAD_INTERVAL_S": "0", "M3B_DATA_LAKE_POLL_S": "0.5", "M3B_LOG_LEVEL": "WARNING",
            })  # fmt: skip
            started.append(sql_service.kill_all)
            sql_first = run(ion, sql_url, None)
            print(f"{'run':<30}{'path':>10}{'calls':>10}{'429':>6}{'s':>9}{'pushed':>9}{'unchanged':>10}{'failed':>7}")
            print(row("1 first load (path by volume)", first))
            print(row("2 again, Data Lake", lake))
            print(row("3 again, MI paging", mi))
            print(row("4 first load, SQL connector", sql_first))
            print()
            print(f"why run 1 took its path: {first['path_reason']}")
            products = len(quotewerks.api("GET", "products")["products"])
            print(f"QuoteWerks products after the loads: {products:,} (zero duplicates: "
                  f"{products == max(ITEMS, 40)})")  # fmt: skip
            calls_ratio = mi["gateway_calls"] / max(lake["gateway_calls"], 1)
            time_ratio = mi["seconds"] / max(lake["seconds"], 1e-9)
            print(f"MI paging / Data Lake for the same read: {calls_ratio:.0f}x the Gateway calls, "
                  f"{time_ratio:.1f}x the time")  # fmt: skip
            for report in (first, lake, mi, sql_first):
                if report["counts"].get("failed"):
                    print(f"problems in {report['run_id']}: {report['problems'][:3]}")
                    return 1
            return 0
        finally:
            for stop in reversed(started):
                stop()
            broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
