"""catalog-sync as a process with M3B_QUOTEWERKS_URL pointing at a QuoteWerks database (PostgreSQL with the schema
subset and the bridge's product table, as on SQL Server): a full load lands every M3 item in `M3BridgeProducts` once,
an item event deactivates its product, and M3 customer changes are not taken (the connector does not reach
QuoteWerks contacts) — with no QuoteWerks simulator involved."""

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from shared.contracts import ItemChanged
from shared.contracts.topics import ITEM_CHANGED
from shared.platform.kafka import create_broker, publish
from shared.platform.settings import BridgeSettings
from shared.quotewerks.schema import BRIDGE_PRODUCTS
from simulators.processes import Captured, wait_until
from simulators.stack import READ, IonSim, start_ion, start_service, start_token_service
from tests.conftest import _create_database, _drop_database
from tests.quotewerks_db import create_schema

ITEMS = 150  # below the Data Lake threshold: the MI path
KEYS = {"catalog-sync": "catalog-sync-key-123456"}


@dataclass
class Stack:
    ion: IonSim
    service: Captured
    url: str
    quotewerks_db: str


def products(url: str) -> dict[str, dict[str, Any]]:
    async def read() -> dict[str, dict[str, Any]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                rows = (await connection.execute(select(BRIDGE_PRODUCTS))).mappings().all()
        finally:
            await engine.dispose()
        return {row["ManufacturerPartNumber"]: dict(row) for row in rows}

    return asyncio.run(read())


def logic(url: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{url}/healthz", headers=READ, timeout=5).json()["logic"]
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, module_postgres_url: str) -> Iterator[Stack]:
    name = f"m3b_qw_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(name))
    quotewerks_db = module_postgres_url.rsplit("/", 1)[0] + f"/{name}"

    async def create() -> None:
        engine = create_async_engine(quotewerks_db)
        try:
            await create_schema(engine)
        finally:
            await engine.dispose()

    asyncio.run(create())
    ion = start_ion(tmp_path_factory.mktemp("ion"), {"m3": {"items": ITEMS}})
    token_service = start_token_service(ion, kafka_bootstrap, KEYS)
    settings = {
        "M3B_STATE_URL": module_postgres_url, "M3B_TOKEN_SERVICE_URL": token_service.url,
        "M3B_TOKEN_SERVICE_KEY": KEYS["catalog-sync"], "M3B_QUOTEWERKS_URL": quotewerks_db,
    }  # fmt: skip
    try:
        process, url = start_service("catalog-sync", kafka_bootstrap, settings)
    except AssertionError:
        token_service.stop()
        ion.stop()
        asyncio.run(_drop_database(name))
        raise
    yield Stack(ion, process, url, quotewerks_db)
    process.kill_all()
    token_service.stop()
    ion.stop()
    asyncio.run(_drop_database(name))


def test_a_full_load_fills_the_bridges_product_table_and_contacts_are_left_alone(stack: Stack) -> None:
    first = wait_until("the start-up full load", lambda: logic(stack.url).get("last_full_load"), timeout_s=90)
    assert first["path"] == "mi", first
    assert first["counts"]["failed"] == 0, first["problems"]
    assert first["counts"]["created"] + first["counts"]["updated"] >= ITEMS
    rows = products(stack.quotewerks_db)
    expected = {f"ITM{n:06d}" for n in range(1, ITEMS + 1)}
    assert expected <= set(rows)
    assert rows["ITM000033"]["Active"] is False  # seeded STAT 90
    assert rows["ITM000001"]["Active"] is True
    assert rows["ITM000001"]["Price"] > 0
    health = httpx.get(f"{stack.url}/healthz", headers=READ, timeout=5).json()
    assert health["logic"]["customers_written_to_quotewerks"] is False
    subscribers = health["consumers"]["subscribers"]
    assert "catalog-sync/items" in subscribers
    assert "catalog-sync/customers" not in subscribers  # M3 customer changes stay unread for a contact-capable sync
    # QuoteWerks changes of linked customers still reach M3 (the contact manager is only read from their events).
    assert "catalog-sync/quotewerks-customers" in subscribers


def test_an_item_event_deactivates_its_row(stack: Stack, kafka_bootstrap: str) -> None:
    part = "ITM000005"
    wait_until("the start-up full load", lambda: logic(stack.url).get("last_full_load"), timeout_s=90)
    assert products(stack.quotewerks_db)[part]["Active"] is True

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
        row = products(stack.quotewerks_db)[part]
        return row if row["Active"] is False else None

    row = wait_until("the product to be deactivated", deactivated, timeout_s=60)
    assert row["Description"] == "Retired part"
    assert row["UnitOfMeasure"] == "PCS"
