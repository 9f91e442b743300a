"""The catalog synchronisation itself: M3 items + prices + stock → QuoteWerks products, only what changed.

A product is pushed when the sha256 of its pushed fields differs from the fingerprint stored for it (kind
"product"); the fingerprint is stored only after QuoteWerks accepted the PUT, so a failed push is retried next run.
Full loads read M3 through the Data Lake (big catalogs) or MI paging (small ones); deltas come from M3 change events
and read the rest of the product through single MI calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts import CatalogSyncReport, InventoryChanged, ItemChanged, PriceChanged, Problem
from shared.lease import Priority
from shared.m3.errors import M3Error
from shared.quotewerks import QuoteWerksError
from shared.state import fingerprints

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

KIND = "product"
MARKER_KIND = "catalog-marker"
POLL_MARKER = "item-poll-since"  # the first change date (yyyy-mm-dd) the next LstItmByChgDate poll reads
RETIRED = "retired:"  # fingerprint prefix of a product deactivated because M3 no longer has the item
ACTIVE_STATUS = "20"
MAX_PROBLEMS = 20
FINGERPRINT_BATCH = 500  # fingerprints stored per transaction during a full load
Path = Literal["data_lake", "mi"]


# --- the product as pushed ---------------------------------------------------------------------------------------


def _decimal(value: object) -> Decimal:
    if value in (None, ""):
        return Decimal(0)
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        return Decimal(0)


@dataclass(frozen=True)
class Product:
    part: str
    description: str
    unit: str
    price: Decimal
    active: bool
    availability: int

    def fields(self) -> dict[str, object]:
        """The QuoteWerks PUT body: exactly the pushed fields."""
        return {
            "Description": self.description or self.part,
            "UnitOfMeasure": self.unit,
            "Price": float(self.price),
            "Active": self.active,
            "Availability": self.availability,
        }

    def fingerprint(self) -> str:
        canonical = {**self.fields(), "Price": str(self.price.quantize(Decimal("0.0001")))}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def product_from(item: Mapping[str, object], price: object, available: object, *, deleted: bool = False) -> Product:
    """M3 values (MITMAS/MMS200MI item, SAPR, AV01) → the product QuoteWerks gets. Active only when STAT is 20."""
    status = str(item.get("STAT") or "").strip()
    return Product(
        part=str(item.get("ITNO") or "").strip(),
        description=str(item.get("ITDS") or "").strip(),
        unit=str(item.get("UNMS") or "").strip(),
        price=_decimal(price),
        active=status == ACTIVE_STATUS and not deleted,
        availability=max(int(_decimal(available)), 0),
    )


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


# --- ports -------------------------------------------------------------------------------------------------------


class Catalog(Protocol):
    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool: ...
    async def find_product(self, part: str) -> dict[str, Any] | None: ...


class M3(Protocol):
    async def execute(
        self, program: str, transaction: str, fields: Mapping[str, object] | None = None, *, priority: Priority,
        maxrecs: int = 100, returncols: Any = None,
    ) -> list[dict[str, Any]]: ...  # fmt: skip

    def list_all(
        self, program: str, transaction: str, fields: Mapping[str, object] | None = None, *, key_fields: Any,
        priority: Priority, page_size: int = 100,
    ) -> Any: ...  # fmt: skip

    async def bulk(self, program: str, transactions: Any, *, priority: Priority, chunk: int = 80) -> list[Any]: ...


class Lake(Protocol):
    async def query(self, sql: str) -> list[dict[str, Any]]: ...


class Fingerprints(Protocol):
    async def all(self) -> dict[str, str]: ...
    async def get(self, key: str) -> str | None: ...
    async def put(self, key: str, value: str) -> None: ...
    async def put_many(self, values: Mapping[str, str]) -> None: ...
    async def marker(self, name: str) -> str | None: ...
    async def set_marker(self, name: str, value: str) -> None: ...


class StoredFingerprints:
    """`shared.state.fingerprints`, kind "product", plus reading them all at once for full loads, and the
    markers of the sync itself (kind "catalog-marker", e.g. the date the change poll has reached)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def all(self) -> dict[str, str]:
        return await fingerprints.all_of(self._engine, KIND)

    async def get(self, key: str) -> str | None:
        return await fingerprints.get(self._engine, KIND, key)

    async def put(self, key: str, value: str) -> None:
        await fingerprints.put(self._engine, KIND, key, value)

    async def put_many(self, values: Mapping[str, str]) -> None:
        await fingerprints.put_many(self._engine, KIND, values)

    async def marker(self, name: str) -> str | None:
        return await fingerprints.get(self._engine, MARKER_KIND, name)

    async def set_marker(self, name: str, value: str) -> None:
        await fingerprints.put(self._engine, MARKER_KIND, name, value)


# --- the sync ----------------------------------------------------------------------------------------------------


