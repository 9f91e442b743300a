"""Benchmark: month end. Thousands of approved quotes within a minute, reps checking stock and a catalog load, all
against one tenant's Gateway throttling policy — through real processes: the broker, the ION simulator, token-service
(one, or two sharing the budget in Redis), 1, 2 or 4 order-writer replicas on PostgreSQL, inventory-query.

Each run starts everything afresh and publishes `--quotes` approved 10-line quotes evenly over `--arrival` seconds
while reps ask inventory-query for availability (a few hundred hot items, `REPS` reps) and two workers page the item
master at bulk priority (what catalog-sync's MI path does). Printed per run:

- drain: first approval to the last order's result, and its **ratio to the budget-limited ideal** — the time the
  orders' Gateway requests (4 per order, the least an order takes) need at the policy's full limit (with rate
  smoothing: at its delayAfterCount, past which the Gateway delays), or the arrival time when that is longer;
  target >= 0.9;
- share of the policy limit the Gateway accepted while the orders drained (target >= 0.98 windowed, >= 0.9 with
  rate smoothing, where the bridge paces below delayAfterCount), 429 answers (target 0) and requests the Gateway
  delayed (rate smoothing);
- the interactive permit wait p99 in token-service (target <= 50 ms, from its histogram, interpolated in the bucket),
  the reps' answer p50/p99 and the M3 calls their checks caused per 1,000 (the hot items cached before the run
  starts; each expires and is read again during it);
- quotes not ordered (target 0);
- for the run with two token-service replicas: one is SIGKILLed halfway through the drain; the 429s and lost quotes
  show whether the other carried on alone without a burst.

Also printed: each service's resident memory while idle (VmRSS, target <= 80 MB). `python -m bench month-end --help`
lists the options; every run's figures carry the commit and the machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.databases import create_database, drop_database
from bench.measures import difference, machine, metric_buckets, percentile, quantile, rss_mb, verdict
from bench.month_end_load import (
    BULK_WORKERS,
    HOT_ITEMS,
    KEYS,
    LINES,
    REP_CHECK_EVERY_S,
    REPS,
    Results,
    catalog_paging,
    quote,
    reps,
)
from m3bridge.tansu import EmbeddedBroker
from shared.contracts.topics import QUOTE_APPROVED, ensure_topics
from shared.platform.kafka import create_broker, publish
from shared.platform.settings import BridgeSettings
from shared.platform.state import db
from simulators.ion.gateway import LATE_LOOP_MS
from simulators.processes import Captured
from simulators.stack import READ, IonSim, TokenService, start_ion, start_service, start_token_service

LIMIT = 100  # the policy's spike-arrest maximum per period
PERIOD_MS = 1000
LATENCY_MS = (50, 75)  # the simulated Gateway's latency per request
REQUESTS_PER_ORDER = 4  # bulk GetItmBasic, AddBatchHead, bulk AddBatchLine, Confirm (tests/unit/test_order_path.py)
PARTITIONS = 8
REDIS_URL = os.environ.get("M3B_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IDLE_SERVICES = ("token-service", "order-writer", "inventory-query")


@dataclass(frozen=True)
class Setup:
    name: str
    writers: int
    throttle: dict[str, Any]
    token_services: int = 1
    kill_token_service: bool = False

    @property
    def smoothing(self) -> bool:
        return self.throttle.get("delay_after_count") is not None


WINDOWED = {"time_period_ms": PERIOD_MS, "max_requests_per_period": LIMIT, "mode": "windowed"}
SMOOTHING = {**WINDOWED, "delay_after_count": 95, "delay_factor_ms": 200}
SETUPS = {
    "1w": Setup("1 order-writer, fixed period", 1, {**WINDOWED, "window": "fixed"}),
    "2w": Setup("2 order-writers, fixed period", 2, {**WINDOWED, "window": "fixed"}),
    "4w": Setup("4 order-writers, fixed period", 4, {**WINDOWED, "window": "fixed"}),
    "sliding": Setup("2 order-writers, sliding period", 2, {**WINDOWED, "window": "sliding"}),
    "smoothing": Setup("2 order-writers, rate smoothing (constant delay)", 2,
                       {**SMOOTHING, "window": "fixed", "delay_growth": "constant"}),
    "smoothing-linear": Setup("2 order-writers, rate smoothing (delay grows), sliding", 2,
                              {**SMOOTHING, "window": "sliding", "delay_growth": "linear"}),
    "ts-kill": Setup("2 order-writers, 2 token-services in Redis, one killed", 2, {**WINDOWED, "window": "fixed"},
                     token_services=2, kill_token_service=True),
}  # fmt: skip


@dataclass
class Figures:
    setup: Setup
    quotes: int
    drain_s: float = math.nan
    ideal_s: float = math.nan
    share: float = math.nan
    throttled: int = 0
    delayed: int = 0
    interactive_p99_ms: float = math.nan
    rep_p50_ms: float = math.nan
    rep_p99_ms: float = math.nan
    rep_checks: int = 0
    rep_m3_calls: int = 0
    not_ordered: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    order_requests: int = 0
    bulk_pages: int = 0
    idle_rss_mb: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.ideal_s / self.drain_s if self.drain_s else math.nan


# --- processes ------------------------------------------------------------------------------------------------


def service_pid(process: Captured) -> int:
    """The service's own process: `m3bridge serve` runs in the child Captured started."""
    return process.process.pid


