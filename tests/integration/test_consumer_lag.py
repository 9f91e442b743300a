"""A consumer group's backlog measured from the broker (shared/platform/consumer_lag.py), against the real broker: what
was written and not committed, per partition, whether a member holds the partition or not."""

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from shared.platform.consumer_lag import ConsumerLag
from shared.platform.settings import BridgeSettings


async def test_the_backlog_is_what_the_group_has_not_committed_per_partition(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(5):
            await producer.send_and_wait(fresh_topic, f"quote {n}".encode(), partition=0)
        for n in range(2):
            await producer.send_and_wait(fresh_topic, f"quote {n}".encode(), partition=1)
    finally:
        await producer.stop()
    group = f"test.lag.{uuid.uuid4().hex[:8]}"
    # The group committed 3 of partition 0's 5 messages and left; it never committed partition 1.
    committer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(fresh_topic, 0)])
        await committer.commit({TopicPartition(fresh_topic, 0): OffsetAndMetadata(3, "")})
    finally:
        await committer.stop()

    settings = BridgeSettings(kafka_bootstrap_servers=kafka_bootstrap, service_name="test")
    lag = ConsumerLag(settings, [(group, fresh_topic)])
    measured = {m.partition: (m.end, m.committed, m.lag) for m in await lag.measure()}
    assert measured == {0: (5, 3, 2), 1: (2, 0, 2), 2: (0, 0, 0), 3: (0, 0, 0)}
    assert lag.describe() == {f"{group}/{fresh_topic}": 4}
    exported = REGISTRY.get_sample_value(
        "m3bridge_consumer_lag", {"group": group, "topic": fresh_topic, "partition": "0"}
    )
    assert exported == 2
