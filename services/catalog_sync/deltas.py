"""The small runs between full loads: the change poll (MMS200MI/LstItmByChgDate) and the M3 change event deltas."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from typing import Protocol

from services.catalog_sync.m3_reads import M3Reads
from services.catalog_sync.products import POLL_MARKER, Product, SyncOptions, product_from, products_from
from services.catalog_sync.pushing import Progress, Pusher, problem
from shared.contracts import CatalogSyncReport, InventoryChanged, ItemChanged, PriceChanged, Problem
from shared.m3.errors import M3Error
from shared.m3.lease import Priority

log = logging.getLogger(__name__)


class Deltas:
    """Pushes single changed products, read through MI, when their fingerprint changed."""

    def __init__(self, reads: M3Reads, pusher: Pusher, options: SyncOptions, progress: Progress) -> None:
        self.reads = reads
        self.pusher = pusher
        self.options = options
        self.progress = progress

    # --- the change poll (when BODs are off) ------------------------------------------------------------------

    async def poll_changes(self, today: date | None = None) -> CatalogSyncReport:
        """Items M3 changed since the last poll (MMS200MI/LstItmByChgDate, by change date), with their price and
        stock, pushed when their fingerprint changed. M3 keeps the change date by day only, so each poll reads the
        whole of the day it starts from; unchanged products cost no QuoteWerks call."""
        started = datetime.now(UTC)
        today = today or started.date()
        counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
        problems: list[Problem] = []
        store = self.pusher.store
        marker = await store.marker(POLL_MARKER)
        since = date.fromisoformat(marker) if marker else today
        reason = f"MMS200MI/LstItmByChgDate from {since.isoformat()} to {today.isoformat()} (M3 BODs not used)"
        try:
            items = await self.reads.m3.execute(
                "MMS200MI", "LstItmByChgDate", {"FLMD": since, "TLMD": today}, priority=Priority.BULK, maxrecs=0
            )
            numbers = [n for n in (str(item.get("ITNO") or "").strip() for item in items) if n]
            o = self.options
            prices = {"PRRF": o.price_list, "CUCD": o.currency, "FVDT": today}
            price_of, stock_of = await asyncio.gather(
                self.reads.per_item("OIS017MI", "GetBasePrice", numbers, prices, "SAPR"), self.reads.stock_of(numbers)
            )
            for product in products_from(items, price_of, stock_of):
                await self.pusher.push(product, await store.get(product.part), counts, problems)
            if counts["failed"] == 0:
                await store.set_marker(POLL_MARKER, today.isoformat())  # else the same days again next time
        except Exception as exc:
            log.exception("change poll failed")
            counts["failed"] += 1
            problems.append(problem(exc, "change poll"))
        report = CatalogSyncReport(
            run_id=f"poll-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}", mode="poll", path="mi",
            path_reason=reason, started_at=started, finished_at=datetime.now(UTC), counts=counts, problems=problems,
        )  # fmt: skip
        self.progress.last_poll = report.model_dump(mode="json")
        return await self.pusher.report(report)

    # --- deltas from M3 change events -------------------------------------------------------------------------

    async def on_item(self, event: ItemChanged) -> CatalogSyncReport:
        reads = self.reads
        item = {
            "ITNO": event.item_number,
            "ITDS": event.description,
            "UNMS": event.unit_of_measure,
            "STAT": event.status,
        }

        async def build() -> Product:
            if not event.description and event.action != "delete":
                item.update(await reads.item(event.item_number))  # a thin event: read the item itself
            price, stock = await asyncio.gather(reads.price(event.item_number), reads.stock(event.item_number))
            return product_from(item, price, stock, deleted=event.action == "delete")

        return await self._delta(event.item_number, build)

    async def on_price(self, event: PriceChanged) -> CatalogSyncReport | None:
        o = self.options
        if event.customer_number or (event.price_list and event.price_list != o.price_list):
            return None  # not the list the catalog shows
        if event.currency and event.currency != o.currency:
            return None

        async def build() -> Product:
            item, stock = await asyncio.gather(self.reads.item(event.item_number), self.reads.stock(event.item_number))
            return product_from(item, event.sales_price, stock)

        return await self._delta(event.item_number, build)

    async def on_inventory(self, event: InventoryChanged) -> CatalogSyncReport | None:
        if event.warehouse != self.options.warehouse:
            return None

        async def build() -> Product:
            item, price = await asyncio.gather(self.reads.item(event.item_number), self.reads.price(event.item_number))
            return product_from(item, price, event.allocatable)

        return await self._delta(event.item_number, build)

    async def _delta(self, part: str, build: Callable[[], Awaitable[Product]]) -> CatalogSyncReport:
        started = datetime.now(UTC)
        counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
        problems: list[Problem] = []
        self.progress.deltas["events"] += 1
        try:
            product = await build()
            await self.pusher.push(product, await self.pusher.store.get(product.part), counts, problems,
                                   raise_transient=True)  # fmt: skip
        except Exception as exc:
            if getattr(exc, "retryable", isinstance(exc, OSError)):
                # M3 or QuoteWerks busy or unreachable, a lease refused: the consumer tries the event again
                # (with its backoff and attempts), and dead-letters it only when they are spent.
                log.warning("delta for %s failed, to be retried: %s", part, exc)
                raise
            # A business refusal or a bug: reported and dead-lettered at once, never a silent drop.
            counts["failed"] += 1
            problems.append(problem(exc, part))
            log.warning("delta for %s failed: %s", part, exc, exc_info=not isinstance(exc, M3Error))
        deltas = self.progress.deltas
        deltas["pushed"] += counts["created"] + counts["updated"]
        deltas["unchanged"] += counts["unchanged"]
        deltas["failed"] += counts["failed"]
        report = CatalogSyncReport(
            run_id=f"delta-{uuid.uuid4().hex[:12]}", mode="delta", path="events",
            path_reason=f"M3 change event for {part}; missing fields read through MI", started_at=started,
            finished_at=datetime.now(UTC), counts=counts, problems=problems,
        )  # fmt: skip
        return await self.pusher.report(report)


class ProblemsLetter(Protocol):
    def __call__(self, *, problems: Sequence[Problem]) -> Awaitable[None]: ...


async def settle_delta(report: CatalogSyncReport | None, progress: Progress, dead_letter: ProblemsLetter) -> None:
    """A change that could not be pushed (after the M3 client's own retries) is kept as a dead letter and a work
    item, to be sent again (`m3bridge work retry ID`); the next full load also repairs it."""
    progress.deltas["handled"] += 1
    if report is None or not report.counts.get("failed"):
        return
    await dead_letter(problems=report.problems)
    progress.deltas["dead_lettered"] += 1