# --- one run --------------------------------------------------------------------------------------------------


def run_setup(setup: Setup, quotes: int, arrival_s: float, tmp: Path) -> Figures:
    figures = Figures(setup, quotes)
    database = f"m3b_bench_{uuid.uuid4().hex[:10]}"
    state_url = asyncio.run(create_database(database))
    asyncio.run(db.migrate(state_url))  # as deployed: the migrate job runs before the services start
    with ExitStack() as cleanup:
        cleanup.callback(lambda: asyncio.run(drop_database(database)))
        broker = EmbeddedBroker(log_path=tmp / "broker.log")
        broker.start()
        cleanup.callback(broker.stop)
        asyncio.run(ensure_topics(broker.bootstrap_servers, partitions=PARTITIONS, replication=1))
        latency = {"base_ms": LATENCY_MS[0], "jitter_ms": LATENCY_MS[1] - LATENCY_MS[0]}
        ion = start_ion(tmp, {"throttle": setup.throttle, "retry_after_s": 1.0, "latency": latency, "probe_loop": True})
        cleanup.callback(ion.stop)
        budget = {
            "M3B_THROTTLE_PERIOD_MS": str(PERIOD_MS), "M3B_THROTTLE_MAX_REQUESTS": str(LIMIT),
            "M3B_LOG_LEVEL": "WARNING",  # the budget's own utilisation (M3B_BUDGET_UTILISATION), as deployed
        }  # fmt: skip
        if setup.smoothing:
            budget["M3B_THROTTLE_DELAY_AFTER_COUNT"] = str(setup.throttle["delay_after_count"])
        if setup.token_services > 1:
            budget["M3B_BUDGET_REDIS_URL"] = REDIS_URL
            budget["M3B_BUDGET_REDIS_PREFIX"] = f"m3bench-{uuid.uuid4().hex[:8]}"
        token_services: list[TokenService] = []
        for replica in range(setup.token_services):
            started = start_token_service(ion, broker.bootstrap_servers, KEYS,
                                          {**budget, "M3B_INSTANCE_ID": f"token-service-{replica}"})  # fmt: skip
            cleanup.callback(started.stop)
            token_services.append(started)
        urls = ",".join(t.url for t in token_services)
        writers: list[tuple[Captured, str]] = []
        for replica in range(setup.writers):
            writer = start_service("order-writer", broker.bootstrap_servers, {
                "M3B_STATE_URL": state_url, "M3B_TOKEN_SERVICE_URL": urls, "M3B_INSTANCE_ID": f"order-writer-{replica}",
                "M3B_TOKEN_SERVICE_KEY": KEYS["order-writer"], "M3B_LOG_LEVEL": "WARNING",
            })  # fmt: skip
            cleanup.callback(writer[0].kill_all)
            writers.append(writer)
        inventory, inventory_url = start_service("inventory-query", broker.bootstrap_servers, {
            "M3B_TOKEN_SERVICE_URL": urls, "M3B_TOKEN_SERVICE_KEY": KEYS["inventory-query"], "M3B_LOG_LEVEL": "WARNING",
        })  # fmt: skip
        cleanup.callback(inventory.kill_all)
        time.sleep(2)  # settle: the idle figures are taken after start-up's allocations, not during them
        figures.idle_rss_mb = {
            "token-service": rss_mb(service_pid(token_services[0].process)),
            "order-writer": rss_mb(service_pid(writers[0][0])),
            "inventory-query": rss_mb(service_pid(inventory)),
        }
        asyncio.run(drive(setup, figures, ion, token_services, inventory_url, broker.bootstrap_servers, arrival_s))
    return figures


