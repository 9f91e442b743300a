"""catalog-sync logic with fakes: path choice by volume, fingerprint skip, inactive items, deltas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from prometheus_client import REGISTRY

from services.catalog_sync.datalake import DataLakeClient, DataLakeError
from services.catalog_sync.full_load import choose_path
from services.catalog_sync.products import POLL_MARKER, RETIRED, SyncOptions, product_from
from services.catalog_sync.sync import CatalogSync
from shared.contracts import CatalogSyncReport, InventoryChanged, ItemChanged, PriceChanged
from shared.m3 import M3Client
from shared.m3.client import BulkOutcome
from shared.m3.lease import Priority
from shared.m3.transport import tenant_base
from shared.quotewerks import QuoteWerksError

pytestmark = pytest.mark.unit

ITEMS = [
    {"ITNO": f"ITM{n:06d}", "ITDS": f"Item {n}", "UNMS": "PCS", "STAT": "90" if n % 33 == 0 else "20"}
    for n in range(1, 41)
]


class FakeLake:
    def __init__(self, items: list[dict[str, Any]], fail: bool = False) -> None:
        self.items = list(items)
        self.fail = fail
        self.fail_tables = False
        self.queries: list[str] = []

    async def query(self, sql: str) -> list[dict[str, Any]]:
        self.queries.append(sql)
        if self.fail:
            raise ConnectionError("lake down")
        if "COUNT(*)" in sql:
            return [{"count": len(self.items)}]
        if self.fail_tables:
            raise DataLakeError("Data Lake query q-1 FAILED", retryable=True)
        if "FROM MITMAS" in sql:
            return list(self.items)
        if "FROM OPRBAS" in sql:
            return [{"ITNO": i["ITNO"], "SAPR": 12.5} for i in self.items]
        return [{"ITNO": i["ITNO"], "AV01": 7} for i in self.items]


class FakeM3:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = {i["ITNO"]: dict(i) for i in items}
        self.calls: list[str] = []
        self.poll_ranges: list[tuple[Any, Any]] = []

    async def execute(
        self,
        program: str,
        transaction: str,
        fields: Mapping[str, object] | None = None,
        *,
        priority: Priority,
        maxrecs: int = 100,
        returncols: Any = None,
    ) -> list[dict[str, Any]]:
        self.calls.append(f"{program}/{transaction}")
        assert priority is Priority.BULK
        itno = str((fields or {}).get("ITNO", ""))
        if transaction == "LstBasePrice":
            return [{"ITNO": i, "SAPR": Decimal("12.50"), "CUNO": ""} for i in self.items]
        if transaction == "GetBasePrice":
            return [{"ITNO": itno, "SAPR": Decimal("12.50")}]
        if transaction == "GetItmWhsBal":
            return [{"ITNO": itno, "AV01": Decimal(7)}]
        if transaction == "LstItmByChgDate":
            assert fields is not None
            self.poll_ranges.append((fields["FLMD"], fields["TLMD"]))
            return [i for i in self.items.values() if fields["FLMD"] <= i.get("LMDT", date.min) <= fields["TLMD"]]
        return [self.items[itno]]

    async def list_all(
        self,
        program: str,
        transaction: str,
        fields: Mapping[str, object] | None = None,
        *,
        key_fields: Any,
        priority: Priority,
        page_size: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(f"{program}/{transaction}")
        for item in self.items.values():
            yield item

    async def bulk(self, program: str, transactions: Any, *, priority: Priority, chunk: int = 80) -> list[Any]:
        self.calls.append(f"{program}/bulk")
        values = {"GetItmWhsBal": {"AV01": Decimal(7)}, "GetBasePrice": {"SAPR": Decimal("12.50")}}
        return [BulkOutcome(t, [{"ITNO": f["ITNO"], **values[t]}], None) for t, f in transactions]


class FakeCatalog:
    def __init__(self) -> None:
        self.products: dict[str, dict[str, object]] = {}
        self.puts = 0  # products written, one by one or in batches
        self.batches = 0
        self.refused: set[str] = set()  # parts QuoteWerks refuses (400): a batch holding one is refused whole

    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool:
        if part in self.refused:
            raise QuoteWerksError(f"QuoteWerks refused product {part}: 400", retryable=False, status=400)
        self.puts += 1
        created = part not in self.products
        self.products[part] = dict(fields)
        return created

    async def put_products(self, products: Mapping[str, Mapping[str, object]]) -> set[str]:
        if self.refused & set(products):
            raise QuoteWerksError(f"QuoteWerks refused {len(products)} products: 400", retryable=False, status=400)
        self.batches += 1
        return {part for part, fields in products.items() if await self.put_product(part, fields)}

    async def find_product(self, part: str) -> dict[str, Any] | None:
        found = self.products.get(part)
        return dict(found) if found is not None else None

    async def all_products(self) -> list[dict[str, Any]]:
        return [{**fields, "ManufacturerPartNumber": part} for part, fields in self.products.items()]


class MemoryFingerprints:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.markers: dict[str, str] = {}

    async def marker(self, name: str) -> str | None:
        return self.markers.get(name)

    async def set_marker(self, name: str, value: str) -> None:
        self.markers[name] = value

    async def all(self) -> dict[str, str]:
        return dict(self.values)

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def put(self, key: str, value: str) -> None:
        self.values[key] = value

    async def put_many(self, values: Mapping[str, str]) -> None:
        self.values.update(values)


def make_sync(
    threshold: int = 10, lake_fails: bool = False, push_concurrency: int = 8
) -> tuple[CatalogSync, FakeLake, FakeM3, FakeCatalog, list[CatalogSyncReport]]:
    reports: list[CatalogSyncReport] = []

    async def publish(report: CatalogSyncReport) -> None:
        reports.append(report)

    lake, m3, catalog = FakeLake(ITEMS, fail=lake_fails), FakeM3(ITEMS), FakeCatalog()
    options = SyncOptions(threshold=threshold, push_concurrency=push_concurrency)
    sync = CatalogSync(m3, lake, catalog, MemoryFingerprints(), publish, options)
    return sync, lake, m3, catalog, reports


def test_path_choice_by_volume() -> None:
    assert choose_path(5000, 2000)[0] == "data_lake"
    assert "5000 items > threshold 2000" in choose_path(5000, 2000)[1]
    assert choose_path(2000, 2000)[0] == "mi"
    assert choose_path(None, 2000, why_unknown="boom") == (
        "mi",
        "item count unknown (boom); MI paging at bulk priority",
    )
    assert choose_path(10, 2000, forced="data_lake")[0] == "data_lake"


async def test_big_catalog_reads_the_data_lake_and_second_run_pushes_nothing() -> None:
    sync, _lake, m3, catalog, reports = make_sync(threshold=10)
    first = await sync.full_load()
    assert (first.path, first.counts) == (
        "data_lake", {"created": 40, "updated": 0, "unchanged": 0, "failed": 0, "retired": 0, "kept_newer": 0}
    )  # fmt: skip
    assert "40 items > threshold 10" in first.path_reason
    assert m3.calls == []  # no MI call at all
    assert catalog.products["ITM000001"] == {
        "Description": "Item 1", "UnitOfMeasure": "PCS", "Price": 12.5, "Active": True, "Availability": 7,
    }  # fmt: skip
    second = await sync.full_load()
    assert second.counts == {"created": 0, "updated": 0, "unchanged": 40, "failed": 0, "retired": 0, "kept_newer": 0}
    assert (catalog.puts, catalog.batches) == (40, 1)  # one write for the whole catalog
    assert [r.run_id for r in reports] == [first.run_id, second.run_id]
    assert sync.progress.snapshot()["last_full_load"]["counts"]["unchanged"] == 40


async def test_reconciliation_finds_products_edited_or_lost_in_quotewerks_and_pushes_them_again() -> None:
    """A full load pushes only what changed since its last push: a product edited in QuoteWerks (or lost there)
    stays wrong. The reconciliation compares with QuoteWerks itself: a dry run reports each difference by field and
    changes nothing; a real one pushes exactly those two again."""
    sync, _lake, _m3, catalog, reports = make_sync(threshold=10)
    await sync.full_load()
    catalog.products["ITM000002"]["Price"] = 1.0  # a user's edit in QuoteWerks
    del catalog.products["ITM000003"]
    assert (await sync.full_load()).counts["unchanged"] == 40  # the fingerprints do not see it

    dry = await sync.reconcile(dry_run=True)
    assert dry.mode == "reconcile"
    assert (dry.counts["missing"], dry.counts["differs"], dry.counts["same"]) == (1, 1, 38)
    assert sorted(p.message for p in dry.problems) == [
        "ITM000002: Price 1.0 (M3: 12.5)", "ITM000003: missing in QuoteWerks",
    ]  # fmt: skip
    assert "ITM000003" not in catalog.products
    assert REGISTRY.get_sample_value("m3bridge_catalog_differences") == 2

    repaired = await sync.reconcile()
    assert (repaired.counts["created"], repaired.counts["updated"], repaired.counts["failed"]) == (1, 1, 0)
    assert catalog.products["ITM000002"]["Price"] == 12.5
    assert "ITM000003" in catalog.products
    assert REGISTRY.get_sample_value("m3bridge_catalog_differences") == 0
    again = await sync.reconcile(dry_run=True)
    assert (again.counts["missing"], again.counts["differs"], again.counts["same"]) == (0, 0, 40)
    assert reports[-1].run_id == again.run_id
    assert sync.progress.snapshot()["last_reconcile"]["run_id"] == again.run_id


async def test_a_batch_quotewerks_refuses_is_pushed_one_by_one_so_only_the_bad_product_fails() -> None:
    sync, _lake, _m3, catalog, _ = make_sync(threshold=10)
    catalog.refused = {"ITM000007"}
    report = await sync.full_load()
    assert (report.counts["created"], report.counts["failed"]) == (39, 1)
    [problem] = report.problems
    assert "ITM000007" in problem.message
    assert catalog.batches == 0  # the one batch was refused whole
    assert "ITM000007" not in catalog.products
    catalog.refused = set()
    again = await sync.full_load()  # its fingerprint was not stored: the next load pushes it
    assert (again.counts["created"], again.counts["unchanged"]) == (1, 39)


async def test_small_catalog_pages_mi_and_gives_the_same_fingerprints() -> None:
    sync, _lake, m3, _catalog, _ = make_sync(threshold=100)
    first = await sync.full_load()
    assert first.path == "mi"
    assert "MMS200MI/LstItmByItm" in m3.calls
    assert first.counts["created"] == 40
    sync.options.threshold = 10  # now the lake: identical values, nothing to push
    again = await sync.full_load()
    assert again.path == "data_lake"
    assert again.counts["unchanged"] == 40


async def test_lake_down_falls_back_to_mi_and_says_why() -> None:
    sync, *_ = make_sync(threshold=10, lake_fails=True)
    report = await sync.full_load()
    assert report.path == "mi"
    assert "lake down" in report.path_reason


async def test_a_failed_data_lake_table_query_falls_back_to_mi_and_says_why() -> None:
    sync, lake, m3, _catalog, _ = make_sync(threshold=10)
    lake.fail_tables = True
    report = await sync.full_load()
    assert report.path == "mi"
    assert "40 items > threshold 10" in report.path_reason
    assert (
        "Data Lake read failed (DataLakeError: Data Lake query q-1 FAILED), so MI paging instead" in report.path_reason
    )
    assert report.counts["created"] == 40
    assert "MMS200MI/LstItmByItm" in m3.calls


async def test_a_forced_data_lake_load_does_not_fall_back() -> None:
    sync, lake, m3, _catalog, _ = make_sync(threshold=10)
    lake.fail_tables = True
    report = await sync.full_load(forced="data_lake")
    assert (report.path, report.counts["failed"]) == ("data_lake", 1)
    assert m3.calls == []


async def test_items_gone_from_m3_are_deactivated_once_and_come_back_when_m3_has_them_again() -> None:
    sync, lake, m3, catalog, _ = make_sync(threshold=10)
    sync.options.retire_limit = 0.1
    await sync.full_load()
    gone = lake.items.pop(3)  # ITM000004 deleted in M3
    m3.items.pop(gone["ITNO"])
    report = await sync.full_load()
    assert report.counts["retired"] == 1
    assert catalog.products["ITM000004"] == {
        "Description": "Item 4", "UnitOfMeasure": "PCS", "Price": 12.5, "Active": False, "Availability": 0,
    }  # fmt: skip
    assert sync.store.values["ITM000004"].startswith(RETIRED)  # type: ignore[attr-defined]
    puts = catalog.puts
    again = await sync.full_load()
    assert (again.counts["retired"], again.counts["unchanged"], catalog.puts) == (0, 39, puts)
    lake.items.insert(3, gone)
    back = await sync.full_load()
    assert back.counts["updated"] == 1
    assert catalog.products["ITM000004"]["Active"] is True


async def test_a_read_missing_much_of_the_catalog_deactivates_nothing() -> None:
    sync, lake, _m3, catalog, _ = make_sync(threshold=5)
    await sync.full_load()
    del lake.items[10:]  # 30 of 40 products "gone": a broken read, not a real clean-up
    report = await sync.full_load()
    assert report.counts["retired"] == 0
    assert "30 of 40 synced products are no longer in M3" in report.problems[0].message
    assert all(p["Active"] for n, p in catalog.products.items() if int(n[3:]) % 33)


async def test_the_change_poll_pushes_items_m3_changed_since_the_last_poll() -> None:
    sync, _lake, m3, catalog, reports = make_sync(threshold=10)
    today = date(2026, 12, 1)
    for item in m3.items.values():
        item["LMDT"] = today - timedelta(days=30)
    await sync.full_load()
    m3.items["ITM000005"].update({"ITDS": "Item 5, new text", "LMDT": today})
    first = await sync.poll_changes(today=today)
    assert (first.mode, first.path, first.counts["updated"]) == ("poll", "mi", 1)
    assert catalog.products["ITM000005"]["Description"] == "Item 5, new text"
    assert "LstItmByChgDate" in first.path_reason
    assert {"OIS017MI/bulk", "MMS200MI/bulk"} <= set(m3.calls)  # price and stock 80 items a Gateway call
    assert "OIS017MI/GetBasePrice" not in m3.calls
    assert sync.store.markers[POLL_MARKER] == "2026-12-01"  # type: ignore[attr-defined]
    puts = catalog.puts
    second = await sync.poll_changes(today=today)  # the same day again: read, nothing pushed
    assert (second.counts["unchanged"], catalog.puts) == (1, puts)
    tomorrow = today + timedelta(days=1)
    await sync.poll_changes(today=tomorrow)
    assert m3.poll_ranges[-1] == (today, tomorrow)
    assert reports[-1].mode == "poll"
    assert sync.progress.snapshot()["last_poll"]["counts"]["unchanged"] == 1  # changed today: read again tomorrow


def test_inactive_item_is_not_active() -> None:
    assert product_from({"ITNO": "X", "ITDS": "x", "STAT": "90"}, "1.00", "3").active is False
    assert product_from({"ITNO": "X", "ITDS": "x", "STAT": "10"}, "1.00", "3").active is False
    assert product_from({"ITNO": "X", "ITDS": "x", "STAT": "20"}, "1.00", "3").active is True
    assert product_from({"ITNO": "X", "ITDS": "x", "STAT": "20"}, "1", "3", deleted=True).active is False
    # the fingerprint is over the pushed values, not their spelling
    assert product_from({"ITNO": "X", "STAT": "20"}, 12.5, 3).fingerprint() == (
        product_from({"ITNO": "X", "STAT": "20"}, Decimal("12.50"), Decimal("3.000")).fingerprint()
    )


async def test_item_event_with_status_90_deactivates_and_repeat_is_skipped() -> None:
    sync, _, _, catalog, reports = make_sync()
    await sync.full_load()
    assert catalog.products["ITM000002"]["Active"] is True
    event = ItemChanged(
        item_number="ITM000002", action="change", description="Item 2", unit_of_measure="PCS", status="90",
        changed_at=datetime.now(UTC),
    )  # fmt: skip
    report = await sync.on_item(event)
    assert report.counts["updated"] == 1
    assert catalog.products["ITM000002"]["Active"] is False
    repeat = await sync.on_item(event)
    assert repeat.counts == {"created": 0, "updated": 0, "unchanged": 1, "failed": 0}
    assert reports[-1].mode == "delta"


async def test_price_and_stock_events() -> None:
    sync, _, _, catalog, _ = make_sync()
    await sync.full_load()
    now = datetime.now(UTC)
    await sync.on_price(
        PriceChanged(item_number="ITM000003", price_list="STD", sales_price=Decimal(99), changed_at=now)
    )
    assert catalog.products["ITM000003"]["Price"] == 99.0
    other_list = PriceChanged(item_number="ITM000003", price_list="PROMO", sales_price=Decimal(1), changed_at=now)
    assert await sync.on_price(other_list) is None
    stock = InventoryChanged(
        item_number="ITM000004", warehouse="100", on_hand=Decimal(50), allocatable=Decimal(42), changed_at=now
    )
    await sync.on_inventory(stock)
    assert catalog.products["ITM000004"]["Availability"] == 42
    assert await sync.on_inventory(stock.model_copy(update={"warehouse": "200"})) is None


def test_tenant_base_from_the_lease() -> None:
    assert tenant_base("https://ion.example/TENANT/M3") == "https://ion.example/TENANT"
    assert tenant_base("https://ion.example/TENANT/M3/") == "https://ion.example/TENANT"


class RecordingGateway:
    """The M3 client's `gateway` as the Data Lake client uses it: answers the submit with `query_id`."""

    def __init__(self, query_id: str) -> None:
        self.query_id = query_id
        self.paths: list[str] = []

    async def gateway(self, method: str, path: str, **_request: Any) -> httpx.Response:
        self.paths.append(path)
        request = httpx.Request(method, "https://gateway.test" + path)
        if path.endswith("/jobs/"):
            return httpx.Response(202, json={"queryId": self.query_id}, request=request)
        if path.endswith("/status/"):
            return httpx.Response(200, json={"status": "FINISHED"}, request=request)
        return httpx.Response(200, json=[], request=request)


@pytest.mark.parametrize("query_id", ["../../M3/m3api-rest/v2/execute/CRS610MI/Add", "q 1", "", "x" * 129])
async def test_a_data_lake_query_id_that_is_not_a_plain_identifier_is_never_put_into_a_url(query_id: str) -> None:
    gateway = RecordingGateway(query_id)
    lake = DataLakeClient(cast(M3Client, gateway), poll_s=0, timeout_s=5)
    with pytest.raises(DataLakeError, match="unusable query id") as refused:
        await lake.query("SELECT ITNO FROM MITMAS")
    assert not refused.value.retryable
    assert gateway.paths == ["/DATAFABRIC/compass/v2/jobs/"]  # nothing sent after the submit


async def test_a_plain_data_lake_query_id_is_polled_and_read() -> None:
    gateway = RecordingGateway("3f2c9a1e-77b0-4c55-9d7e-0c1d2e3f4a5b")
    assert await DataLakeClient(cast(M3Client, gateway), poll_s=0, timeout_s=5).query("SELECT 1") == []
    assert gateway.paths[1] == "/DATAFABRIC/compass/v2/jobs/3f2c9a1e-77b0-4c55-9d7e-0c1d2e3f4a5b/status/"
