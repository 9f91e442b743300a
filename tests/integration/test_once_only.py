"""Once only, and nothing lost, with the real processes: quote-ingest and bod-listener as services on the session's
broker and PostgreSQL, the QuoteWerks simulator as its own process.

- 200 concurrent deliveries of one approval (one BOD) give exactly one 202 and exactly one message.
- An approval whose webhook fails (here: QuoteWerks sends a wrong secret) is published by the safety-net poll.
- An unusable BOD is kept with the inbound topic as its origin; a replay sends it there and bod-listener takes
  it up again (the same step as for HTTP); any BOD on the inbound topic is processed like an HTTP delivery.

Quotes here are `ONCQ…` (the simulator's prefix set for this module), items unique per test, so counting the
messages of one key is exact however many other tests share the broker.
"""

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from m3bridge import dead_letters
from m3bridge.tansu import free_port
from shared.contracts import DeadLetter, ItemChanged, QuoteApproved
from shared.contracts.topics import BOD_INBOUND, ITEM_CHANGED, QUOTE_APPROVED
from shared.platform.kafka import MessageTooLargeError, create_broker, publish_raw
from shared.platform.metrics import messages_published
from shared.platform.settings import BridgeSettings
from simulators.ion.bods import BodContext, Encoding, build_item_master, ims_message
from simulators.processes import Captured, wait_until
from simulators.stack import READ, QuoteWerksSim, start_quotewerks, start_service

SECRET = "webhook-secret-for-tests"
BOD_SECRET = "bod-secret-for-tests"
BOD_HEADER = "X-M3Bridge-BOD-Secret"
CONCURRENT = 200


@pytest.fixture(scope="module")
def quotewerks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[QuoteWerksSim, int]]:
    """The simulator, its webhook pointed at quote-ingest's port but with a wrong secret: every webhook fails."""
    config = tmp_path_factory.mktemp("qw") / "qw.json"
    config.write_text(json.dumps({"doc_prefix": "ONC"}))
    port = free_port()
    sim = start_quotewerks(f"http://127.0.0.1:{port}/webhooks/quotewerks", "not-the-secret", config_file=config)
    yield sim, port
    sim.stop()


