"""What every catalog run shares: the options, the progress, pushing one product, problems, metrics, the report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from services.catalog_sync.products import MAX_PROBLEMS, Catalog, Fingerprints, Product
from shared.contracts import CatalogSyncReport, Problem
from shared.m3.errors import M3Error
from shared.quotewerks import QuoteWerksError

log = logging.getLogger(__name__)

products_synced = Counter(
    "m3bridge_catalog_products_total", "Products handled by catalog runs, by mode (full, delta, poll) and outcome.",
    ["mode", "outcome"],
)  # fmt: skip
full_load_finished = Gauge(
    "m3bridge_catalog_full_load_finished_timestamp_seconds", "When the last full load ended, by result (ok, failed).",
    ["result"],
)  # fmt: skip
full_load_seconds = Gauge("m3bridge_catalog_full_load_duration_seconds", "How long the last full load took.")

Publish = Callable[[CatalogSyncReport], Awaitable[None]]


@dataclass
class Progress:
    run_id: str = ""
    mode: str = ""
    path: str = ""
    running: bool = False
    total: int = 0
    done: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    last_full: dict[str, Any] | None = None
    last_reconcile: dict[str, Any] | None = None
    deltas: dict[str, int] = field(
        default_factory=lambda: {
            "handled": 0,
            "events": 0,
            "pushed": 0,
            "unchanged": 0,
            "failed": 0,
            "dead_lettered": 0,
        }
    )
    last_poll: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": "built",
            "full_load": {
                "running": self.running, "run_id": self.run_id, "path": self.path, "done": self.done,
                "total": self.total, "counts": dict(self.counts),
            },
            "last_full_load": self.last_full,
            "last_reconcile": self.last_reconcile,
            "deltas": dict(self.deltas),
            "last_poll": self.last_poll,
        }  # fmt: skip


def problem(exc: BaseException, part: str) -> Problem:
    if isinstance(exc, M3Error):
        error_class = (
            exc.error_class
            if exc.error_class in ("authorization", "business", "throttled", "unauthorized", "transient", "not_found")
            else "transient"
        )
        return Problem.model_validate(
            {"error_class": error_class, "message": f"{part}: {exc}"[:2000], "program": exc.program[:16],
             "transaction": exc.transaction[:32]}
        )  # fmt: skip
    retryable = getattr(exc, "retryable", True)
    return Problem(error_class="transient" if retryable else "validation", message=f"{part}: {exc}"[:2000])


def add_problem(problems: list[Problem], exc: BaseException, part: str) -> None:
    """Keep the problem, up to MAX_PROBLEMS of them in one run."""
    if len(problems) < MAX_PROBLEMS:
        problems.append(problem(exc, part))


def observe(report: CatalogSyncReport) -> None:
    for outcome, count in report.counts.items():
        if count:
            products_synced.labels(report.mode, outcome).inc(count)
    if report.mode == "full":
        result = "failed" if report.counts.get("failed") else "ok"
        full_load_finished.labels(result).set(report.finished_at.timestamp())
        full_load_seconds.set((report.finished_at - report.started_at).total_seconds())


@dataclass(frozen=True)
class Snapshot:
    """A full load's read of M3: what it holds is as of `began` (monotonic)."""

    began: float


