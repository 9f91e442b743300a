"""faststream and our Kafka wiring against the real (Tansu) broker."""

import asyncio
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from faststream import AckPolicy
from faststream.kafka import KafkaMessage

from shared.contracts import Heartbeat
from shared.contracts.topics import ALL_TOPICS, HEARTBEAT, Topic, dead_letter_topic, ensure_topics
from shared.platform.correlation import KAFKA_HEADER, SOURCE_HEADER, bind_correlation_id
from shared.platform.kafka import consumer_options, create_broker, publish
from shared.platform.settings import BridgeSettings


def settings_for(bootstrap: str, name: str) -> BridgeSettings:
    return BridgeSettings(service_name=name, kafka_bootstrap_servers=bootstrap)


def beat(service: str, n: int) -> Heartbeat:
    now = datetime.now(UTC)
    return Heartbeat(service=service, instance=str(n), version="t", started_at=now, sent_at=now, ready=True)


async def test_publish_subscribe_with_keys_and_headers(kafka_bootstrap: str, fresh_topic: str) -> None:
    topic = Topic(fresh_topic, Heartbeat, "service", "test")
    broker = create_broker(settings_for(kafka_bootstrap, "producer-svc"))
    received: list[tuple[bytes | None, dict[str, str], Heartbeat]] = []
    done = asyncio.Event()

    @broker.subscriber(
        fresh_topic,
        **consumer_options(settings_for(kafka_bootstrap, "x"), "g-keys"),
        ack_policy=AckPolicy.ACK,
    )
    async def handle(body: Heartbeat, message: KafkaMessage) -> None:
        assert not isinstance(message.raw_message, tuple)  # one record, not a batch
        received.append((message.raw_message.key, dict(message.headers), body))
        if len(received) == 20:
            done.set()

    async with broker:
        await broker.start()
        bind_correlation_id("trace-xyz")
        for n in range(20):
            await publish(broker, topic, beat(f"svc-{n % 3}", n), key=f"svc-{n % 3}")
        await asyncio.wait_for(done.wait(), 30)

    keys = {key for key, _, _ in received}
    assert keys == {b"svc-0", b"svc-1", b"svc-2"}
    for key, headers, body in received:
        assert key is not None
        assert body.service == key.decode()
        assert headers[KAFKA_HEADER] == "trace-xyz"
        assert headers[SOURCE_HEADER] == "producer-svc"
        assert headers["content-type"] == "application/json"
    # Per-key order: within a key, instances arrive in the order sent.
    for service in ("svc-0", "svc-1", "svc-2"):
        sent_order = [int(b.instance) for k, _, b in received if k == service.encode()]
        assert sent_order == sorted(sent_order)


