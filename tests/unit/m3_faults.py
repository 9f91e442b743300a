"""The real M3 client in front of the M3 simulator, in process, with a transport that loses answers on purpose.

`FaultyM3` forwards each request to the simulator's MI routes (so M3 really does the work) and then, as planned
per transaction, loses the answer the way the Gateway and the network do: a timeout, a connection cut after
sending, a late 504 or a 502 — or fails before M3 sees the request (a refused connection, a 503 from the
Gateway). No token-service: a fixed lease.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from shared.m3 import M3Client
from shared.m3.lease import Lease, Priority, Report
from simulators.ion.m3 import M3Config, M3Simulator, m3_router

BASE = "http://m3.test"
TENANT_BASE = f"{BASE}/TST/M3"

Fault = Literal["timeout", "cut", "504", "502", "503-unsent", "refused", "twice"]


class FixedLeases:
    """Stands in for token-service: every lease is granted at once with the same token."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def lease(self, priority: Priority, *, permits: int = 1, max_wait_s: float = 30.0) -> Lease:
        return Lease(
            access_token=SecretStr("test-token"),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            permits=permits,
            waited_ms=0,
            m3_base_url=TENANT_BASE,
        )

    async def report(self, report: Report) -> None:
        self.reports.append(report)


def transaction_of(request: httpx.Request) -> str:
    """The MI transaction a request runs (the first one of a bulk request)."""
    path = request.url.path
    if path.rstrip("/").endswith("/v2/execute"):
        body = json.loads(request.content or b"{}")
        transactions = body.get("transactions") or [{}]
        return str(transactions[0].get("transaction") or "")
    return path.rsplit("/", 1)[-1].split(";", 1)[0]


class FaultyTransport(httpx.AsyncBaseTransport):
    """Runs requests against `inner`; `plan[transaction]` lists what happens to its next requests, in order
    (None = answered normally)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.plan: dict[str, list[Fault | None]] = defaultdict(list)
        self.sent: Counter[str] = Counter()  # requests that reached M3, by transaction
        self.faults: Counter[str] = Counter()
        self.timeouts: dict[str, list[float]] = defaultdict(list)  # the read timeout of each request, by transaction

    def lose(self, transaction: str, *faults: Fault | None) -> None:
        self.plan[transaction].extend(faults)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = transaction_of(request)
        self.timeouts[name].append(float(request.extensions.get("timeout", {}).get("read") or 0))
        planned = self.plan.get(name)
        fault = planned.pop(0) if planned else None
        if fault is None:
            self.sent[name] += 1
            return await self.inner.handle_async_request(request)
        self.faults[f"{name}:{fault}"] += 1
        if fault == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if fault == "503-unsent":  # the Gateway failed before M3 saw the request
            return httpx.Response(503, json={"error": "Service Unavailable"})
        self.sent[name] += 1
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if fault == "twice":  # the request reached M3 a second time (a retry after a lost answer)
            self.sent[name] += 1
            return await self.inner.handle_async_request(request)
        if fault == "timeout":
            raise httpx.ReadTimeout("no answer", request=request)
        if fault == "cut":
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message", request=request)
        return httpx.Response(int(fault), json={"error": "Gateway Timeout" if fault == "504" else "Bad Gateway"})


class FaultyM3:
    """An M3 simulator, the transport in front of it and an M3 client using it."""

    def __init__(self, *, max_attempts: int = 4, timeout_s: float = 60.0, deadline_s: float = 120.0) -> None:
        self.sim = M3Simulator(M3Config(today=date(2026, 11, 23), customers=40, items=200))
        app = FastAPI()
        app.include_router(m3_router(self.sim), prefix="/TST/M3/m3api-rest")
        self.transport = FaultyTransport(httpx.ASGITransport(app=app))
        self.http = httpx.AsyncClient(transport=self.transport)
        self.leases = FixedLeases()
        self.client = M3Client(
            self.leases,  # type: ignore[arg-type]
            self.http,
            company=100,
            division="AAA",
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            deadline_s=deadline_s,
            backoff_initial_s=0.0,
            backoff_max_s=0.0,
        )

    def run(self, program: str, transaction: str, **inputs: str) -> list[dict[str, str]]:
        """A call straight into the simulated M3 (as a user would), for setting up and checking state."""
        result = self.sim.execute("tester", program, transaction, inputs, maxrecs=0)
        assert result.error is None, result.error
        return result.records

    def open_batch_orders(self) -> list[str]:
        return sorted(orno for orno, batch in self.sim.store.batch_orders.items() if batch.status != "90")

    def orders_for(self, doc_no: str) -> list[str]:
        return sorted(orno for orno, order in self.sim.store.orders.items() if order.head.get("CUOR") == doc_no)

    def customers_named(self, name: str) -> list[str]:
        return sorted(
            str(c["CUNO"]) for c in self.sim.store.customers.values() if str(c["CUNM"]).casefold() == name.casefold()
        )

    async def close(self) -> None:
        await self.http.aclose()
