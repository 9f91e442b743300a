"""catalog-sync as a process against the ION simulator (MI + Data Lake), token-service and the QuoteWerks simulator:
a full load lands every M3 item in QuoteWerks once, a repeat pushes nothing, an item event deactivates a product."""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.contracts import ItemChanged
from shared.contracts.topics import (
    CATALOG_SYNC_REPORT,
    INVENTORY_CHANGED,
    ITEM_CHANGED,
    PRICE_CHANGED,
    dead_letter_topic,
)
from shared.platform.kafka import create_broker, publish
from shared.platform.settings import BridgeSettings
from simulators.processes import Captured, wait_until
from simulators.stack import (
    OPERATOR,
    READ,
    IonSim,
    QuoteWerksSim,
    start_ion,
    start_quotewerks,
    start_service,
    start_token_service,
)

ITEMS = 600
THRESHOLD = 300  # below the item count: the full load must choose the Data Lake
KEYS = {"catalog-sync": "catalog-sync-key-123456"}


@dataclass
class Stack:
    ion: IonSim
    quotewerks: QuoteWerksSim
    service: Captured
    url: str
    state_url: str


async def read_all(bootstrap: str, topics: list[str]) -> list[tuple[str, bytes, bytes]]:
    """Every message now on `topics` as (topic, key, value), without joining a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[tuple[str, bytes, bytes]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in ends}
            if all(positions[tp] >= end for tp, end in ends.items()):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found += [(r.topic, r.key or b"", r.value or b"") for r in records]
        return found
    finally:
        await consumer.stop()


async def skip_to_the_end(bootstrap: str, topics: list[str], group: str) -> None:
    """Commits `group` at the end of `topics`, so its next member reads only what is sent after this: none of the
    change events other tests of the session left there (for their own simulators' items)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=group)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        assert partitions, f"no partitions of {topics}"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        # Read to the end rather than trust end offsets (the embedded broker's can be wrong): until a second passes
        # with nothing more. A leftover missed here would still show: the test expects no event handled.
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0:
            if any((await consumer.getmany(timeout_ms=250)).values()):
                quiet_since = time.monotonic()
        ends = {tp: await consumer.position(tp) for tp in partitions}
        await consumer.commit(ends)
        assert {tp: await consumer.committed(tp) for tp in partitions} == ends
    finally:
        await consumer.stop()


def healthz(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/healthz", headers=READ, timeout=5).json()
    logic: dict[str, Any] = body["logic"]
    return logic


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, module_postgres_url: str) -> Iterator[Stack]:
    # A group of its own (another test's catalog-sync, SIGKILLed, may still be a member of the default one), started
    # past what other tests left on the change topics, so every event it applies is ours.
    group = f"test.catalog-sync.{uuid.uuid4().hex[:8]}"
    asyncio.run(
        skip_to_the_end(kafka_bootstrap, [ITEM_CHANGED.name, PRICE_CHANGED.name, INVENTORY_CHANGED.name], group)
    )
    ion = start_ion(tmp_path_factory.mktemp("ion"), {"m3": {"items": ITEMS}})
    token_service = start_token_service(ion, kafka_bootstrap, KEYS)
    quotewerks = start_quotewerks("http://127.0.0.1:9/unused", "unused-secret")
    settings = {
        "M3B_STATE_URL": module_postgres_url, "M3B_TOKEN_SERVICE_URL": token_service.url,
        "M3B_TOKEN_SERVICE_KEY": KEYS["catalog-sync"], "M3B_QUOTEWERKS_URL": quotewerks.url,
        "M3B_QUOTEWERKS_API_KEY": quotewerks.api_key, "M3B_DATA_LAKE_THRESHOLD": str(THRESHOLD),
        "M3B_DATA_LAKE_POLL_S": "0.1", "M3B_CATALOG_CONSUMER_GROUP": group,
    }  # fmt: skip
    try:
        process, url = start_service("catalog-sync", kafka_bootstrap, settings)
    except AssertionError:
        quotewerks.stop()
        token_service.stop()
        ion.stop()
        raise
    yield Stack(ion, quotewerks, process, url, module_postgres_url)
    process.kill_all()
    quotewerks.stop()
    token_service.stop()
    ion.stop()


