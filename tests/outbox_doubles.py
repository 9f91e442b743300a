"""A real outbox whose publisher keeps what it is given instead of needing a broker (and can fail on demand)."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts.topics import Topic
from shared.platform.outbox import Outbox

M = TypeVar("M", bound=BaseModel)


class KeptMessages:
    """A RawPublisher: each message as (topic name, payload decoded by the topic's model or the bytes of a raw
    document, key); the first
    `failures` calls raise ConnectionError, as a broker that is away."""

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[str, BaseModel | bytes, str | None]] = []
        self.headers: list[dict[str, str]] = []
        self.failures = failures
        self.arrived = asyncio.Event()  # set by each message taken

    async def __call__(self, topic: Topic, body: bytes, key: str | None, headers: dict[str, str]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker not reachable")
        decoded = topic.payload.model_validate_json(body) if topic.content_type == "application/json" else body
        self.sent.append((topic.name, decoded, key))
        self.headers.append(headers)
        self.arrived.set()

    def keys(self) -> list[str]:
        return [key or "" for _, _, key in self.sent]

    def payloads(self, model: type[M], *, key: str | None = None) -> list[M]:
        """The payloads of type `model` kept (those sent with `key`)."""
        return [p for _, p, k in self.sent if isinstance(p, model) and (key is None or k == key)]


def kept_outbox(engine: AsyncEngine, failures: int = 0) -> tuple[Outbox, KeptMessages]:
    kept = KeptMessages(failures)
    return Outbox(engine, kept, max_bytes=1_048_576), kept
