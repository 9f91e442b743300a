"""A full load and change events at the same time: the load's snapshot is older than a delta arriving while it runs,
so it never writes its value over the delta's, nor retires an item a delta just created; a delta that fails for a
reason trying later can fix is raised for the consumer to retry, a refused one is reported for the dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import pytest

from services.catalog_sync import full_load
from services.catalog_sync.sync import CatalogSync
from shared.contracts import InventoryChanged, PriceChanged
from shared.quotewerks import QuoteWerksError
from tests.unit.test_catalog_sync import make_sync

pytestmark = pytest.mark.unit


class GatedCatalog:
    """The QuoteWerks catalog double of `make_sync`, whose puts of one product wait until the test opens a gate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.products = inner.products
        self.held: dict[str, asyncio.Event] = {}
        self.reached: dict[str, asyncio.Event] = {}
        self.fail_next: QuoteWerksError | None = None

    def hold(self, part: str) -> None:
        self.held[part] = asyncio.Event()
        self.reached[part] = asyncio.Event()

    def release_all(self) -> None:
        for gate in self.held.values():
            gate.set()

    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool:
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        gate = self.held.get(part)
        if gate is not None and not gate.is_set():
            self.reached[part].set()
            await gate.wait()
        return bool(await self.inner.put_product(part, fields))

    async def put_products(self, products: Mapping[str, Mapping[str, object]]) -> set[str]:
        for part in products:
            gate = self.held.get(part)
            if gate is not None and not gate.is_set():
                self.reached[part].set()
                await gate.wait()
        created: set[str] = await self.inner.put_products(products)
        return created

    async def find_product(self, part: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self.inner.find_product(part)
        return found

    async def all_products(self) -> list[dict[str, Any]]:
        every: list[dict[str, Any]] = await self.inner.all_products()
        return every


def gated_sync(monkeypatch: pytest.MonkeyPatch) -> tuple[CatalogSync, GatedCatalog]:
    # One product per batch: the load writes them one after the other, so a delta can come between two.
    monkeypatch.setattr(full_load, "PUSH_BATCH", 1)
    # One push at a time: the load writes the products in order, so the test knows which it has not reached yet.
    sync, _lake, _m3, catalog, _reports = make_sync(threshold=10, push_concurrency=1)
    gated = GatedCatalog(catalog)
    sync.catalog = sync._pusher.catalog = gated
    return sync, gated


def price(part: str, value: int) -> PriceChanged:
    return PriceChanged(item_number=part, price_list="STD", sales_price=Decimal(value), changed_at=datetime.now(UTC))


async def test_a_price_change_during_a_full_load_is_not_overwritten_by_the_loads_older_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync, catalog = gated_sync(monkeypatch)
    catalog.hold("ITM000001")  # the load reaches this product's write and waits there
    load = asyncio.create_task(sync.full_load())
    await catalog.reached["ITM000001"].wait()
    # Meanwhile M3 changes two prices: one product the load has not written yet, one it is writing right now.
    delta_later = await sync.on_price(price("ITM000039", 99))
    assert delta_later is not None
    assert delta_later.counts["created"] + delta_later.counts["updated"] == 1
    writing = asyncio.create_task(sync.on_price(price("ITM000001", 77)))
    await asyncio.sleep(0)
    catalog.release_all()
    report = await load
    await writing
    assert catalog.products["ITM000039"]["Price"] == 99.0  # the load read 12.50 before the change
    assert catalog.products["ITM000001"]["Price"] == 77.0  # the delta waited for the load's write, then won
    assert report.counts["kept_newer"] == 1
    assert report.counts["failed"] == 0


async def test_an_item_a_delta_creates_during_the_load_is_not_retired_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    sync, catalog = gated_sync(monkeypatch)
    await sync.full_load()
    catalog.hold("ITM000002")
    load = asyncio.create_task(sync.full_load())
    # A change of an item the load's read did not see (created in M3 after it): pushed by the delta.
    stock = InventoryChanged(item_number="NEW000001", warehouse="100", on_hand=Decimal(5), allocatable=Decimal(5),
                             changed_at=datetime.now(UTC))  # fmt: skip
    cast(Any, sync._deltas.reads).m3.items["NEW000001"] = {
        "ITNO": "NEW000001",
        "ITDS": "New",
        "UNMS": "PCS",
        "STAT": "20",
    }
    await asyncio.sleep(0)
    pushed = await sync.on_inventory(stock)
    assert pushed is not None
    assert pushed.counts["created"] == 1
    catalog.release_all()
    report = await load
    assert report.counts["retired"] == 0
    assert catalog.products["NEW000001"]["Active"] is True


async def test_a_delta_that_fails_for_a_passing_reason_is_raised_for_the_consumer_to_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync, catalog = gated_sync(monkeypatch)
    await sync.full_load()
    catalog.fail_next = QuoteWerksError("QuoteWerks answered 503", retryable=True, status=503)
    with pytest.raises(QuoteWerksError, match="503"):
        await sync.on_price(price("ITM000005", 55))
    retried = await sync.on_price(price("ITM000005", 55))  # the consumer's next attempt
    assert retried is not None
    assert retried.counts["updated"] == 1
    catalog.fail_next = QuoteWerksError("QuoteWerks refused the product: 400", retryable=False, status=400)
    refused = await sync.on_price(price("ITM000006", 66))
    assert refused is not None
    assert refused.counts["failed"] == 1  # reported: app.settle_delta dead-letters it with the reason
