"""The crash-point matrix: for each named crash point, the process that passes it is started with the point armed,
a fresh quote is approved, the process must die right there (exit CRASH_EXIT_CODE), is started again unarmed, and
the quote must still end as exactly one correct order (or held with its reason) — judged from the simulators'
ground truth like every chaos scenario: one order per approved quote, its lines, one customer, no batch order left.

The quote for a point is one that reaches it: a new customer's first quote for the customer points, an orderable
quote for the rest. bod-listener's point is not in this stack (no BODs here): tests/integration/test_bod_listener.py
kills the real process there.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.platform.crash_points import CRASH_EXIT_CODE, POINTS
from tests.chaos.measure import Row, collect, ion_admin, judge, wait_drained, wait_m3_quiet
from tests.chaos.quotes import PlannedQuote, approve, create_documents, plan_quotes
from tests.chaos.stack import ChaosStack

#: The process that passes each point in this stack (the outbox's is quote-ingest's).
SERVICE_OF = {point: "quote-ingest" if point.startswith("outbox.") else point.split(".", 1)[0] for point in POINTS}
MATRIX_POINTS = tuple(point for point in POINTS if SERVICE_OF[point] in ("quote-ingest", "order-writer"))
NEW_CUSTOMER_POINTS = ("order-writer.after-customer-claim", "order-writer.after-customer-add")
#: `make test`'s lane: one point per kind of gap (recorded-not-sent, M3-did-it-not-recorded, recorded-not-told).
SHORT_LANE = (
    "quote-ingest.after-claim",
    "order-writer.after-customer-add",
    "order-writer.after-batch-head",
    "order-writer.after-confirm",
)


@dataclass
class PointRun:
    point: str
    doc_no: str
    exit_code: int | None = None  # None: the process did not die at the point within the time allowed
    outcome: str = ""
    seconds: float = 0.0


@dataclass
class MatrixResult:
    row: Row
    points: list[PointRun] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = [f"{p.point}: the process did not stop there (exit {p.exit_code})" for p in self.points
                 if p.exit_code != CRASH_EXIT_CODE]  # fmt: skip
        found += [f"{p.point}: {p.doc_no} has no outcome" for p in self.points if not p.outcome]
        if self.row.defects:
            found.append(self.row.summary())
        return found


def _quote_for(point: str, quotes: list[PlannedQuote], used: set[str], customers_seen: set[str]) -> PlannedQuote:
    for quote in quotes:
        if quote.number in used or quote.must_hold:
            continue
        first_of_new = quote.customer is None and quote.new_customer_email not in customers_seen
        if (point in NEW_CUSTOMER_POINTS) == first_of_new:
            used.add(quote.number)
            if quote.customer is None:
                customers_seen.add(quote.new_customer_email)
            return quote
    raise AssertionError(f"no planned quote reaches {point}")


async def _wait_exit(stack: ChaosStack, service: str, timeout_s: float) -> int | None:
    process = stack.procs[service].process
    assert process is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.1)  # polling interval of the condition
    return None


async def run_matrix(run_dir: Path, points: tuple[str, ...] = MATRIX_POINTS, *, seed: int = 7) -> MatrixResult:
    stack = ChaosStack(run_dir / f"crash-points-{time.strftime('%Y%m%d-%H%M%S')}", seed=seed)
    await asyncio.to_thread(stack.start)
    # Drain here: the slowest point, from its armed start to its quote's outcome (two process starts included).
    result = MatrixResult(Row(scenario="crash points", drain_deadline_s=150))
    try:
        async with httpx.AsyncClient() as http:
            quotes = plan_quotes(8 * len(points), seed, first_number=70001)
            await create_documents(http, stack.qw_url, quotes)
            baseline = {c["CUNO"] for c in (await ion_admin(http, stack.ion_url, "customers"))["customers"]}
            used: set[str] = set()
            customers_seen: set[str] = set()
            tried: list[PlannedQuote] = []
            for point in points:
                quote = _quote_for(point, quotes, used, customers_seen)
                tried.append(quote)
                service = SERVICE_OF[point]
                run = PointRun(point, quote.doc_no)
                result.points.append(run)
                began = time.monotonic()
                stack.procs[service].env["M3B_CRASH_POINTS"] = point
                # Stopped with SIGTERM (it leaves its consumer groups), so the armed one joins without waiting.
                await asyncio.to_thread(stack.procs[service].stop)
                await asyncio.to_thread(stack.start_again, service)
                await approve(http, stack.qw_url, quote)
                run.exit_code = await _wait_exit(stack, service, 60)
                stack.procs[service].env.pop("M3B_CRASH_POINTS", None)
                await asyncio.to_thread(stack.restart, service)  # dead already (or killed, when it did not stop)
                drained = await wait_drained(http, stack.qw_url, [quote], time.monotonic(), 120)
                run.seconds = time.monotonic() - began
                if drained is not None:
                    headers = (await http.get(f"{stack.qw_url}/api/v1/documents/{quote.doc_no}",
                                              headers={"X-API-Key": "chaos-qw-key"}, timeout=10)).json()  # fmt: skip
                    run.outcome = str(headers["DocumentHeader"].get("CustomText02") or "")
            finished = [run.seconds for run in result.points if run.outcome]
            result.row.drain_s = max(finished) if len(finished) == len(result.points) else None
            await wait_m3_quiet(http, stack.ion_url)
            truth = await collect(http, stack.urls, stack.bootstrap)
            judge(result.row, tried, truth, baseline, set())
    finally:
        await asyncio.to_thread(stack.stop)
    return result