async def test_correlation_id_flows_from_consumed_to_published(kafka_bootstrap: str, fresh_topic: str) -> None:
    """A handler's own publishes carry the correlation id of the message it is handling."""
    first = Topic(fresh_topic, Heartbeat, "service", "in")
    second = Topic(fresh_topic + ".out", Heartbeat, "service", "out")
    await ensure_topics(kafka_bootstrap, partitions=1, replication=1, topics=(second,))
    relay = create_broker(settings_for(kafka_bootstrap, "relay-svc"))

    @relay.subscriber(
        first.name,
        **consumer_options(settings_for(kafka_bootstrap, "x"), "g-relay"),
        ack_policy=AckPolicy.ACK,
    )
    async def forward(body: Heartbeat) -> None:
        await publish(relay, second, body, key=body.service)

    producer = create_broker(settings_for(kafka_bootstrap, "origin-svc"))
    async with relay, producer:
        await relay.start()
        await producer.start()
        await producer.publish(
            beat("a", 1).model_dump_json().encode(),
            topic=first.name,
            key=b"a",
            headers={KAFKA_HEADER: "from-outside"},
        )
        consumer = AIOKafkaConsumer(second.name, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()
    headers = {k: v.decode() for k, v in record.headers}
    assert headers[KAFKA_HEADER] == "from-outside"
    assert headers[SOURCE_HEADER] == "relay-svc"


async def test_committed_offsets_survive_a_consumer_restart(kafka_bootstrap: str, fresh_topic: str) -> None:
    topic = Topic(fresh_topic, Heartbeat, "service", "test")
    settings = settings_for(kafka_bootstrap, "svc")

    async def consume_until(expected: int) -> list[str]:
        broker = create_broker(settings)
        seen: list[str] = []
        enough = asyncio.Event()

        @broker.subscriber(fresh_topic, **consumer_options(settings, "g-restart"), ack_policy=AckPolicy.ACK)
        async def handle(body: Heartbeat) -> None:
            seen.append(body.instance)
            if len(seen) >= expected:
                enough.set()

        async with broker:
            await broker.start()
            await asyncio.wait_for(enough.wait(), 30)
        return seen

    producer = create_broker(settings)
    async with producer:
        await producer.start()
        for n in range(5):
            await publish(producer, topic, beat("a", n), key="a")
        assert await consume_until(5) == ["0", "1", "2", "3", "4"]
        for n in range(5, 8):
            await publish(producer, topic, beat("a", n), key="a")
    assert await consume_until(3) == ["5", "6", "7"]


async def test_ensure_topics_is_idempotent(kafka_bootstrap: str) -> None:
    assert await ensure_topics(kafka_bootstrap, partitions=4, replication=1) == []
    extra = Topic("test.ensure.once.v1", Heartbeat, "k", "d")
    assert await ensure_topics(kafka_bootstrap, partitions=2, replication=1, topics=(extra,)) == [extra.name]
    assert await ensure_topics(kafka_bootstrap, partitions=2, replication=1, topics=(extra, *ALL_TOPICS)) == []


async def topic_config(bootstrap: str, name: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    [(error_code, _, _, resource_name, entries)] = response.resources
    assert (error_code, resource_name) == (0, name)
    return {entry[0]: entry[1] for entry in entries}


async def test_dead_letter_topics_are_created_with_their_retention(kafka_bootstrap: str) -> None:
    """The broker keeps the topic config (Tansu stores and describes it, it does not enforce retention)."""
    letters = dead_letter_topic("retention-test")
    other = Topic("test.retention.plain.v1", Heartbeat, "k", "d")
    created = await ensure_topics(
        kafka_bootstrap, partitions=1, replication=1, topics=(letters, other), dead_letter_retention_ms=2_592_000_000
    )
    assert sorted(created) == sorted([letters.name, other.name])
    assert (await topic_config(kafka_bootstrap, letters.name)).get("retention.ms") == "2592000000"
    # Others keep the broker's default (Tansu describes none, Apache Kafka its log.retention).
    assert (await topic_config(kafka_bootstrap, other.name)).get("retention.ms") != "2592000000"


def test_heartbeat_topic_is_registered() -> None:
    assert HEARTBEAT in ALL_TOPICS


async def test_a_service_names_the_topics_it_reads_that_do_not_exist(kafka_bootstrap: str, fresh_topic: str) -> None:
    """No warning for topics that exist (faststream's blanket "auto create topics is disabled" is dropped); one line
    naming the missing ones."""
    import logging
    import uuid

    from shared.platform.runtime import ServiceRuntime
    from tests.log_records import records_of

    missing = f"test.missing.{uuid.uuid4().hex[:8]}.v1"
    runtime = ServiceRuntime(
        BridgeSettings(service_name="svc-topics", kafka_bootstrap_servers=kafka_bootstrap), description="test"
    )
    for name in (fresh_topic, missing):
        runtime.subscriber(Topic(name, Heartbeat, "service", "test"), group=f"g-{uuid.uuid4().hex[:6]}",
                           title=f"svc-topics/{name}", description="test")(_ignore)  # fmt: skip
    with records_of("shared.platform.runtime", logging.WARNING) as seen:
        async with runtime._lifespan(runtime.app):
            pass
    said = [r.getMessage() for r in seen if "do not exist" in r.getMessage()]
    assert said == [f"topics {missing} do not exist: this service waits for them (create them with `m3bridge topics`)"]


async def _ignore(_beat: Heartbeat, _message: KafkaMessage) -> None:
    return None
