"""Dead letters: a message a service could not process, kept with its error and origin for listing and replay."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, Literal

from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage

from shared.contracts import DeadLetter
from shared.kafka import publish
from shared.metrics import messages_dead_lettered
from shared.topics import dead_letter_topic


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
    record: Any = message.raw_message
    key = record.key.decode(errors="replace") if getattr(record, "key", None) else None
    payload, encoding = payload_text(bytes(message.body or b""))
    return DeadLetter(
        service=service,
        origin_topic=str(getattr(record, "topic", "")),
        origin_partition=int(getattr(record, "partition", 0)),
        origin_offset=int(getattr(record, "offset", 0)),
        original_key=key,
        original_headers={k: str(v) for k, v in message.headers.items()},
        original_payload=payload,
        original_payload_encoding=encoding,
        error_class=error_class,
        error_message=error_message[:4000],
        details=details or {},
        attempts=attempts,
        failed_at=datetime.now(UTC),
    )


async def send_to_dead_letters(broker: KafkaBroker, letter: DeadLetter, *, max_bytes: int) -> None:
    await publish(broker, dead_letter_topic(letter.service), letter, key=letter.original_key or "", max_bytes=max_bytes)
    messages_dead_lettered.labels(letter.service, letter.origin_topic, letter.error_class).inc()