@dataclass
class SyncOptions:
    threshold: int = 2000
    warehouse: str = "100"
    price_list: str = "STD"
    currency: str = "EUR"
    push_concurrency: int = 8
    # A full load deactivates products whose item M3 no longer has, but never more than this share of the catalog
    # in one run: a wrong query or an emptied table must not switch off the whole QuoteWerks catalog.
    retire_limit: float = 0.1


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
            "deltas": dict(self.deltas),
            "last_poll": self.last_poll,
        }  # fmt: skip


def _problem(exc: BaseException, part: str) -> Problem:
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


Publish = Callable[[CatalogSyncReport], Awaitable[None]]


class CatalogSync:
    def __init__(
        self, m3: M3, lake: Lake, catalog: Catalog, store: Fingerprints, publish: Publish, options: SyncOptions
    ) -> None:
        self.m3 = m3
        self.lake = lake
        self.catalog = catalog
        self.store = store
        self.publish = publish
        self.options = options
        self.progress = Progress()
        self._full_lock = asyncio.Lock()

    @property
    def full_load_running(self) -> bool:
        return self._full_lock.locked()

    # --- pushing -----------------------------------------------------------------------------------------------

    async def push(
        self,
        product: Product,
        known: str | None,
        counts: dict[str, int],
        problems: list[Problem],
        *,
        pushed: dict[str, str] | None = None,
    ) -> None:
        """Put the product when its fingerprint changed, then remember the fingerprint: at once, or in `pushed`
        for the caller to store in batches (a crash before that only means those products are pushed again)."""
        fingerprint = product.fingerprint()
        if known == fingerprint:
            counts["unchanged"] += 1
            return
        try:
            created = await self.catalog.put_product(product.part, product.fields())
            if pushed is not None:
                pushed[product.part] = fingerprint
            else:
                await self.store.put(product.part, fingerprint)
        except (QuoteWerksError, OSError, ValueError) as exc:
            counts["failed"] += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(_problem(exc, product.part))
            log.warning("product %s not pushed: %s", product.part, exc)
            return
        counts["created" if created else "updated"] += 1

    # --- full load ---------------------------------------------------------------------------------------------

    async def count_items(self) -> tuple[int | None, str]:
        try:
            rows = await self.lake.query("SELECT COUNT(*) FROM MITMAS WHERE deleted = false")
            return int(next(iter(rows[0].values()))), ""
        except Exception as exc:  # any failure of the count means: we do not know the volume
            return None, f"{type(exc).__name__}: {exc}"[:200]

    async def full_load(self, *, forced: Path | None = None) -> CatalogSyncReport:
        async with self._full_lock:
            return await self._full_load(forced)

    async def _full_load(self, forced: Path | None) -> CatalogSyncReport:
        started = datetime.now(UTC)
        run_id = f"full-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0, "retired": 0}
        problems: list[Problem] = []
        progress = self.progress
        progress.run_id, progress.mode, progress.running, progress.counts = run_id, "full", True, counts
        progress.total = progress.done = 0
        path: Path = "mi"
        reason = ""
        try:
            count, why = (None, "") if forced else await self.count_items()
            path, reason = choose_path(count, self.options.threshold, forced=forced, why_unknown=why)
            progress.path = path
            log.info("full load %s via %s: %s", run_id, path, reason)
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
            known = await self.store.all()
            gate = asyncio.Semaphore(self.options.push_concurrency)
            pushed: dict[str, str] = {}

            async def store_pushed() -> None:
                batch = dict(pushed)
                pushed.clear()
                await self.store.put_many(batch)

            async def one(product: Product) -> None:
                async with gate:
                    await self.push(product, known.get(product.part), counts, problems, pushed=pushed)
                    progress.done += 1
                    if len(pushed) >= FINGERPRINT_BATCH:
                        await store_pushed()

            try:
                await asyncio.gather(*(one(p) for p in products))
            finally:
                await store_pushed()
            await self._retire({p.part for p in products}, known, counts, problems)
        except Exception as exc:
            log.exception("full load %s failed", run_id)
            counts["failed"] += 1
            problems.append(_problem(exc, "full load"))
        finally:
            progress.running = False
        report = CatalogSyncReport(
            run_id=run_id, mode="full", path=path, path_reason=reason[:500], started_at=started,
            finished_at=datetime.now(UTC), counts=dict(counts), problems=problems,
        )  # fmt: skip
        progress.last_full = report.model_dump(mode="json")
        _observe(report)
        await self.publish(report)
        return report

    async def _retire(
        self, in_m3: set[str], known: Mapping[str, str], counts: dict[str, int], problems: list[Problem]
    ) -> None:
        """Products pushed before whose item the complete read of M3 no longer has: deactivated in QuoteWerks
        (kept, since old quotes refer to them), fingerprint marked retired so the next run does not repeat it."""
        gone = sorted(part for part, fp in known.items() if part not in in_m3 and not fp.startswith(RETIRED))
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
        for part in gone:
            try:
                current = await self.catalog.find_product(part)
                if current is not None and current.get("Active") is not False:
                    fields: dict[str, object] = {
                        k: current[k] for k in ("Description", "UnitOfMeasure", "Price") if k in current
                    }
                    await self.catalog.put_product(part, {**fields, "Active": False, "Availability": 0})
                await self.store.put(part, RETIRED + (known.get(part) or "")[: 64 - len(RETIRED)])
            except (QuoteWerksError, OSError, ValueError) as exc:
                counts["failed"] += 1
                if len(problems) < MAX_PROBLEMS:
                    problems.append(_problem(exc, part))
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
        return _products(items, price_of, stock_of)

    async def _read_mi(self) -> list[Product]:
        o = self.options
        # ITNO is mandatory in LstItmByItm: start from the lowest printable item number.
        items = [
            r
            async for r in self.m3.list_all(
                "MMS200MI", "LstItmByItm", {"ITNO": "!"}, key_fields=["ITNO"], priority=Priority.BULK
            )
        ]
        prices = await self.m3.execute(
            "OIS017MI", "LstBasePrice", {"PRRF": o.price_list, "CUCD": o.currency, "FVDT": date.today()},
            priority=Priority.BULK, maxrecs=0,
        )  # fmt: skip
        stock_of = await self._stock_of([str(r["ITNO"]) for r in items])
        price_of = {str(r.get("ITNO", "")).strip(): r.get("SAPR") for r in prices if not str(r.get("CUNO") or "")}
        return _products(items, price_of, stock_of)

    async def _per_item(
        self, program: str, transaction: str, items: list[str], fields: Mapping[str, object], column: str
    ) -> dict[str, object]:
        """One value per item through v2 bulk requests (80 items a Gateway call). An item M3 refuses (not stocked,
        no price) is left out and counts as 0; a transient failure of one fails the read, to be tried again."""
        outcomes = await self.m3.bulk(
            program, [(transaction, {**fields, "ITNO": itno}) for itno in items], priority=Priority.BULK
        )
        found: dict[str, object] = {}
        for itno, outcome in zip(items, outcomes, strict=True):
            if outcome.error is not None and outcome.error.retryable:
                raise outcome.error
            if outcome.error is None and outcome.records:
                found[itno] = outcome.records[0].get(column)
        return found

    async def _stock_of(self, items: list[str]) -> dict[str, object]:
        return await self._per_item("MMS200MI", "GetItmWhsBal", items, {"WHLO": self.options.warehouse}, "AV01")

    # --- the change poll (when BODs are off) ------------------------------------------------------------------

    async def poll_changes(self, today: date | None = None) -> CatalogSyncReport:
        """Items M3 changed since the last poll (MMS200MI/LstItmByChgDate, by change date), with their price and
        stock, pushed when their fingerprint changed. M3 keeps the change date by day only, so each poll reads the
        whole of the day it starts from; unchanged products cost no QuoteWerks call."""
        started = datetime.now(UTC)
        today = today or started.date()
        counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
        problems: list[Problem] = []
        marker = await self.store.marker(POLL_MARKER)
        since = date.fromisoformat(marker) if marker else today
        reason = f"MMS200MI/LstItmByChgDate from {since.isoformat()} to {today.isoformat()} (M3 BODs not used)"
        try:
            items = await self.m3.execute(
                "MMS200MI", "LstItmByChgDate", {"FLMD": since, "TLMD": today}, priority=Priority.BULK, maxrecs=0
            )
            numbers = [n for n in (str(item.get("ITNO") or "").strip() for item in items) if n]
            o = self.options
            prices = {"PRRF": o.price_list, "CUCD": o.currency, "FVDT": today}
            price_of, stock_of = await asyncio.gather(
                self._per_item("OIS017MI", "GetBasePrice", numbers, prices, "SAPR"), self._stock_of(numbers)
            )
            for product in _products(items, price_of, stock_of):
                await self.push(product, await self.store.get(product.part), counts, problems)
            if counts["failed"] == 0:
                await self.store.set_marker(POLL_MARKER, today.isoformat())  # else the same days again next time
        except Exception as exc:
            log.exception("change poll failed")
            counts["failed"] += 1
            problems.append(_problem(exc, "change poll"))
        report = CatalogSyncReport(
            run_id=f"poll-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}", mode="poll", path="mi",
            path_reason=reason, started_at=started, finished_at=datetime.now(UTC), counts=counts, problems=problems,
        )  # fmt: skip
        self.progress.last_poll = report.model_dump(mode="json")
        _observe(report)
        await self.publish(report)
        return report

    # --- deltas ------------------------------------------------------------------------------------------------

    async def _item(self, itno: str) -> dict[str, Any]:
        record = await self.m3.execute("MMS200MI", "GetItmBasic", {"ITNO": itno}, priority=Priority.BULK, maxrecs=1)
        return record[0] if record else {"ITNO": itno}

    async def _price(self, itno: str) -> object:
        o = self.options
        try:
            rows = await self.m3.execute(
                "OIS017MI", "GetBasePrice",
                {"PRRF": o.price_list, "CUCD": o.currency, "FVDT": date.today(), "ITNO": itno},
                priority=Priority.BULK, maxrecs=1,
            )  # fmt: skip
        except M3Error as exc:
            if exc.retryable:
                raise
            return 0  # no price on the list: pushed as 0 (QuoteWerks needs a number)
        return rows[0].get("SAPR") if rows else 0

    async def _stock(self, itno: str) -> object:
        try:
            rows = await self.m3.execute(
                "MMS200MI", "GetItmWhsBal", {"WHLO": self.options.warehouse, "ITNO": itno},
                priority=Priority.BULK, maxrecs=1,
            )  # fmt: skip
        except M3Error as exc:
            if exc.retryable:
                raise
            return 0  # item not stocked in the warehouse
        return rows[0].get("AV01") if rows else 0

    async def on_item(self, event: ItemChanged) -> CatalogSyncReport:
        item = {
            "ITNO": event.item_number,
            "ITDS": event.description,
            "UNMS": event.unit_of_measure,
            "STAT": event.status,
        }

        async def build() -> Product:
            if not event.description and event.action != "delete":
                item.update(await self._item(event.item_number))  # a thin event: read the item itself
            price, stock = await asyncio.gather(self._price(event.item_number), self._stock(event.item_number))
            return product_from(item, price, stock, deleted=event.action == "delete")

        return await self._delta(event.item_number, build)

    async def on_price(self, event: PriceChanged) -> CatalogSyncReport | None:
        o = self.options
        if event.customer_number or (event.price_list and event.price_list != o.price_list):
            return None  # not the list the catalog shows
        if event.currency and event.currency != o.currency:
            return None

        async def build() -> Product:
            item, stock = await asyncio.gather(self._item(event.item_number), self._stock(event.item_number))
            return product_from(item, event.sales_price, stock)

        return await self._delta(event.item_number, build)

    async def on_inventory(self, event: InventoryChanged) -> CatalogSyncReport | None:
        if event.warehouse != self.options.warehouse:
            return None

        async def build() -> Product:
            item, price = await asyncio.gather(self._item(event.item_number), self._price(event.item_number))
            return product_from(item, price, event.allocatable)

        return await self._delta(event.item_number, build)

    async def _delta(self, part: str, build: Callable[[], Awaitable[Product]]) -> CatalogSyncReport:
        started = datetime.now(UTC)
        counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
        problems: list[Problem] = []
        self.progress.deltas["events"] += 1
        try:
            product = await build()
            await self.push(product, await self.store.get(product.part), counts, problems)
        except (M3Error, OSError) as exc:
            counts["failed"] += 1
            problems.append(_problem(exc, part))
            log.warning("delta for %s failed: %s", part, exc)
        except Exception as exc:  # a lease or lookup failure: reported, never a silent drop
            counts["failed"] += 1
            problems.append(_problem(exc, part))
            log.exception("delta for %s failed", part)
        deltas = self.progress.deltas
        deltas["pushed"] += counts["created"] + counts["updated"]
        deltas["unchanged"] += counts["unchanged"]
        deltas["failed"] += counts["failed"]
        report = CatalogSyncReport(
            run_id=f"delta-{uuid.uuid4().hex[:12]}", mode="delta", path="events",
            path_reason=f"M3 change event for {part}; missing fields read through MI", started_at=started,
            finished_at=datetime.now(UTC), counts=counts, problems=problems,
        )  # fmt: skip
        _observe(report)
        await self.publish(report)
        return report


def _observe(report: CatalogSyncReport) -> None:
    for outcome, count in report.counts.items():
        if count:
            products_synced.labels(report.mode, outcome).inc(count)
    if report.mode == "full":
        result = "failed" if report.counts.get("failed") else "ok"
        full_load_finished.labels(result).set(report.finished_at.timestamp())
        full_load_seconds.set((report.finished_at - report.started_at).total_seconds())


def _sql(text: str) -> str:
    return text.replace("'", "''")


def _products(
    items: Iterable[Mapping[str, object]], price_of: Mapping[str, object], stock_of: Mapping[str, object]
) -> list[Product]:
    seen: dict[str, Product] = {}
    for item in items:
        part = str(item.get("ITNO") or "").strip()
        if part:
            seen[part] = product_from(item, price_of.get(part), stock_of.get(part))
    return list(seen.values())
