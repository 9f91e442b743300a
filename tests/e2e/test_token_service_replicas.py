"""Two token-service replicas sharing the tenant's budget and token through Redis, both in use by two order-writers,
one killed under load: every
approved quote still becomes exactly one order, the Gateway never answers 429, and no window of the Gateway's period
holds more than its limit. Every box is its own process; the Gateway's policy is tight (10 requests a second), so
the shared budget, not M3, paces the flow."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid

import httpx
import pytest

from m3bridge.tansu import free_port
from simulators.processes import wait_until
from simulators.stack import start_ion, start_quotewerks, start_service, start_token_service
from tests.chaos.quotes import create_documents, plan_quotes
from tests.e2e.test_quote_to_order import KEYS, SECRET, Stack, orders_for, written_back

LIMIT_PER_SECOND = 10


def test_a_token_service_replica_killed_under_load_loses_no_quote_and_causes_no_429(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, module_postgres_url: str, redis_url: str
) -> None:
    with contextlib.ExitStack() as started:
        ion = start_ion(tmp_path_factory.mktemp("ion"))
        started.callback(ion.stop)
        ion.admin("PUT", "throttle", {"time_period_ms": 1000, "max_requests_per_period": LIMIT_PER_SECOND})
        shared = {
            "M3B_BUDGET_REDIS_URL": redis_url, "M3B_BUDGET_REDIS_PREFIX": f"m3b-test-{uuid.uuid4().hex[:10]}",
            "M3B_THROTTLE_PERIOD_MS": "1000", "M3B_THROTTLE_MAX_REQUESTS": str(LIMIT_PER_SECOND),
            "M3B_BUDGET_UTILISATION": "0.7",
        }  # fmt: skip
        replicas = [
            start_token_service(ion, kafka_bootstrap, KEYS, {**shared, "M3B_INSTANCE_ID": f"token-service-{i}"})
            for i in range(2)
        ]
        for replica in replicas:
            started.callback(replica.stop)
        quotewerks_port = free_port()
        quotewerks = start_quotewerks(f"http://127.0.0.1:{quotewerks_port}/webhooks/quotewerks", SECRET)
        started.callback(quotewerks.stop)
        common = {"M3B_STATE_URL": module_postgres_url, "M3B_KAFKA_SESSION_TIMEOUT_MS": "6000"}
        ingest = start_service("quote-ingest", kafka_bootstrap, {
            **common, "M3B_QUOTEWERKS_URL": quotewerks.url, "M3B_QUOTEWERKS_API_KEY": quotewerks.api_key,
            "M3B_WEBHOOK_SECRET": SECRET,
        }, port=quotewerks_port)  # fmt: skip
        started.callback(ingest[0].kill_all)
        # Two order-writers, each asking a different replica first (as a Service would spread them): both replicas
        # grant permits at the same time, so only a shared budget keeps the tenant within its limit.
        writers = []
        for i, order in enumerate((replicas, replicas[::-1])):
            writer = start_service("order-writer", kafka_bootstrap, {
                **common, "M3B_TOKEN_SERVICE_URL": ",".join(r.url for r in order),
                "M3B_TOKEN_SERVICE_KEY": KEYS["order-writer"], "M3B_INSTANCE_ID": f"order-writer-{i}",
                # Two quotes at a time each: they finish one after another, so the kill lands while most still wait
                # (with many in flight they would all share the slow budget and finish together).
                "M3B_QUOTES_IN_FLIGHT": "2",
            })  # fmt: skip
            started.callback(writer[0].kill_all)
            writers.append(writer)

        quotes = [q for q in plan_quotes(40, seed=9311, first_number=93001) if not q.must_hold][:24]
        for quote in quotes:
            quote.customer, quote.sold_to = quote.customer or "C000003", {}

        async def create() -> None:
            async with httpx.AsyncClient() as http:
                await create_documents(http, quotewerks.url, quotes)

        asyncio.run(create())
        tokens_before = ion.stats()["auth"]
        ion.admin("POST", "reset-stats")
        for quote in quotes:
            quotewerks.api("POST", f"documents/{quote.doc_no}/approve")

        def confirmed() -> int:
            """Orders M3 has confirmed (the simulator's count since the reset): the write-backs onto the quotes come
            later, in bursts, so they are no measure of how far the run is."""
            return int(ion.stats()["m3"].get("OIS100MI/Confirm", 0))

        wait_until("the first orders to be confirmed in M3", lambda: confirmed() >= 3, 120)
        os.killpg(replicas[0].process.process.pid, signal.SIGKILL)
        replicas[0].process.process.wait()
        killed_at = confirmed()

        survivor = Stack(ion, quotewerks, replicas[1], ingest, writers[0], {}, kafka_bootstrap)
        for quote in quotes:
            written_back(survivor, quote.doc_no, timeout_s=240)
        gateway = ion.stats()["gateway"]

        assert killed_at < len(quotes), (
            f"all {killed_at} orders were confirmed before the kill: the test proves nothing"
        )
        assert gateway["throttled"] == 0, gateway
        assert gateway["peak_accepted_per_period"] <= LIMIT_PER_SECOND, gateway
        for quote in quotes:
            assert len(asyncio.run(orders_for(survivor, quote.doc_no, str(quote.customer)))) == 1
        # One token for both replicas: the survivor went on with the token the other one had fetched.
        issued = tokens_before["tokens_issued_total"] + ion.stats()["auth"]["tokens_issued_total"]
        assert issued == 1, issued