async def drive(
    setup: Setup,
    figures: Figures,
    ion: IonSim,
    token_services: list[TokenService],
    inventory_url: str,
    bootstrap: str,
    arrival_s: float,
) -> None:
    urls = ",".join(t.url for t in token_services)
    async with httpx.AsyncClient(timeout=10) as http:
        waits_before = metric_buckets((await http.get(f"{token_services[-1].url}/metrics")).text,
                                      "m3bridge_rate_budget_wait_seconds", 'priority="interactive"')  # fmt: skip
    async with httpx.AsyncClient(base_url=inventory_url, timeout=30, headers=READ) as http:
        for n in range(2, HOT_ITEMS + 2):  # the hot items are in the cache before month end starts
            answer = await http.get(f"/v1/availability/ITM{n:06d}", params={"warehouse": "100", "quantity": "1"})
            answer.raise_for_status()
    stats_before = ion.stats()
    rng = random.Random(11)
    doc_nos = [f"ME-{n:05d}" for n in range(figures.quotes)]
    results = Results(bootstrap)
    stop = asyncio.Event()
    answers_ms: list[float] = []
    failures: list[str] = []
    pages: list[int] = []
    background = [
        asyncio.create_task(reps(inventory_url, stop, answers_ms, failures)),
        asyncio.create_task(catalog_paging(urls, stop, pages)),
    ]
    killed: list[float] = []

    def kill_one() -> None:
        if setup.kill_token_service:
            victim = token_services[0]
            with suppress(ProcessLookupError):
                os.killpg(victim.process.process.pid, signal.SIGKILL)
            killed.append(time.monotonic())

    settings = BridgeSettings(kafka_bootstrap_servers=bootstrap, service_name="bench")
    broker = create_broker(settings)
    started = time.monotonic()
    collecting = asyncio.create_task(results.collect(set(doc_nos), started + arrival_s + 600, kill_one))
    async with broker:
        await broker.start()
        for index, doc_no in enumerate(doc_nos):
            due = started + arrival_s * index / len(doc_nos)
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            await publish(broker, QUOTE_APPROVED, quote(doc_no, rng), key=doc_no)
    await collecting
    finished = max((results.seen[d][0] for d in doc_nos if d in results.seen), default=time.monotonic())
    stop.set()
    await asyncio.gather(*background, return_exceptions=True)
    stats = ion.admin("GET", "stats?times=true")
    async with httpx.AsyncClient(timeout=10) as http:
        waits_after = metric_buckets((await http.get(f"{token_services[-1].url}/metrics")).text,
                                     "m3bridge_rate_budget_wait_seconds", 'priority="interactive"')  # fmt: skip

    figures.drain_s = finished - started
    # What the policy lets through without a 429 or (with rate smoothing) a delay, per second.
    allowed = min(LIMIT, setup.throttle.get("delay_after_count") or LIMIT) * 1000 / PERIOD_MS
    figures.ideal_s = max(figures.quotes * REQUESTS_PER_ORDER / allowed, arrival_s)
    gateway, before = stats["gateway"], stats_before["gateway"]
    figures.throttled = gateway["throttled"] - before["throttled"]
    # The simulator counts a request when its event loop gets to it: were the 429s preceded by a stall of that loop?
    run_started = time.time() - (time.monotonic() - started)
    stalls = [(at, ms) for at, ms in gateway.get("late_loop", []) if at >= run_started]
    throttled_at = [at for at in gateway.get("throttled_times", []) if at >= run_started]
    after_stall = sum(any(0 <= at - stalled <= PERIOD_MS / 1000 for stalled, _ms in stalls) for at in throttled_at)
    if throttled_at:
        figures.notes.append("429s at " + ", ".join(f"{at - run_started:.2f}" for at in throttled_at) + " s")
    if stalls:
        figures.notes.append(
            f"the Gateway simulator's event loop ran over {LATE_LOOP_MS:g} ms late {len(stalls)} times (up to "
            f"{max(ms for _at, ms in stalls):.0f} ms); {after_stall} of {len(throttled_at)} 429s came within a period "
            "after such a stall"
        )
    figures.delayed = gateway.get("delayed", 0) - before.get("delayed", 0)
    # The Gateway's accepted requests in the drain's steady part: from 10 s after the first approval to 5 s before
    # the last result, on the simulator's clock (it records wall-clock times).
    now_wall, now_mono = time.time(), time.monotonic()
    window = (now_wall - (now_mono - started) + 10, now_wall - (now_mono - finished) - 5)
    steady = [t for t in gateway.get("accepted_times", []) if window[0] <= t < window[1]]
    span = window[1] - window[0]
    figures.share = len(steady) / (span * LIMIT * 1000 / PERIOD_MS) if span > 5 else math.nan
    calls, calls_before = stats["m3"], stats_before["m3"]
    figures.rep_m3_calls = sum(int(calls.get(t, 0)) - int(calls_before.get(t, 0))
                               for t in ("MMS200MI/GetItmWhsBal", "OIS017MI/GetBasePrice"))  # fmt: skip
    by_source, by_source_before = gateway.get("accepted_by_source", {}), before.get("accepted_by_source", {})
    writer = "m3bridge-order-writer"
    figures.order_requests = int(by_source.get(writer, 0)) - int(by_source_before.get(writer, 0))
    figures.interactive_p99_ms = quantile(difference(waits_after, waits_before), 0.99) * 1000
    figures.rep_checks = len(answers_ms)
    figures.rep_p50_ms = statistics.median(answers_ms) if answers_ms else math.nan
    figures.rep_p99_ms = percentile(answers_ms, 0.99)
    figures.bulk_pages = len(pages)
    outcomes: dict[str, int] = {}
    for _at, result in results.seen.values():
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    figures.outcomes = outcomes
    figures.not_ordered = figures.quotes - outcomes.get("created", 0)
    reasons = sorted({p.message for _at, r in results.seen.values() if r.outcome != "created" for p in r.problems})
    if reasons:
        figures.notes.append(f"{len(reasons)} reasons for quotes not ordered, e.g. {reasons[0][:300]}")
    if failures:
        figures.notes.append(f"{len(failures)} availability checks failed, e.g. {failures[0]}")
    if killed:
        figures.notes.append(f"token-service-0 SIGKILLed {killed[0] - started:.0f} s after the first approval")


