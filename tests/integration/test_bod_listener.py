"""bod-listener as a process: BODs from the ION simulator become normalized events; hostile or broken XML is
refused or kept as a dead letter while the listener keeps serving."""

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from m3bridge import dead_letters
from shared.contracts import ItemChanged
from shared.settings import BridgeSettings
from shared.topics import ITEM_CHANGED
from simulators.ion.bods import BodContext, build_item_master
from tests.processes import Captured
from tests.stack import IonSim, start_ion, start_service

SECRET = "bod-secret-for-tests"
HEADER = "X-M3Bridge-BOD-Secret"


@pytest.fixture(scope="module")
def listener(kafka_bootstrap: str, module_postgres_url: str) -> Iterator[tuple[Captured, str]]:
    process, url = start_service(
        "bod-listener", kafka_bootstrap, {"M3B_STATE_URL": module_postgres_url, "M3B_BOD_SECRET": SECRET,
                                          "M3B_BOD_MAX_BYTES": "200000"}
    )  # fmt: skip
    yield process, url
    process.kill_all()


@pytest.fixture(scope="module")
def ion(tmp_path_factory: pytest.TempPathFactory, listener: tuple[Captured, str]) -> Iterator[IonSim]:
    sim = start_ion(
        tmp_path_factory.mktemp("ion-bods"),
        {"bod_target_url": f"{listener[1]}/bods", "bod_headers": {HEADER: SECRET}},
    )
    yield sim
    sim.stop()


def item_events(bootstrap: str, item: str, expected: int, timeout_s: float = 20) -> list[ItemChanged]:
    async def read() -> list[ItemChanged]:
        consumer = AIOKafkaConsumer(ITEM_CHANGED.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        found: list[ItemChanged] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and len(found) < expected:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        if record.key == item.encode():
                            found.append(ItemChanged.model_validate_json(record.value or b""))
        finally:
            await consumer.stop()
        return found

    return asyncio.run(read())


def test_an_item_edited_in_m3_becomes_an_item_changed_event(ion: IonSim, kafka_bootstrap: str) -> None:
    ion.admin("POST", "m3/items/ITM000010", {"ITDS": "Renamed in M3"})
    ion.admin("POST", "m3/items/ITM000010", {"STAT": "90"})
    events = item_events(kafka_bootstrap, "ITM000010", 2)
    assert [e.description for e in events][:1] == ["Renamed in M3"]
    assert events[-1].status == "90"
    assert events[0].variation < events[-1].variation


def post(listener: tuple[Captured, str], body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{listener[1]}/bods", content=body, headers={"Content-Type": "application/xml", **(headers or
                      {HEADER: SECRET})}, timeout=10)  # fmt: skip


def test_unauthenticated_and_oversized_deliveries_are_refused(listener: tuple[Captured, str]) -> None:
    assert post(listener, b"<x/>", {"X-Other": "1"}).status_code == 401
    assert post(listener, b"<x/>", {HEADER: "wrong"}).status_code == 401
    assert post(listener, b"<x>" + b"a" * 300_000 + b"</x>").status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]><l>&d;</l>',
        b"<not-closed>",
        b"<SyncShipment><ApplicationArea/><DataArea/></SyncShipment>",
    ],
    ids=["xxe", "billion-laughs", "malformed", "unknown-noun"],
)
def test_hostile_or_unusable_xml_is_kept_as_a_dead_letter_and_the_listener_keeps_serving(
    listener: tuple[Captured, str], kafka_bootstrap: str, body: bytes
) -> None:
    response = post(listener, body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "dead-lettered"
    assert httpx.get(f"{listener[1]}/readyz", timeout=5).status_code == 200
    settings = BridgeSettings(kafka_bootstrap_servers=kafka_bootstrap)
    kept = asyncio.run(dead_letters.read_all(settings, "bod-listener", idle_s=1.0))
    assert any(f.letter.original_payload == body.decode() for f in kept)


def test_the_same_bod_twice_is_published_once_and_an_older_variation_is_stale(
    listener: tuple[Captured, str], kafka_bootstrap: str
) -> None:
    context = BodContext()
    newer = build_item_master(context, item_number="ITM000012", description="Newer", status="20", variation=7)
    older = build_item_master(context, item_number="ITM000012", description="Older", status="20", variation=6)
    assert post(listener, newer.xml).json()["status"] == "published"
    assert post(listener, newer.xml).json()["status"] == "duplicate"
    assert post(listener, older.xml).json()["status"] == "stale"
    events = item_events(kafka_bootstrap, "ITM000012", 2, timeout_s=5)
    assert [e.description for e in events] == ["Newer"]
