"""The full load: choosing the Data Lake or MI path, reading the whole catalog, pushing it, retiring gone items."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Literal

from services.catalog_sync.catalog_reconcile import catalog_differences, compare
from services.catalog_sync.m3_reads import M3Reads
from services.catalog_sync.products import (
    FINGERPRINT_BATCH,
    PUSH_BATCH,
    RETIRED,
    Lake,
    Path,
    Product,
    SyncOptions,
    products_from,
)
from services.catalog_sync.pushing import Progress, Pusher, Snapshot, add_problem, problem
from shared.contracts import CatalogSyncReport, Problem
from shared.m3.lease import Priority
from shared.quotewerks import QuoteWerksError

log = logging.getLogger(__name__)


def choose_path(
    item_count: int | None, threshold: int, *, forced: Path | None = None, why_unknown: str = ""
) -> tuple[Path, str]:
    """Data Lake above the threshold (one query instead of thousands of MI calls), MI paging below it."""
    if forced is not None:
        return forced, f"path {forced} requested by the operator"
    if item_count is None:
        return "mi", f"item count unknown ({why_unknown or 'Data Lake not reachable'}); MI paging at bulk priority"
    if item_count > threshold:
        pages = -(-item_count // 100)
        return "data_lake", (
            f"{item_count} items > threshold {threshold}: one Data Lake query per table instead of ~{pages} MI pages "
            "plus a balance call per item"
        )
    return (
        "mi",
        f"{item_count} items <= threshold {threshold}: MI paging at bulk priority is cheaper than Data Lake jobs",
    )


class FullLoad:
    """One full load at a time (`running`); each pushes what changed and deactivates what M3 no longer has."""

    def __init__(self, lake: Lake, reads: M3Reads, pusher: Pusher, options: SyncOptions, progress: Progress) -> None:
        self.lake = lake
        self.reads = reads
        self.pusher = pusher
        self.options = options
        self.progress = progress
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._lock.locked()

    async def count_items(self) -> tuple[int | None, str]:
        try:
            rows = await self.lake.query("SELECT COUNT(*) FROM MITMAS WHERE deleted = false")
            return int(next(iter(rows[0].values()))), ""
        except Exception as exc:  # any failure of the count means: we do not know the volume
            return None, f"{type(exc).__name__}: {exc}"[:200]

    async def run(self, *, forced: Path | None = None) -> CatalogSyncReport:
        async with self._lock:
            return await self._run(forced)

    async def reconcile(self, *, dry_run: bool) -> CatalogSyncReport:
        """A full load that compares with what QuoteWerks holds now instead of what the bridge last pushed
        (`catalog_reconcile`): the differences are counted and reported, and pushed again unless `dry_run`."""
        async with self._lock:
            return await self._run(None, against_quotewerks=True, dry_run=dry_run)

    async def _run(
        self, forced: Path | None, *, against_quotewerks: bool = False, dry_run: bool = False
    ) -> CatalogSyncReport:
        started = datetime.now(UTC)
        mode: Literal["full", "reconcile"] = "reconcile" if against_quotewerks else "full"
        run_id = f"{mode}-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0, "retired": 0, "kept_newer": 0}
        problems: list[Problem] = []
        progress = self.progress
        progress.run_id, progress.mode, progress.running, progress.counts = run_id, mode, True, counts
        progress.total = progress.done = 0
        path: Path = "mi"
        reason = ""
        try:
            count, why = (None, "") if forced else await self.count_items()
            path, reason = choose_path(count, self.options.threshold, forced=forced, why_unknown=why)
            progress.path = path
            log.info("full load %s via %s: %s", run_id, path, reason)
            async with self.pusher.snapshot() as snapshot:
                try:
                    products = await (self._read_data_lake() if path == "data_lake" else self._read_mi())
                except Exception as exc:
                    if path != "data_lake" or forced:
                        raise
                    # The count worked but a table query did not (a FAILED job, a timeout): MI paging still gets
                    # the catalog across, slower, at bulk priority.
                    log.warning("full load %s: Data Lake read failed (%s); paging MI instead", run_id, exc)
                    path = progress.path = "mi"
                    reason = f"{reason}; the Data Lake read failed ({type(exc).__name__}: {exc}), so MI paging instead"
                    products = await self._read_mi()
                progress.total = len(products)
                known = await self.pusher.store.all()
                if against_quotewerks:
                    counts |= {"missing": 0, "differs": 0, "same": 0}
                    in_quotewerks = compare(products, await self.pusher.catalog.all_products(), counts, problems)
                    if not dry_run:
                        await self._push_all(products, in_quotewerks, counts, problems, snapshot)
                    left = (
                        counts["missing"]
                        + counts["differs"]
                        - (0 if dry_run else counts["created"] + counts["updated"])
                    )
                    catalog_differences.set(max(left, 0))
                else:
                    await self._push_all(products, known, counts, problems, snapshot)
                if not dry_run:
                    await self._retire({p.part for p in products}, known, counts, problems, snapshot)
        except Exception as exc:
            log.exception("full load %s failed", run_id)
            counts["failed"] += 1
            problems.append(problem(exc, "full load"))
        finally:
            progress.running = False
        report = CatalogSyncReport(
            run_id=run_id, mode=mode, path=path, path_reason=reason[:500], started_at=started,
            finished_at=datetime.now(UTC), counts=dict(counts), problems=problems,
        )  # fmt: skip
        if mode == "full":
            progress.last_full = report.model_dump(mode="json")
        else:
            progress.last_reconcile = report.model_dump(mode="json")
        return await self.pusher.report(report)

    async def _push_all(
        self,
        products: list[Product],
        known: Mapping[str, str],
        counts: dict[str, int],
        problems: list[Problem],
        snapshot: Snapshot,
    ) -> None:
        """Batches of PUSH_BATCH products, `push_concurrency` batches at a time; the fingerprints stored in batches
        of FINGERPRINT_BATCH."""
        progress = self.progress
        store = self.pusher.store
        gate = asyncio.Semaphore(self.options.push_concurrency)
        pushed: dict[str, str] = {}

        async def store_pushed() -> None:
            # A delta that came after the load pushed a product stored its own (newer) fingerprint.
            batch = {part: fp for part, fp in pushed.items() if not self.pusher.newer_than(snapshot, part)}
            pushed.clear()
            await store.put_many(batch)

        async def one(batch: list[Product]) -> None:
            async with gate:
                await self.pusher.push_many(batch, known, counts, problems, pushed=pushed, snapshot=snapshot)
                progress.done += len(batch)
                if len(pushed) >= FINGERPRINT_BATCH:
                    await store_pushed()

        try:
            await asyncio.gather(*(one(products[i : i + PUSH_BATCH]) for i in range(0, len(products), PUSH_BATCH)))
        finally:
            await store_pushed()

    async def _retire(
        self,
        in_m3: set[str],
        known: Mapping[str, str],
        counts: dict[str, int],
        problems: list[Problem],
        snapshot: Snapshot,
    ) -> None:
        """Products pushed before whose item the complete read of M3 no longer has: deactivated in QuoteWerks
        (kept, since old quotes refer to them), fingerprint marked retired so the next run does not repeat it."""
        gone = sorted(
            part
            for part, fp in known.items()
            # an item a change event pushed after the read is newer than the read: not gone
            if part not in in_m3 and not fp.startswith(RETIRED) and not self.pusher.newer_than(snapshot, part)
        )
        if not gone:
            return
        limit = int(len(known) * self.options.retire_limit)
        if len(gone) > limit:
            problems.append(
                Problem(
                    error_class="validation",
                    message=f"{len(gone)} of {len(known)} synced products are no longer in M3 (first: "
                    f"{', '.join(gone[:5])}); more than the retire limit of {limit} ({self.options.retire_limit:.0%})"
                    ": none deactivated. Check the M3 read; raise M3B_CATALOG_RETIRE_LIMIT if it is right.",
                )
            )
            log.warning("full load: %d products gone from M3, over the retire limit %d: none deactivated", len(gone),
                        limit)  # fmt: skip
            return
        catalog, store = self.pusher.catalog, self.pusher.store
        for part in gone:
            try:
                current = await catalog.find_product(part)
                if current is not None and current.get("Active") is not False:
                    fields: dict[str, object] = {
                        k: current[k] for k in ("Description", "UnitOfMeasure", "Price") if k in current
                    }
                    await catalog.put_product(part, {**fields, "Active": False, "Availability": 0})
                await store.put(part, RETIRED + (known.get(part) or "")[: 64 - len(RETIRED)])
            except (QuoteWerksError, OSError, ValueError) as exc:
                counts["failed"] += 1
                add_problem(problems, exc, part)
                continue
            counts["retired"] += 1
            log.info("product %s deactivated: item no longer in M3", part)

    async def _read_data_lake(self) -> list[Product]:
        o = self.options
        items, prices, balances = await asyncio.gather(
            self.lake.query("SELECT ITNO, ITDS, UNMS, STAT FROM MITMAS WHERE deleted = false"),
            self.lake.query(
                f"SELECT ITNO, SAPR FROM OPRBAS WHERE PRRF = '{_sql(o.price_list)}' AND CUCD = '{_sql(o.currency)}' "  # noqa: S608
                "AND CUNO = '' AND deleted = false"
            ),
            self.lake.query(
                f"SELECT ITNO, AV01 FROM MITBAL WHERE WHLO = '{_sql(o.warehouse)}' AND deleted = false"  # noqa: S608
            ),
        )
        price_of = {str(r.get("ITNO", "")).strip(): r.get("SAPR") for r in prices}
        stock_of = {str(r.get("ITNO", "")).strip(): r.get("AV01") for r in balances}
        return products_from(items, price_of, stock_of)

    async def _read_mi(self) -> list[Product]:
        o = self.options
        m3 = self.reads.m3
        # ITNO is mandatory in LstItmByItm: start from the lowest printable item number.
        items = [
            r
            async for r in m3.list_all(
                "MMS200MI",
                "LstItmByItm",
                {"ITNO": "!"},
                key_fields=["ITNO"],
                priority=Priority.BULK,
                page_size=o.mi_page_size,
            )
        ]
        prices = await m3.execute(
            "OIS017MI", "LstBasePrice", {"PRRF": o.price_list, "CUCD": o.currency, "FVDT": date.today()},
            priority=Priority.BULK, maxrecs=0,
        )  # fmt: skip
        stock_of = await self.reads.stock_of([str(r["ITNO"]) for r in items])
        price_of = {str(r.get("ITNO", "")).strip(): r.get("SAPR") for r in prices if not str(r.get("CUNO") or "")}
        return products_from(items, price_of, stock_of)


def _sql(text: str) -> str:
    return text.replace("'", "''")