def ingest_settings(sim: QuoteWerksSim, state_url: str, **extra: str) -> dict[str, str]:
    return {
        "M3B_STATE_URL": state_url, "M3B_QUOTEWERKS_URL": sim.url, "M3B_QUOTEWERKS_API_KEY": sim.api_key,
        "M3B_WEBHOOK_SECRET": SECRET, **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def webhook_ingest(
    quotewerks: tuple[QuoteWerksSim, int], kafka_bootstrap: str, module_postgres_url: str
) -> Iterator[tuple[Captured, str]]:
    """quote-ingest on webhooks only (the poll would win the race for the approval otherwise)."""
    sim, port = quotewerks
    settings = ingest_settings(sim, module_postgres_url, M3B_POLL_INTERVAL_S="0")
    process, url = start_service("quote-ingest", kafka_bootstrap, settings, port=port)
    yield process, url
    process.kill_all()


@pytest.fixture(scope="module")
def bod_listener(kafka_bootstrap: str, module_postgres_url: str) -> Iterator[tuple[Captured, str]]:
    settings = {"M3B_STATE_URL": module_postgres_url, "M3B_BOD_SECRET": BOD_SECRET}
    process, url = start_service("bod-listener", kafka_bootstrap, settings)
    yield process, url
    process.kill_all()


async def _records(bootstrap: str, topic: str, key: str, *, at_least: int = 0, timeout_s: float = 30) -> list[Any]:
    """The messages with `key` on `topic`: all of them up to the end offsets as they are now, and (with
    `at_least`) further ones until that many arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # metadata of every topic
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        assert partitions, f"no topic {topic}"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found: list[ConsumerRecord[bytes, bytes]] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in partitions])

        async with asyncio.timeout(timeout_s):
            while await behind() or len(found) < at_least:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found += [r for r in records if r.key == key.encode()]
        return found
    finally:
        await consumer.stop()


def records(bootstrap: str, topic: str, key: str, *, at_least: int = 0) -> list[Any]:
    return asyncio.run(_records(bootstrap, topic, key, at_least=at_least))


async def _fire(url: str, bodies: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        return list(await asyncio.gather(*(http.post(url, content=body, headers=headers) for body, headers in bodies)))


def fire(url: str, body: bytes, headers: dict[str, str], count: int) -> list[httpx.Response]:
    run = uuid.uuid4().hex[:8]
    bodies = [(body, {**headers, "X-Correlation-ID": f"once-{run}-{n}"}) for n in range(count)]
    return asyncio.run(_fire(url, bodies))


def test_200_concurrent_deliveries_of_one_approval_give_one_202_and_one_message(
    quotewerks: tuple[QuoteWerksSim, int], webhook_ingest: tuple[Captured, str], kafka_bootstrap: str
) -> None:
    sim, _ = quotewerks
    sim.api("POST", "documents/ONCQ1001/approve")  # its webhook carries the wrong secret: refused
    body = json.dumps({"event": "QuoteValet.Accepted", "tenant": "QW-100001", "DocNo": "ONCQ1001"}).encode()
    headers = {"Content-Type": "application/json", "X-M3Bridge-Webhook-Secret": SECRET}
    responses = fire(f"{webhook_ingest[1]}/webhooks/quotewerks", body, headers, CONCURRENT)
    statuses = sorted(r.status_code for r in responses)
    # The others are duplicates, answered 200 (a 409 would make QuoteWerks deliver them again).
    assert statuses == [200] * (CONCURRENT - 1) + [202], {s: statuses.count(s) for s in set(statuses)}
    assert {r.json()["status"] for r in responses if r.status_code == 200} == {"duplicate"}
    found = records(kafka_bootstrap, QUOTE_APPROVED.name, "ONCQ1001")
    assert len(found) == 1, f"{len(found)} messages for one approval"
    assert QuoteApproved.model_validate_json(found[0].value).approval_event == "QuoteValet.Accepted"


def poller_figures(url: str) -> dict[str, Any]:
    figures: dict[str, Any] = httpx.get(f"{url}/healthz", headers=READ, timeout=5).json()["logic"]["poller"]
    return figures


def test_an_approval_whose_webhook_failed_is_published_by_the_poll(
    quotewerks: tuple[QuoteWerksSim, int],
    webhook_ingest: tuple[Captured, str],
    kafka_bootstrap: str,
    module_postgres_url: str,
) -> None:
    sim, _ = quotewerks
    settings = ingest_settings(sim, module_postgres_url, M3B_POLL_INTERVAL_S="0.5")
    process, url = start_service("quote-ingest", kafka_bootstrap, settings)
    try:
        sim.api("POST", "documents/ONCQ1006/approve")
        [approval] = records(kafka_bootstrap, QUOTE_APPROVED.name, "ONCQ1006", at_least=1)
        assert QuoteApproved.model_validate_json(approval.value).approval_event == "poller"
        webhooks = sim.api("GET", "webhooks")["webhooks"]
        attempts = [d for w in webhooks for d in sim.api("GET", f"webhooks/{w['ID']}/deliveries")["deliveries"]]
        refused = [d for d in attempts if d["DocNo"] == "ONCQ1006"]
        assert refused, "the simulator sent the webhook"
        assert all(d["StatusCode"] == 401 for d in refused), refused
        # Two more polls after it: the approval (and ONCQ1001's, published by webhook) stays one message each.
        after = poller_figures(url)["polls"]
        wait_until("two more polls", lambda: poller_figures(url)["polls"] >= after + 2, 30, dump=lambda: process.output)
        assert poller_figures(url)["failures"] == 0, poller_figures(url)
        assert len(records(kafka_bootstrap, QUOTE_APPROVED.name, "ONCQ1006")) == 1
        assert len(records(kafka_bootstrap, QUOTE_APPROVED.name, "ONCQ1001")) == 1
    finally:
        process.kill_all()


def item() -> str:
    return f"T{uuid.uuid4().hex[:8].upper()}"


def test_200_concurrent_deliveries_of_one_bod_give_one_202_and_one_event(
    bod_listener: tuple[Captured, str], kafka_bootstrap: str
) -> None:
    number = item()
    bod = build_item_master(BodContext(), item_number=number, description="Once", status="20")
    headers = {"Content-Type": "application/xml", BOD_HEADER: BOD_SECRET}
    responses = fire(f"{bod_listener[1]}/bods", bod.xml, headers, CONCURRENT)
    answers = sorted((r.status_code, r.json()["status"]) for r in responses)
    assert answers == [(200, "duplicate")] * (CONCURRENT - 1) + [(202, "published")], set(answers)
    found = records(kafka_bootstrap, ITEM_CHANGED.name, number)
    assert [ItemChanged.model_validate_json(r.value).description for r in found] == ["Once"]


def test_200_concurrent_ims_messages_of_one_bod_give_one_published_and_one_event(
    bod_listener: tuple[Captured, str], kafka_bootstrap: str
) -> None:
    """As ION delivers: IMS v3 messages, half of them redeliveries of one messageId, the others new messages of the
    same BOD. Both claims (messageId, BODID) hold under concurrency: exactly one is published."""
    number = item()
    bod = build_item_master(BodContext(), item_number=number, description="Once via IMS", status="20")
    redelivered = uuid.uuid4().hex
    bodies = []
    for n in range(CONCURRENT):
        message_id = redelivered if n % 2 else uuid.uuid4().hex
        encoding: Encoding = "BASE64" if n % 3 else "NONE"
        body, content_type = ims_message(
            bod, message_id=message_id, encoding=encoding, from_logical_id="lid://infor.m3.m3", to_logical_id="lid://x"
        )
        bodies.append((body, {"Content-Type": content_type, BOD_HEADER: BOD_SECRET}))
    responses = asyncio.run(_fire(f"{bod_listener[1]}/ims/v3/multipartMessage", bodies))
    answers = sorted((r.status_code, r.json()["outcome"]) for r in responses)
    assert answers == [(202, "duplicate")] * (CONCURRENT - 1) + [(202, "published")], set(answers)
    found = records(kafka_bootstrap, ITEM_CHANGED.name, number)
    assert [ItemChanged.model_validate_json(r.value).description for r in found] == ["Once via IMS"]


def test_a_bod_on_the_inbound_topic_is_processed_like_an_http_delivery(
    bod_listener: tuple[Captured, str], kafka_bootstrap: str
) -> None:
    number = item()
    bod = build_item_master(BodContext(), item_number=number, description="From the topic", status="20")

    async def send() -> None:
        broker = create_broker(BridgeSettings(kafka_bootstrap_servers=kafka_bootstrap, service_name="test"))
        async with broker:
            await broker.start()
            with pytest.raises(MessageTooLargeError):  # the same limit as for every other message
                await publish_raw(broker, BOD_INBOUND, b"<x>" + b"a" * 2000 + b"</x>", key=None, max_bytes=1024)
            claimed = {"content-type": "application/json"}  # read as XML whatever content type is claimed
            await publish_raw(broker, BOD_INBOUND, bod.xml, key=bod.bod_id, headers=claimed)

    counted = messages_published.labels(BOD_INBOUND.name, "ok")
    before = counted._value.get()

    asyncio.run(send())
    assert counted._value.get() == before + 1, "counted like every publication"
    found = records(kafka_bootstrap, ITEM_CHANGED.name, number, at_least=1)
    assert [ItemChanged.model_validate_json(r.value).description for r in found] == ["From the topic"]
    # The same BOD over HTTP afterwards is the same delivery.
    headers = {"Content-Type": "application/xml", BOD_HEADER: BOD_SECRET}
    assert httpx.post(f"{bod_listener[1]}/bods", content=bod.xml, headers=headers).json()["status"] == "duplicate"


def letters(bootstrap: str) -> list[dead_letters.Found]:
    return asyncio.run(
        dead_letters.read_all(BridgeSettings(kafka_bootstrap_servers=bootstrap), "bod-listener", idle_s=1)
    )


def test_an_unusable_bod_is_replayed_to_the_inbound_topic_and_taken_up_again(
    bod_listener: tuple[Captured, str], kafka_bootstrap: str
) -> None:
    # Not UTF-8 (kept as base64) and of a noun the bridge does not read.
    body = f'<?xml version="1.0" encoding="ISO-8859-1"?><SyncShipment id="{uuid.uuid4()}">'.encode() + (
        b"Caf\xe9</SyncShipment>"
    )
    headers = {"Content-Type": "application/xml", BOD_HEADER: BOD_SECRET}
    answer = httpx.post(f"{bod_listener[1]}/bods", content=body, headers=headers, timeout=10)
    assert (answer.status_code, answer.json()["status"]) == (202, "dead-lettered"), answer.text
    [kept] = [f for f in letters(kafka_bootstrap) if dead_letters.original_bytes(f.letter) == body]
    assert kept.letter.origin_topic == BOD_INBOUND.name
    assert kept.letter.original_payload_encoding == "base64"
    assert kept.letter.details["received_via"] == "http"

    settings = BridgeSettings(kafka_bootstrap_servers=kafka_bootstrap, service_name="m3bridge-cli")
    assert asyncio.run(dead_letters.replay(settings, "bod-listener", [kept])) == 1

    def replayed() -> list[dead_letters.Found]:
        return [
            f for f in letters(kafka_bootstrap)
            if dead_letters.original_bytes(f.letter) == body and f.letter.details.get("received_via") == "kafka"
        ]  # fmt: skip

    again = wait_until(
        "the replayed BOD dead-lettered again", replayed, 30, dump=lambda: bod_listener[0].output[-3000:]
    )
    [letter] = [f.letter for f in again]
    assert letter.origin_topic == BOD_INBOUND.name
    assert letter.original_headers[dead_letters.REPLAY_HEADER].startswith("dlq.bod-listener.v1:")
    assert letter.error_class == kept.letter.error_class


def test_dead_letters_of_bods_received_before_the_inbound_topic_are_replayed_to_it() -> None:
    letter = DeadLetter(
        service="bod-listener", origin_topic="http:/bods", origin_partition=0, origin_offset=0,
        original_payload="<x/>", error_class="malformed", error_message="bad", attempts=1, failed_at=datetime.now(UTC),
    )  # fmt: skip
    assert dead_letters.replay_topic(letter) == BOD_INBOUND
    assert dead_letters.replay_topic(letter.model_copy(update={"origin_topic": QUOTE_APPROVED.name})) == QUOTE_APPROVED
