"""`CatalogSync`: the one face of the catalog synchronisation (M3 items + prices + stock → QuoteWerks products)."""

from __future__ import annotations

from datetime import date

from services.catalog_sync.deltas import Deltas
from services.catalog_sync.full_load import FullLoad
from services.catalog_sync.m3_reads import M3Reads
from services.catalog_sync.products import M3, Catalog, Fingerprints, Lake, Path, SyncOptions
from services.catalog_sync.pushing import Progress, Publish, Pusher
from shared.contracts import CatalogSyncReport, InventoryChanged, ItemChanged, PriceChanged


class CatalogSync:
    """Only what changed is pushed (`products.Product.fingerprint`). Full loads (`full_load.FullLoad`) read M3
    through the Data Lake (big catalogs) or MI paging (small ones); deltas (`deltas.Deltas`) come from M3 change
    events or the change poll and read the rest of the product through single MI calls."""

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
        self._pusher = Pusher(catalog, store, publish)
        self.push = self._pusher.push  # one product, when its fingerprint changed
        reads = M3Reads(m3, options)
        self._full = FullLoad(lake, reads, self._pusher, options, self.progress)
        self._deltas = Deltas(reads, self._pusher, options, self.progress)

    @property
    def full_load_running(self) -> bool:
        return self._full.running

    async def count_items(self) -> tuple[int | None, str]:
        return await self._full.count_items()

    async def full_load(self, *, forced: Path | None = None) -> CatalogSyncReport:
        return await self._full.run(forced=forced)

    async def reconcile(self, *, dry_run: bool = False) -> CatalogSyncReport:
        return await self._full.reconcile(dry_run=dry_run)

    async def poll_changes(self, today: date | None = None) -> CatalogSyncReport:
        return await self._deltas.poll_changes(today)

    async def on_item(self, event: ItemChanged) -> CatalogSyncReport:
        return await self._deltas.on_item(event)

    async def on_price(self, event: PriceChanged) -> CatalogSyncReport | None:
        return await self._deltas.on_price(event)

    async def on_inventory(self, event: InventoryChanged) -> CatalogSyncReport | None:
        return await self._deltas.on_inventory(event)
