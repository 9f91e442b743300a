"""inventory-query as a real process on the session broker, reaching the ION simulator through token-service:
HTTP answers (M3 then cache), batches, inventory events, Kafka request/reply, and stale answers once M3 is gone.

The tests run in file order: the last one stops the ION simulator."""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.inventory_query.messages import REQUEST_TOPIC
from shared.contracts import InventoryChanged
from shared.contracts.topics import INVENTORY_CHANGED, ORDER_RESULT, dead_letter_topic
from simulators.processes import Captured, wait_until
from simulators.stack import READ, IonSim, TokenService, start_ion, start_service, start_token_service
from tests.integration.test_poison_messages import read_letters

KEYS = {"inventory-query": "key-inv-789"}


@pytest.fixture(scope="module")
def ion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IonSim]:
    sim = start_ion(tmp_path_factory.mktemp("ion-inventory"))
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def token_service(ion: IonSim, kafka_bootstrap: str) -> Iterator[TokenService]:
    service = start_token_service(ion, kafka_bootstrap, KEYS)
    yield service
    service.stop()


def service_settings(token_service: TokenService, **extra: str) -> dict[str, str]:
    return {
        "M3B_TOKEN_SERVICE_URL": token_service.url,
        "M3B_TOKEN_SERVICE_KEY": KEYS["inventory-query"],
        "M3B_ANSWER_DEADLINE_S": "2",
        "M3B_REPLY_TOPIC_PREFIX": "test.",  # the tests' fresh topics
        **extra,
    }


@pytest.fixture(scope="module")
def inventory(token_service: TokenService, kafka_bootstrap: str) -> Iterator[str]:
    process, url = start_service("inventory-query", kafka_bootstrap, service_settings(token_service))
    yield url
    process.kill_all()


def get(url: str, item: str, warehouse: str = "100", quantity: str = "1") -> httpx.Response:
    params = {"warehouse": warehouse, "quantity": quantity}
    return httpx.get(f"{url}/v1/availability/{item}", params=params, headers=READ, timeout=10)


def test_cold_lookup_asks_m3_and_the_next_is_answered_from_cache(ion: IonSim, inventory: str) -> None:
    cold = get(inventory, "ITM000001", quantity="1")
    assert cold.status_code == 200, cold.text
    first = cold.json()
    assert first["source"] == "m3"
    assert first["item"] == "ITM000001"
    assert first["warehouse"] == "100"
    assert first["currency"] == "EUR"
    assert Decimal(first["price"]) > 0
    assert first["available"] == (Decimal(first["allocatable"]) >= 1)
    calls = ion.stats()["gateway"]["accepted"]
    warm = get(inventory, "ITM000001", quantity="100000")
    assert warm.status_code == 200
    second = warm.json()
    assert (second["source"], second["on_hand"], second["as_of"]) == ("cache", first["on_hand"], first["as_of"])
    assert second["available"] is False
    assert ion.stats()["gateway"]["accepted"] == calls  # M3 was not asked again
    metrics = httpx.get(f"{inventory}/metrics", timeout=10).text
    assert 'm3bridge_inventory_cache_hits_total{figure="stock"}' in metrics
    logic = httpx.get(f"{inventory}/healthz", headers=READ, timeout=10).json()["logic"]
    assert logic["cache_ttl_s"] == 30
    assert logic["stock_figures_known"] >= 1


def test_concurrent_lookups_of_one_item_make_one_m3_call_each(ion: IonSim, inventory: str) -> None:
    calls = ion.stats()["gateway"]["accepted"]

    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10, headers=READ) as http:
            url = f"{inventory}/v1/availability/ITM000002"
            return await asyncio.gather(*(http.get(url, params={"warehouse": "200"}) for _ in range(20)))

    answers = asyncio.run(many())
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["on_hand"] for a in answers}) == 1
    assert ion.stats()["gateway"]["accepted"] - calls == 1  # one stock read; the price is from the price list


def test_unknown_item_is_404_with_m3s_message_and_bad_input_is_422(inventory: str) -> None:
    unknown = get(inventory, "NOSUCHITEM")
    assert unknown.status_code == 404
    assert "NOSUCHITEM" in unknown.json()["detail"]
    assert get(inventory, "X" * 16).status_code == 422
    assert get(inventory, "ITM000001", warehouse="1000").status_code == 422
    assert get(inventory, "ITM000001", quantity="0").status_code == 422
    anonymous = httpx.get(f"{inventory}/v1/availability/ITM000001", params={"warehouse": "100"}, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"


def test_a_batch_answers_each_line(inventory: str) -> None:
    lines = [
        {"item": "ITM000001", "warehouse": "100", "quantity": "1"},
        {"item": "ITM000003", "warehouse": "300", "quantity": "2"},
        {"item": "NOSUCHITEM", "warehouse": "100", "quantity": "1"},
    ]
    response = httpx.post(f"{inventory}/v1/availability", json={"lines": lines}, headers=READ, timeout=10)
    assert response.status_code == 200, response.text
    results = response.json()["lines"]
    assert [r["outcome"] for r in results] == ["answered", "answered", "not_found"]
    assert results[0]["source"] == "cache"
    assert results[1]["source"] == "m3"
    too_many = httpx.post(f"{inventory}/v1/availability", json={"lines": lines[:1] * 101}, headers=READ, timeout=10)
    assert too_many.status_code == 422


async def test_an_inventory_event_changes_the_next_answer(inventory: str, kafka_bootstrap: str) -> None:
    async with httpx.AsyncClient(timeout=10, headers=READ) as http:
        url = f"{inventory}/v1/availability/ITM000005"
        before = (await http.get(url, params={"warehouse": "100"})).json()
        event = InventoryChanged(
            item_number="ITM000005",
            warehouse="100",
            on_hand=Decimal(before["on_hand"]) + 1000,
            allocatable=Decimal(before["allocatable"]) + 1000,
            changed_at=datetime.now(UTC),
        )
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                INVENTORY_CHANGED.name,
                event.model_dump_json().encode(),
                key=b"ITM000005:100",
                headers=[("content-type", b"application/json")],
            )
        finally:
            await producer.stop()
        deadline = time.monotonic() + 20
        answer = before
        while time.monotonic() < deadline:
            answer = (await http.get(url, params={"warehouse": "100"})).json()
            if Decimal(answer["on_hand"]) == event.on_hand:
                break
            await asyncio.sleep(0.2)
    assert Decimal(answer["on_hand"]) == event.on_hand, answer
    assert Decimal(answer["allocatable"]) == event.allocatable
    assert answer["source"] == "cache"


