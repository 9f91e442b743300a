"""The lease desk: a permit from the central budget plus the shared token, and what callers report back."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram
from pydantic import SecretStr

from services.token_service.budget import PRIORITY_ORDER, Budget
from services.token_service.tokens import TokenKeeper
from shared.m3.lease import Lease, LeaseRequest, Priority, Report

log = logging.getLogger(__name__)

permits_granted = Counter("m3bridge_rate_budget_granted_total", "Permits granted, by priority.", ["priority"])
permits_refused = Counter(
    "m3bridge_rate_budget_timeouts_total", "Lease requests that waited longer than they allowed.", ["priority"]
)
permit_wait = Histogram(
    "m3bridge_rate_budget_wait_seconds",
    "How long a lease waited for its permits, by priority.",
    ["priority"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
queue_depth = Gauge("m3bridge_rate_budget_queue_depth", "Lease requests waiting, by priority.", ["priority"])
current_rate = Gauge("m3bridge_rate_budget_rate_per_second", "The pace the budget grants permits at now.")
configured_rate = Gauge("m3bridge_rate_budget_configured_rate_per_second", "The pace at full speed.")
priority_lowered = Counter(
    "m3bridge_lease_priority_lowered_total",
    "Lease requests asking for a higher priority than the caller's key allows (M3B_CALLER_PRIORITIES), granted at "
    "the caller's own.",
    ["service", "asked"],
)
upstream_reports = Counter(
    "m3bridge_upstream_reports_total", "429 and 401 answers the services reported.", ["kind", "service"]
)


#: The highest priority each caller's key may lease: reps' lookups are interactive, orders transactional, catalog
#: loads bulk, so a busy catalog load cannot take the reps' reserve. Any other key (an operator's tool): transactional.
DEFAULT_CALLER_PRIORITIES: dict[str, Priority] = {
    "inventory-query": Priority.INTERACTIVE,
    "order-writer": Priority.TRANSACTIONAL,
    "catalog-sync": Priority.BULK,
}
OTHER_CALLERS = Priority.TRANSACTIONAL


def bounded(request: LeaseRequest, service: str, highest: Mapping[str, Priority]) -> LeaseRequest:
    """`request` at no higher a priority than `service` may lease (`highest`, over the defaults)."""
    allowed = highest.get(service) or DEFAULT_CALLER_PRIORITIES.get(service, OTHER_CALLERS)
    if PRIORITY_ORDER.index(request.priority) >= PRIORITY_ORDER.index(allowed):
        return request
    priority_lowered.labels(service, request.priority.value).inc()
    return request.model_copy(update={"priority": allowed})


class LeaseDesk:
    def __init__(self, budget: Budget, keeper: TokenKeeper, m3_base_url: str) -> None:
        self.budget = budget
        self.keeper = keeper
        self.m3_base_url = m3_base_url
        configured_rate.set(budget.policy.rate)
        current_rate.set(budget.policy.rate)

    async def lease(self, request: LeaseRequest) -> Lease:
        """Raises BudgetTimeoutError or TokenUnavailableError."""
        priority = request.priority
        queue_depth.labels(priority.value).inc()
        started = time.monotonic()
        try:
            # The token first: a permit spent while no token can be had would be wasted.
            await self.keeper.token()
            waited = await self.budget.acquire(priority, request.permits, max_wait_s=request.max_wait_ms / 1000)
        except Exception:
            permits_refused.labels(priority.value).inc()
            raise
        finally:
            queue_depth.labels(priority.value).dec()
        token = await self.keeper.token()
        permits_granted.labels(priority.value).inc(request.permits)
        permit_wait.labels(priority.value).observe(waited)
        return Lease(
            access_token=SecretStr(token.access_token),
            expires_at=datetime.fromtimestamp(token.expires_at, UTC),
            permits=request.permits,
            waited_ms=round((time.monotonic() - started) * 1000, 3),
            m3_base_url=self.m3_base_url,
        )

    async def report(self, service: str, report: Report) -> str:
        upstream_reports.labels(report.kind, service).inc()
        if report.kind == "throttled":
            lowered = await self.budget.report_throttled(report.retry_after_s)
            current_rate.set(self.budget.snapshot().rate)
            log.warning(
                "%s got 429 on %s/%s: paused everyone %s",
                service,
                report.program or "?",
                report.transaction or "?",
                f"and lowered the pace to {self.budget.snapshot().rate:.1f}/s" if lowered else "(pace already lowered)",
            )
            return "paused" + (" and slowed" if lowered else "")
        refreshed = await self.keeper.invalidate(report.token_fingerprint)
        log.warning("%s got 401: %s", service, "fetching a new token" if refreshed else "token already replaced")
        return "token refreshed" if refreshed else "token already replaced"

    def status(self) -> dict[str, object]:
        snapshot = self.budget.snapshot()
        current_rate.set(snapshot.rate)
        return {
            "mode": self.budget.mode,
            "rate_per_s": round(snapshot.rate, 2),
            "configured_rate_per_s": round(snapshot.configured_rate, 2),
            "paused_for_s": round(snapshot.paused_for_s, 2),
            "queued": snapshot.queued,
            "priorities": [p.value for p in Priority],
        }
