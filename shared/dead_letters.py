"""Dead letters: a message a service could not process, kept with its error and origin for listing and replay."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage

from shared.contracts import DeadLetter
from shared.kafka import publish
from shared.topics import dead_letter_topic


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
    return DeadLetter(
        service=service,
        origin_topic=str(getattr(record, "topic", "")),
        origin_partition=int(getattr(record, "partition", 0)),
        origin_offset=int(getattr(record, "offset", 0)),
        original_key=key,
        original_headers={k: str(v) for k, v in message.headers.items()},
        original_payload=message.body.decode(errors="replace"),
        error_class=error_class,
        error_message=error_message[:4000],
        details=details or {},
        attempts=attempts,
        failed_at=datetime.now(UTC),
    )


async def send_to_dead_letters(broker: KafkaBroker, letter: DeadLetter, *, max_bytes: int) -> None:
    await publish(broker, dead_letter_topic(letter.service), letter, key=letter.original_key or "", max_bytes=max_bytes)
