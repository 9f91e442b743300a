"""What `m3bridge topics` asks the broker for: the dead-letter topics' retention and the services' connection."""

from typing import Any

import pytest

import shared.contracts.topics
from shared.contracts.topics import (
    ALL_TOPICS,
    DEAD_LETTER_SERVICES,
    DEFAULT_DEAD_LETTER_RETENTION_MS,
    QUOTE_APPROVED,
    dead_letter_topic,
    ensure_topics,
    is_dead_letter_topic,
    new_topics,
)

pytestmark = pytest.mark.unit
THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000


def test_the_dead_letter_topics_are_created_with_a_long_retention_and_the_others_with_the_defaults() -> None:
    assert DEFAULT_DEAD_LETTER_RETENTION_MS == THIRTY_DAYS_MS
    requests = {
        request.name: request
        for request in new_topics(ALL_TOPICS, partitions=6, replication=3, dead_letter_retention_ms=THIRTY_DAYS_MS)
    }
    dead_letters = {dead_letter_topic(service).name for service in DEAD_LETTER_SERVICES}
    assert dead_letters == {t.name for t in ALL_TOPICS if is_dead_letter_topic(t)}
    assert set(requests) == {t.name for t in ALL_TOPICS}
    for name, request in requests.items():
        assert (request.num_partitions, request.replication_factor) == (6, 3)
        expected = {"retention.ms": str(THIRTY_DAYS_MS)} if name in dead_letters else {}
        assert request.topic_configs == expected, name


def test_the_retention_is_configurable_and_minus_one_keeps_them_forever() -> None:
    [request] = new_topics(
        (dead_letter_topic("order-writer"),), partitions=1, replication=1, dead_letter_retention_ms=-1
    )
    assert request.topic_configs == {"retention.ms": "-1"}
    assert not is_dead_letter_topic(QUOTE_APPROVED)


class FakeAdmin:
    created: list[Any]
    options: dict[str, Any]

    def __init__(self, **options: Any) -> None:
        FakeAdmin.options = options

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return [QUOTE_APPROVED.name]

    async def create_topics(self, requests: list[Any]) -> Any:
        FakeAdmin.created = requests

        class Response:
            topic_errors = [(request.name, 0, None) for request in requests]

        return Response()


async def test_ensure_topics_sends_the_configs_over_the_given_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared.contracts.topics, "AIOKafkaAdminClient", FakeAdmin)
    security = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_plain_username": "u"}
    letters = dead_letter_topic("bod-listener")
    created = await ensure_topics(
        "kafka:9092",
        partitions=2,
        replication=1,
        topics=(QUOTE_APPROVED, letters),
        client_options=security,
        dead_letter_retention_ms=5000,
    )
    assert created == [letters.name]
    assert FakeAdmin.options == {"bootstrap_servers": "kafka:9092", **security, "client_id": "m3bridge-topics"}
    [request] = FakeAdmin.created
    assert (request.name, request.topic_configs) == (letters.name, {"retention.ms": "5000"})