class Pusher:
    """Puts a product into the QuoteWerks catalog when its fingerprint changed, then remembers the fingerprint.

    A full load reads the whole catalog first and pushes it over minutes, while change events keep arriving: a
    delta pushed after the load's read began is newer than what the load holds, so the load leaves that product
    alone (`kept_newer`). One product is pushed by one caller at a time, so a delta cannot slip in between the
    load's check and its write."""

    def __init__(self, catalog: Catalog, store: Fingerprints, publish: Publish) -> None:
        self.catalog = catalog
        self.store = store
        self.publish = publish
        self._snapshots: set[Snapshot] = set()
        self._delta_pushed: dict[str, float] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """Around a full load: from its read on, deltas are remembered so its older values never replace them."""
        taken = Snapshot(time.monotonic())
        self._snapshots.add(taken)
        try:
            yield taken
        finally:
            self._snapshots.discard(taken)
            if not self._snapshots:
                self._delta_pushed.clear()

    def newer_than(self, snapshot: Snapshot, part: str) -> bool:
        """A delta pushed this product after the snapshot's read began."""
        return self._delta_pushed.get(part, -1.0) >= snapshot.began

    @asynccontextmanager
    async def _one_at_a_time(self, part: str) -> AsyncIterator[None]:
        lock = self._locks.get(part)
        if lock is None:
            lock = self._locks[part] = asyncio.Lock()
        async with lock:
            yield

    async def push(
        self,
        product: Product,
        known: str | None,
        counts: dict[str, int],
        problems: list[Problem],
        *,
        pushed: dict[str, str] | None = None,
        snapshot: Snapshot | None = None,
        raise_transient: bool = False,
    ) -> None:
        """Put the product when its fingerprint changed, then remember the fingerprint: at once, or in `pushed`
        for the caller to store in batches (a crash before that only means those products are pushed again).
        With `snapshot` (a full load) a product a delta pushed since the snapshot was read is left alone; without
        it (a delta) the push is remembered for running loads. `raise_transient`: a failure that trying later can
        fix is raised (the consumer retries the event) instead of counted."""
        fingerprint = product.fingerprint()
        if known == fingerprint:
            counts["unchanged"] += 1
            return
        async with self._one_at_a_time(product.part):
            if snapshot is not None and self.newer_than(snapshot, product.part):
                counts["kept_newer"] = counts.get("kept_newer", 0) + 1
                return
            try:
                created = await self.catalog.put_product(product.part, product.fields())
                if snapshot is None and self._snapshots:
                    self._delta_pushed[product.part] = time.monotonic()
                if pushed is not None:
                    pushed[product.part] = fingerprint
                else:
                    await self.store.put(product.part, fingerprint)
            except (QuoteWerksError, OSError, ValueError) as exc:
                if raise_transient and getattr(exc, "retryable", isinstance(exc, OSError)):
                    raise
                counts["failed"] += 1
                add_problem(problems, exc, product.part)
                log.warning("product %s not pushed: %s", product.part, exc)
                return
        counts["created" if created else "updated"] += 1

    async def push_many(
        self,
        products: list[Product],
        known: Mapping[str, str],
        counts: dict[str, int],
        problems: list[Problem],
        *,
        pushed: dict[str, str],
        snapshot: Snapshot,
    ) -> None:
        """A full load's batch: the products whose fingerprint changed, in one write to QuoteWerks, their
        fingerprints left in `pushed` for the caller to store. A batch QuoteWerks refuses (one bad product refuses
        all) is pushed one by one, so that only the bad one fails, with its reason."""
        changed: list[tuple[Product, str]] = []
        for product in products:
            fingerprint = product.fingerprint()
            if known.get(product.part) == fingerprint:
                counts["unchanged"] += 1
            else:
                changed.append((product, fingerprint))
        if not changed:
            return
        async with contextlib.AsyncExitStack() as held:
            for part in sorted(product.part for product, _ in changed):
                await held.enter_async_context(self._one_at_a_time(part))
            fresh = []
            for product, fingerprint in changed:
                if self.newer_than(snapshot, product.part):
                    counts["kept_newer"] = counts.get("kept_newer", 0) + 1
                else:
                    fresh.append((product, fingerprint))
            if not fresh:
                return
            try:
                created = await self.catalog.put_products({product.part: product.fields() for product, _ in fresh})
            except (QuoteWerksError, OSError, ValueError) as exc:
                if getattr(exc, "retryable", isinstance(exc, OSError)):
                    # Still away after the client's retries: each product failed, as it would have one at a time.
                    for product, _ in fresh:
                        counts["failed"] += 1
                        add_problem(problems, exc, product.part)
                    log.warning("%d products not pushed: %s", len(fresh), exc)
                    return
                log.info("QuoteWerks refused a batch of %d products (%s): pushing them one by one", len(fresh), exc)
            else:
                for product, fingerprint in fresh:
                    pushed[product.part] = fingerprint
                    counts["created" if product.part in created else "updated"] += 1
                return
        for product, _ in fresh:
            await self.push(product, known.get(product.part), counts, problems, pushed=pushed, snapshot=snapshot)

    async def report(self, report: CatalogSyncReport) -> CatalogSyncReport:
        """Count the run's outcomes in the metrics and publish its report."""
        observe(report)
        await self.publish(report)
        return report