def full_load(stack: Stack, **params: str) -> dict[str, Any]:
    response = httpx.post(f"{stack.url}/v1/sync/full", params={"wait": "true", **params}, headers=OPERATOR, timeout=120)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def test_full_load_lands_every_item_once_and_a_repeat_pushes_nothing(stack: Stack, kafka_bootstrap: str) -> None:
    first = wait_until("the start-up full load", lambda: healthz(stack.url).get("last_full_load"), timeout_s=90)
    assert first["path"] == "data_lake", first
    assert f"{ITEMS} items > threshold {THRESHOLD}" in first["path_reason"]
    counts = first["counts"]
    assert counts["failed"] == 0, first["problems"]
    assert counts["created"] + counts["updated"] == ITEMS
    assert stack.ion.admin("GET", "datalake")["stats"]["jobs"] >= 4  # count + items + prices + balances

    products = stack.quotewerks.api("GET", "products")["products"]
    parts = [p["ManufacturerPartNumber"] for p in products]
    assert len(parts) == len(set(parts))  # zero duplicates
    expected = {f"ITM{n:06d}" for n in range(1, ITEMS + 1)}
    assert expected <= set(parts)
    by_part = {p["ManufacturerPartNumber"]: p for p in products}
    assert by_part["ITM000033"]["Active"] is False  # seeded STAT 90
    assert by_part["ITM000001"]["Active"] is True  # seeded STAT 20

    assert healthz(stack.url)["deltas"]["handled"] == 0  # no event of another test reached this service
    second = full_load(stack)
    assert second["path"] == "data_lake"
    assert second["counts"] == {
        "created": 0,
        "updated": 0,
        "unchanged": ITEMS,
        "failed": 0,
        "retired": 0,
        "kept_newer": 0,
    }

    third = full_load(stack, path="mi")  # the MI path reads the same values: nothing to push
    assert third["path"] == "mi"
    assert third["counts"] == {
        "created": 0,
        "updated": 0,
        "unchanged": ITEMS,
        "failed": 0,
        "retired": 0,
        "kept_newer": 0,
    }

    reports = asyncio.run(read_all(kafka_bootstrap, [CATALOG_SYNC_REPORT.name]))
    published = {json.loads(value)["run_id"]: json.loads(value) for _, _, value in reports}
    assert published[third["run_id"]]["counts"]["unchanged"] == ITEMS
    assert first["run_id"] in published


def test_item_event_with_status_90_deactivates_the_product(stack: Stack, kafka_bootstrap: str) -> None:
    part = "ITM000005"
    wait_until("the start-up full load", lambda: healthz(stack.url).get("last_full_load"), timeout_s=90)
    assert stack.quotewerks.api("GET", f"products/{part}")["Active"] is True

    async def send() -> None:
        broker = create_broker(BridgeSettings(kafka_bootstrap_servers=kafka_bootstrap, service_name="test"))
        await broker.start()
        try:
            event = ItemChanged(
                item_number=part, action="change", description="Retired part", unit_of_measure="PCS", status="90",
                changed_at=datetime.now(UTC), variation=7,
            )  # fmt: skip
            await publish(broker, ITEM_CHANGED, event, key=part)
        finally:
            await broker.stop()

    asyncio.run(send())

    def deactivated() -> dict[str, Any] | None:
        found: dict[str, Any] = stack.quotewerks.api("GET", f"products/{part}")
        return found if found["Active"] is False else None

    product = wait_until("the product to be deactivated", deactivated, timeout_s=60)
    assert product["Description"] == "Retired part"


def test_the_change_poll_brings_an_m3_edit_across_without_bods(stack: Stack) -> None:
    """This ION simulator sends no BODs: the MMS200MI/LstItmByChgDate poll is the path."""
    part = "ITM000007"
    wait_until("the start-up full load", lambda: healthz(stack.url).get("last_full_load"), timeout_s=90)
    stack.ion.admin("POST", f"m3/items/{part}", {"ITDS": "Edited in MMS001"})
    assert httpx.post(f"{stack.url}/v1/sync/poll", timeout=10).status_code == 401  # no operator key
    response = httpx.post(f"{stack.url}/v1/sync/poll", headers=OPERATOR, timeout=120)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["mode"], report["path"]) == ("poll", "mi")
    assert report["counts"]["failed"] == 0, report["problems"]
    assert report["counts"]["updated"] >= 1
    assert stack.quotewerks.api("GET", f"products/{part}")["Description"] == "Edited in MMS001"
    again = httpx.post(f"{stack.url}/v1/sync/poll", headers=OPERATOR, timeout=120).json()
    assert again["counts"]["updated"] == again["counts"]["created"] == 0
    assert healthz(stack.url)["last_poll"]["run_id"] == again["run_id"]


def send_thin_item_change(kafka_bootstrap: str, part: str) -> None:
    """An item event without a description: catalog-sync reads the item from M3 (GetItmBasic)."""

    async def send() -> None:
        broker = create_broker(BridgeSettings(kafka_bootstrap_servers=kafka_bootstrap, service_name="test"))
        await broker.start()
        try:
            event = ItemChanged(item_number=part, action="change", changed_at=datetime.now(UTC), variation=1)
            await publish(broker, ITEM_CHANGED, event, key=part)
        finally:
            await broker.stop()

    asyncio.run(send())