# --- report ---------------------------------------------------------------------------------------------------


def report(runs: list[Figures], arrival_s: float) -> str:
    lines = [f"{'run':<58}{'drain s':>8}{'ideal s':>8}{'ratio':>7}{'share':>7}{'429':>5}{'delayed':>8}"
             f"{'int. p99 ms':>12}{'reps p50/p99 ms':>16}{'M3/1k checks':>13}{'not ordered':>12}"]  # fmt: skip
    for f in runs:
        per_thousand = f.rep_m3_calls / f.rep_checks * 1000 if f.rep_checks else math.nan
        lines.append(
            f"{f.setup.name:<58}{f.drain_s:>8.1f}{f.ideal_s:>8.1f}{f.ratio:>7.2f}{f.share:>7.2f}{f.throttled:>5}"
            f"{f.delayed:>8}{f.interactive_p99_ms:>12.1f}{f'{f.rep_p50_ms:.0f}/{f.rep_p99_ms:.0f}':>16}"
            f"{per_thousand:>13.1f}{f.not_ordered:>12}"
        )
    lines.append("")
    for f in runs:
        extra = "; ".join(f.notes)
        per_quote = f.order_requests / max(f.quotes, 1)
        lines.append(
            f"{f.setup.name}: outcomes {json.dumps(f.outcomes, sort_keys=True)}, order-writer Gateway requests "
            f"{f.order_requests} ({per_quote:.2f} per quote), catalog pages {f.bulk_pages}"
            + (f"; {extra}" if extra else "")
        )
    lines.append("")
    rss = {name: max(f.idle_rss_mb.get(name, 0.0) for f in runs) for name in IDLE_SERVICES}
    lines.append("idle RSS (largest over the runs): " + ", ".join(f"{n} {mb:.0f} MB" for n, mb in rss.items())
                 + f" — target <= 80 MB: {verdict(all(mb <= 80 for mb in rss.values()))}")  # fmt: skip
    for f in runs:
        share_target = 0.9 if f.setup.smoothing else 0.98
        lines.append(
            f"{f.setup.name}: ratio >= 0.9 {verdict(f.ratio >= 0.9)}, share >= {share_target} "
            f"{verdict(f.share >= share_target)}, 0 x 429 {verdict(f.throttled == 0)}, interactive p99 <= 50 ms "
            f"{verdict(f.interactive_p99_ms <= 50)}, every quote ordered {verdict(f.not_ordered == 0)}"
        )
    lines.append("")
    lines.append(
        f"{runs[0].quotes if runs else 0} quotes of {LINES} lines over {arrival_s:g} s per run; policy {LIMIT} "
        f"requests / {PERIOD_MS} ms; Gateway latency {LATENCY_MS[0]}-{LATENCY_MS[1]} ms; {REPS} reps, a check each "
        f"~{REP_CHECK_EVERY_S:g} s on {HOT_ITEMS} items; {BULK_WORKERS} bulk paging workers"
    )
    lines.append(machine())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench month-end", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quotes", type=int, default=2000, help="approved quotes per run (default 2000)")
    parser.add_argument("--arrival", type=float, default=60.0, help="seconds over which they arrive (default 60)")
    parser.add_argument("--runs", default=",".join(SETUPS),
                        help=f"comma-separated runs, of: {', '.join(SETUPS)} (default all)")  # fmt: skip
    options = parser.parse_args(argv)
    chosen = [name.strip() for name in options.runs.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SETUPS]
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(SETUPS)}")
    runs: list[Figures] = []
    for name in chosen:
        setup = SETUPS[name]
        print(f"--- {setup.name}: {options.quotes} quotes over {options.arrival:g} s", flush=True)
        with tempfile.TemporaryDirectory(prefix="m3bench-month-end-") as tmp:
            figures = run_setup(setup, options.quotes, options.arrival, Path(tmp))
        print(report([figures], options.arrival).split("\n\n")[0], flush=True)
        runs.append(figures)
    print()
    print(report(runs, options.arrival))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
