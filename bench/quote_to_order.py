"""Benchmark: quote to order through a real order-writer process.

Approved quotes of 1, 10 and 50 lines are produced to `quotewerks.quote.approved.v1`; the time until
`m3.order.result.v1` says "created" is the end-to-end latency. It is compared with the time the order-writer
spent inside M3 calls (its own `m3bridge_m3_request_duration_seconds`), so the ratio shows what the bridge
adds (Kafka, ledger, mapping, leases): target <= 1.10. The state store is PostgreSQL, as deployed (a scratch
database on M3B_TEST_PG_DSN). Also printed: Gateway requests per order and the quotes
per minute sustained by one order-writer, against what the throttle limit would allow. The simulated Gateway
latency per call is M3B_BENCH_LATENCY_MS (default 50 ms; real ION calls are slower still): the bridge's own
cost per order is roughly constant, so the ratio says more the closer the latency is to a real tenant's.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer

from bench.databases import create_database, drop_database
from m3bridge.tansu import EmbeddedBroker
from shared.contracts import OrderResult, Party, QuoteApproved, QuoteLine
from shared.contracts.topics import ORDER_RESULT, QUOTE_APPROVED, ensure_topics
from shared.platform.kafka import create_broker, publish
from shared.platform.settings import BridgeSettings
from simulators.stack import IonSim, start_ion, start_service, start_token_service

LIMIT = 100  # Gateway requests per second
LATENCY_MS = int(os.environ.get("M3B_BENCH_LATENCY_MS", "50"))
RUNS_PER_SIZE = 8
THROUGHPUT_QUOTES = 40
KEYS = {"order-writer": "bench-order-writer-key"}


def quote(doc_no: str, lines: int) -> QuoteApproved:
    items = [n for n in range(2, 2000) if n % 33 and n % 97 != 50][:lines]  # active items only
    return QuoteApproved(
        doc_no=doc_no,
        sold_to=Party(company="Bench Customer", cm_account_no="C000001"),
        ship_via="UPS Ground",
        lines=[
            QuoteLine(manufacturer_part_number=f"ITM{n:06d}", qty_total=Decimal(2), unit_price=Decimal("9.50"))
            for n in items
        ],
        approved_at=datetime.now(UTC),
    )


def m3_seconds(metrics_text: str) -> float:
    pattern = re.compile(r"^m3bridge_m3_request_duration_seconds_sum\{[^}]*\} ([0-9.e+-]+)$", re.M)
    return sum(float(value) for value in pattern.findall(metrics_text))


class Results:
    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            ORDER_RESULT.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=20
        )
        self.seen: dict[str, tuple[float, OrderResult]] = {}

    async def start(self) -> None:
        await self.consumer.start()

    async def wait_for(self, doc_nos: set[str], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not doc_nos <= set(self.seen):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result for {sorted(doc_nos - set(self.seen))[:5]}")
            batches = await self.consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    result = OrderResult.model_validate_json(record.value or b"")
                    self.seen.setdefault(result.doc_no, (time.monotonic(), result))

    async def stop(self) -> None:
        await self.consumer.stop()


async def run(ion: IonSim, writer_url: str, bootstrap: str) -> str:
    settings = BridgeSettings(kafka_bootstrap_servers=bootstrap, service_name="bench")
    broker = create_broker(settings)
    results = Results(bootstrap)
    await results.start()
    lines_out: list[str] = []
    async with broker, httpx.AsyncClient() as http:
        await broker.start()
        # Warm up: metadata, the customer link, connections.
        await publish(broker, QUOTE_APPROVED, quote("WARMUP-1", 3), key="WARMUP-1")
        await results.wait_for({"WARMUP-1"})
        lines_out.append(
            f"{'lines':>5}  {'p50 ms':>8}  {'p99 ms':>8}  {'e2e / M3 time':>13}  {'Gateway requests/order':>22}"
        )
        for size in (1, 10, 50):
            latencies, ratios, requests = [], [], []
            for run_no in range(RUNS_PER_SIZE):
                doc_no = f"BENCH-{size}-{run_no}"
                metrics_before = m3_seconds((await http.get(f"{writer_url}/metrics")).text)
                accepted_before = ion.stats()["gateway"]["accepted"]
                sent = time.monotonic()
                await publish(broker, QUOTE_APPROVED, quote(doc_no, size), key=doc_no)
                await results.wait_for({doc_no})
                arrived, result = results.seen[doc_no]
                assert result.outcome == "created", result
                in_m3 = m3_seconds((await http.get(f"{writer_url}/metrics")).text) - metrics_before
                latencies.append((arrived - sent) * 1000)
                ratios.append((arrived - sent) / in_m3 if in_m3 else float("nan"))
                requests.append(ion.stats()["gateway"]["accepted"] - accepted_before)
            ordered = sorted(latencies)
            lines_out.append(
                f"{size:>5}  {statistics.median(latencies):>8.0f}  {ordered[-1]:>8.0f}  "
                f"{statistics.median(ratios):>13.2f}  {statistics.median(requests):>22.0f}"
            )
        per_order_10 = float(lines_out[-2].split()[-1])
        # Sustained: many 10-line quotes at once, one order-writer.
        doc_nos = {f"BULK-{n}" for n in range(THROUGHPUT_QUOTES)}
        accepted_before = ion.stats()["gateway"]["accepted"]
        started = time.monotonic()
        for doc_no in sorted(doc_nos):
            await publish(broker, QUOTE_APPROVED, quote(doc_no, 10), key=doc_no)
        await results.wait_for(doc_nos, timeout_s=300)
        elapsed = max(t for t, _ in (results.seen[d] for d in doc_nos)) - started
        per_minute = THROUGHPUT_QUOTES / elapsed * 60
        rate = (ion.stats()["gateway"]["accepted"] - accepted_before) / elapsed
        ceiling = LIMIT * 0.96 * 60 / per_order_10
        lines_out.append("")
        lines_out.append(
            f"sustained (10-line quotes, one order-writer): {per_minute:.0f} quotes/min, {rate:.0f} Gateway requests/s "
            f"= {rate / LIMIT:.2f} of the limit; the limit itself would allow ~{ceiling:.0f} quotes/min"
        )
    await results.stop()
    return "\n".join(lines_out)


def main() -> int:
    database = f"m3b_bench_q2o_{uuid.uuid4().hex[:10]}"
    state_url = asyncio.run(create_database(database))
    with tempfile.TemporaryDirectory(prefix="m3bench-q2o-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log")
        broker.start()
        asyncio.run(ensure_topics(broker.bootstrap_servers, partitions=4, replication=1))
        ion = start_ion(Path(tmp), {
            "throttle": {"time_period_ms": 1000, "max_requests_per_period": LIMIT},
            "latency": {"base_ms": LATENCY_MS, "jitter_ms": LATENCY_MS / 2},
        })  # fmt: skip
        token_service = start_token_service(ion, broker.bootstrap_servers, KEYS, {
            "M3B_THROTTLE_PERIOD_MS": "1000", "M3B_THROTTLE_MAX_REQUESTS": str(LIMIT), "M3B_LOG_LEVEL": "WARNING",
        })  # fmt: skip
        writer, writer_url = start_service("order-writer", broker.bootstrap_servers, {
            "M3B_STATE_URL": state_url, "M3B_TOKEN_SERVICE_URL": token_service.url,
            "M3B_TOKEN_SERVICE_KEY": KEYS["order-writer"], "M3B_LOG_LEVEL": "WARNING",
        })  # fmt: skip
        try:
            print(f"Quote to order: ION simulator {LATENCY_MS}-{LATENCY_MS * 1.5:g} ms per call, policy {LIMIT} req/s, "
                  f"{RUNS_PER_SIZE} quotes per size, one at a time\n")  # fmt: skip
            print(asyncio.run(run(ion, writer_url, broker.bootstrap_servers)))
            return 0
        finally:
            writer.kill_all()
            token_service.stop()
            ion.stop()
            broker.stop()
            asyncio.run(drop_database(database))


if __name__ == "__main__":
    raise SystemExit(main())
