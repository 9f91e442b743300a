"""A service keeping a consumed message it cannot process in `dlq.<service>.v1` (trimmed when the letter would be too
large), and, for a change a person can retry, on the work queue too."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage

from shared.contracts import Problem
from shared.platform.dead_letters import dead_letter, send_to_dead_letters
from shared.platform.kafka import MessageTooLargeError
from shared.platform.settings import BridgeSettings
from shared.platform.work_queue import ChangeWorkQueue

log = logging.getLogger("shared.platform.runtime")


class DeadLettering:
    """Part of `ServiceRuntime`: its broker, settings and work queue."""

    settings: BridgeSettings
    broker: KafkaBroker
    work_queue: ChangeWorkQueue

    async def dead_letter(
        self,
        message: KafkaMessage,
        *,
        error_class: str,
        problems: Sequence[Problem] = (),
        error_message: str = "",
        attempts: int = 1,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Keep a consumed message this service cannot process in `dlq.<service>.v1`, with the reason a person
        needs (the problems' messages unless `error_message` says it), to be listed and replayed."""
        extra = {"problems": [p.model_dump() for p in problems]} if problems else {}
        letter = dead_letter(
            message,
            service=self.settings.service_name,
            error_class=error_class,
            error_message=error_message or "; ".join(p.message for p in problems) or error_class,
            attempts=attempts,
            details={**(details or {}), **extra},
        )
        max_bytes = self.settings.kafka_max_request_size
        try:
            await send_to_dead_letters(self.broker, letter, max_bytes=max_bytes)
        except MessageTooLargeError:
            # The original (close to the size limit, or base64 of one) does not fit into a letter: keep the
            # letter without it rather than loop; its origin says where the original is.
            size = len(message.body or b"")
            log.warning("dead letter of %s@%s too large: kept without its %d-byte payload", letter.origin_topic,
                        letter.origin_offset, size)  # fmt: skip
            trimmed = letter.model_copy(
                update={
                    "original_payload": "",
                    "original_payload_encoding": "utf-8",
                    "details": {**letter.details, "payload_omitted": f"{size} bytes, larger than a dead letter"},
                }
            )
            await send_to_dead_letters(self.broker, trimmed, max_bytes=max_bytes)
        await self.work_queue.dead_lettered(message, error_class=error_class, reason=letter.error_message)

    async def _dead_letter_raw(
        self,
        message: Any,
        *,
        error_class: str,
        error_message: str,
        attempts: int,
        details: Mapping[str, Any] | None,
    ) -> None:
        await self.dead_letter(
            message, error_class=error_class, error_message=error_message, attempts=attempts, details=details
        )