async def test_a_request_naming_a_bridge_topic_as_reply_to_is_dead_lettered_and_writes_nothing_there(
    inventory: str, kafka_bootstrap: str
) -> None:
    """No confused deputy: a requester cannot make inventory-query put a message on the bridge's own topics."""
    correlation_id = uuid.uuid4().hex
    target = TopicPartition(ORDER_RESULT.name, 0)
    probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await probe.start()
    partitions = [TopicPartition(ORDER_RESULT.name, p) for p in probe.partitions_for_topic(ORDER_RESULT.name) or {0}]
    before = await probe.end_offsets(partitions)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(REQUEST_TOPIC, json.dumps({"lines": [{"item": "ITM000001", "warehouse": "100"}]})
                                     .encode(), headers=[("content-type", b"application/json"),
                                                         ("reply_to", ORDER_RESULT.name.encode()),
                                                         ("correlation_id", correlation_id.encode())])  # fmt: skip
    finally:
        await producer.stop()
    [letter] = await read_letters(kafka_bootstrap, dead_letter_topic("inventory-query").name, 1,
                                  lambda letter: correlation_id.encode() in json.dumps(letter).encode())  # fmt: skip
    assert "not a reply topic" in letter["error_message"]
    after = await probe.end_offsets(partitions)
    await probe.stop()
    assert after == before, f"something was written to {target.topic}"


async def test_kafka_request_gets_a_reply_on_its_reply_to_topic(
    inventory: str, kafka_bootstrap: str, fresh_topic: str
) -> None:
    correlation_id = uuid.uuid4().hex
    request = {
        "lines": [
            {"item": "ITM000001", "warehouse": "100", "quantity": "3"},
            {"item": "NOSUCHITEM", "warehouse": "100"},
        ]
    }
    consumer = AIOKafkaConsumer(fresh_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    await producer.start()
    try:
        await producer.send_and_wait(
            REQUEST_TOPIC,
            json.dumps(request).encode(),
            headers=[
                ("content-type", b"application/json"),
                ("reply_to", fresh_topic.encode()),
                ("correlation_id", correlation_id.encode()),
            ],
        )
        reply = await asyncio.wait_for(consumer.getone(), 30)
        await producer.send_and_wait(
            REQUEST_TOPIC, b'{"lines": "all of them"}', headers=[("reply_to", fresh_topic.encode())]
        )
        refusal = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await producer.stop()
        await consumer.stop()
    headers = {k: v.decode() for k, v in reply.headers}
    body = json.loads(reply.value)
    assert headers.get("correlation_id") == correlation_id
    assert headers.get("content-type") == "application/json"
    assert body["correlation_id"] == correlation_id
    assert [line["outcome"] for line in body["lines"]] == ["answered", "not_found"]
    assert body["lines"][0]["item"] == "ITM000001"
    assert body["lines"][0]["quantity"] == "3"
    refused = json.loads(refusal.value)
    assert refused["lines"] == []
    assert "not an availability request" in refused["error"]


def test_without_m3_the_last_known_figure_is_answered_stale_with_its_age(
    ion: IonSim, token_service: TokenService, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Its own process with a one-second TTL, so the figure is past it without a long wait.
    process: Captured
    process, url = start_service(
        "inventory-query",
        kafka_bootstrap,
        service_settings(token_service, M3B_CACHE_TTL_S="1", M3B_OUTAGE_BACKOFF_S="0"),
    )
    try:
        fresh = get(url, "ITM000006")
        assert fresh.status_code == 200
        assert fresh.json()["source"] == "m3"
        ion.stop()

        def past_its_ttl() -> tuple[httpx.Response, float] | None:
            """Until the figure is a second old it is answered from the cache; then M3 (gone) is asked."""
            started = time.monotonic()
            answer = get(url, "ITM000006")
            took = time.monotonic() - started
            return None if answer.status_code == 200 and answer.json()["source"] == "cache" else (answer, took)

        stale, took = wait_until("the cached figure to pass its TTL", past_its_ttl, 30)
        assert took < 5  # the answer deadline, not the Gateway's timeout
        assert stale.status_code == 200, stale.text
        body = stale.json()
        assert (body["source"], body["on_hand"], body["as_of"]) == (
            "stale",
            fresh.json()["on_hand"],
            fresh.json()["as_of"],
        )
        assert body["age_s"] >= 1  # past the TTL, which is why it is stale
        never_seen = get(url, "ITM000007")
        assert never_seen.status_code == 503
        assert "no stock figure is known" in never_seen.json()["detail"]
    finally:
        process.kill_all()
