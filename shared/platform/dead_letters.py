"""Dead letters: a message a service could not process, kept with its error and origin for listing and replay."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Self

from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage

from shared.contracts import DeadLetter
from shared.contracts.topics import dead_letter_topic
from shared.platform.kafka import publish
from shared.platform.metrics import messages_dead_lettered


def payload_text(body: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """The body as a dead letter keeps it: the text itself when it is UTF-8, else its base64."""
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def dead_letter(
    message: KafkaMessage,
    *,
    service: str,
    error_class: str,
    error_message: str,
    attempts: int,
    details: dict[str, Any] | None = None,
) -> DeadLetter:
    """The dead letter of a consumed Kafka message, with its origin (topic, partition, offset, key, headers)."""
    return letter_of(
        bytes(message.body or b""),
        service=service,
        error_class=error_class,
        error_message=error_message,
        attempts=attempts,
        details=details,
        origin=Origin.of_message(message),
    )


@dataclass(frozen=True)
class Origin:
    """Where a message came from: a Kafka record's coordinates, or none (`topic` empty) for an HTTP delivery."""

    topic: str = ""
    partition: int = 0
    offset: int = 0
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of_message(cls, message: KafkaMessage, **more: Any) -> Self:
        """The coordinates of a consumed record; `more` sets a subclass's own fields."""
        record: Any = message.raw_message
        return cls(
            topic=str(getattr(record, "topic", "")),
            partition=int(getattr(record, "partition", 0)),
            offset=int(getattr(record, "offset", 0)),
            key=record.key.decode(errors="replace") if getattr(record, "key", None) else None,
            headers={k: str(v) for k, v in message.headers.items()},
            **more,
        )


def letter_of(
    body: bytes,
    *,
    service: str,
    error_class: str,
    error_message: str,
    origin: Origin,
    attempts: int = 1,
    details: Mapping[str, Any] | None = None,
    payload_limit: int | None = None,
) -> DeadLetter:
    """The dead letter of `body`, however it arrived. With `payload_limit` the kept payload is cut to that many
    characters and `details["truncated"]` says whether it was (for bodies read off HTTP, which may be larger than a
    Kafka message can be)."""
    payload, encoding = payload_text(body)
    extra: dict[str, Any] = dict(details or {})
    if payload_limit is not None:
        extra["truncated"] = len(payload) > payload_limit
        payload = payload[:payload_limit]
    return DeadLetter(
        service=service,
        origin_topic=origin.topic,
        origin_partition=origin.partition,
        origin_offset=origin.offset,
        original_key=origin.key,
        original_headers=dict(origin.headers),
        original_payload=payload,
        original_payload_encoding=encoding,
        error_class=error_class,
        error_message=error_message[:4000],
        details=extra,
        attempts=attempts,
        failed_at=datetime.now(UTC),
    )


async def send_to_dead_letters(broker: KafkaBroker, letter: DeadLetter, *, max_bytes: int) -> None:
    await publish(broker, dead_letter_topic(letter.service), letter, key=letter.original_key or "", max_bytes=max_bytes)
    messages_dead_lettered.labels(letter.service, letter.origin_topic, letter.error_class).inc()