def test_a_change_that_cannot_be_applied_is_dead_lettered_with_the_reason(stack: Stack, kafka_bootstrap: str) -> None:
    part = "NOSUCHITEM01"  # a thin event (no description) for an item M3 does not have: GetItmBasic answers NOK
    wait_until("the start-up full load", lambda: healthz(stack.url).get("last_full_load"), timeout_s=90)
    send_thin_item_change(kafka_bootstrap, part)

    def letter() -> dict[str, Any] | None:
        found = asyncio.run(read_all(kafka_bootstrap, [dead_letter_topic("catalog-sync").name]))
        letters = [json.loads(value) for _, key, value in found if key == part.encode()]
        return letters[-1] if letters else None

    dead = wait_until("the dead letter", letter, timeout_s=60)
    assert dead["error_class"] == "catalog-delta"
    assert dead["origin_topic"] == ITEM_CHANGED.name
    assert part in dead["error_message"]
    assert json.loads(dead["original_payload"])["item_number"] == part
    assert healthz(stack.url)["deltas"]["dead_lettered"] >= 1


def test_a_change_not_applied_is_a_work_item_and_its_retry_after_the_fix_closes_it(
    stack: Stack, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's path for a change: `m3bridge work list` shows the item change catalog-sync could not apply;
    the item is created in M3; `m3bridge work retry` sends the change again; the product lands in QuoteWerks and
    the work item closes by itself."""
    from m3bridge.cli import main

    monkeypatch.setenv("M3B_STATE_URL", stack.state_url)
    monkeypatch.setenv("M3B_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    part = f"LATE{uuid.uuid4().hex[:8].upper()}"
    wait_until("the start-up full load", lambda: healthz(stack.url).get("last_full_load"), timeout_s=90)
    send_thin_item_change(kafka_bootstrap, part)

    def listed() -> list[dict[str, Any]]:
        capsys.readouterr()
        assert main(["work", "list", "--kind", "item", "--doc", part, "--json"]) == 0
        found: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
        return found

    [item] = wait_until("the change on the work queue", listed, timeout_s=60)
    assert (item["subject"], item["class"], item["status"]) == (part, "catalog-delta", "open")
    assert part in item["reason"]
    assert main(["work", "show", str(item["id"])]) == 0
    shown = capsys.readouterr().out
    assert f"the change on {ITEM_CHANGED.name} (key {part})" in shown
    assert json.loads(shown.rsplit("sends again:", 1)[1])["item_number"] == part

    stack.ion.admin("POST", "m3/items", {"ITNO": part, "ITDS": "Created after the change"})
    assert main(["work", "retry", str(item["id"]), "--note", "item created in MMS001"]) == 0

    def closed() -> dict[str, Any] | None:
        capsys.readouterr()
        assert main(["work", "show", str(item["id"]), "--json"]) == 0
        shown: dict[str, Any] = json.loads(capsys.readouterr().out)
        return shown if shown["status"] == "resolved" else None

    after = wait_until("the work item closed by the applied retry", closed, timeout_s=60)
    assert [event["event"] for event in after["history"]] == ["failed", "retried", "resolved"]
    assert stack.quotewerks.api("GET", f"products/{part}")["Description"] == "Created after the change"


def test_the_reconciliation_finds_a_product_edited_in_quotewerks_and_pushes_it_again(stack: Stack) -> None:
    """A product someone edited in QuoteWerks is what M3 says again after a reconciliation (a full load would not see
    it: the bridge's fingerprint did not change); the dry run names the field and changes nothing."""
    wait_until("the start-up full load", lambda: healthz(stack.url).get("last_full_load"), timeout_s=90)
    full_load(stack)  # whatever other tests changed, pushed
    part = "ITM000007"
    product = stack.quotewerks.api("GET", f"products/{part}")
    price = product["Price"]
    edited = {k: product[k] for k in ("Description", "UnitOfMeasure", "Active", "Availability")}
    stack.quotewerks.api("PUT", f"products/{part}", {**edited, "Price": price + 100})

    def reconcile(**params: str) -> dict[str, Any]:
        answer = httpx.post(f"{stack.url}/v1/sync/reconcile", params=params, headers=OPERATOR, timeout=120)
        assert answer.status_code == 200, answer.text
        report: dict[str, Any] = answer.json()
        return report

    assert httpx.post(f"{stack.url}/v1/sync/reconcile", timeout=10).status_code == 401
    dry = reconcile(dry_run="true")
    assert (dry["mode"], dry["counts"]["differs"], dry["counts"]["missing"]) == ("reconcile", 1, 0), dry["problems"]
    assert [p["message"] for p in dry["problems"]] == [f"{part}: Price {price + 100!r} (M3: {price!r})"]
    assert stack.quotewerks.api("GET", f"products/{part}")["Price"] == price + 100
    repaired = reconcile()
    assert (repaired["counts"]["updated"], repaired["counts"]["failed"]) == (1, 0)
    assert stack.quotewerks.api("GET", f"products/{part}")["Price"] == price
    assert healthz(stack.url)["last_reconcile"]["run_id"] == repaired["run_id"]
