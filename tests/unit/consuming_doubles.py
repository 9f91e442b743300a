"""Doubles for the shared.platform.consuming tests (test_consuming*.py): a message, the dead letters sent, the sleeps
taken, and a consumer wired to them with a small retry policy."""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from faststream import AckPolicy
from pydantic import BaseModel

from shared.platform.consuming import (
    Consumer,
    Consumers,
    RetryPolicy,
)


class Order(BaseModel):
    doc_no: str
    quantity: int


class FlakyError(Exception):
    retryable = True


class RefusedError(Exception):
    retryable = False


@dataclass
class FakeMessage:
    body: bytes
    offset: int = 7
    headers: dict[str, str] = field(default_factory=lambda: {"correlation-id": "c-1"})
    correlation_id: str = "c-1"
    acked: int = 0

    @property
    def raw_message(self) -> SimpleNamespace:
        return SimpleNamespace(topic="orders.v1", partition=2, offset=self.offset, key=b"k-1")

    async def ack(self) -> None:
        self.acked += 1


@dataclass
class Letters:
    sent: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    async def __call__(
        self,
        message: Any,
        *,
        error_class: str,
        error_message: str,
        attempts: int,
        details: Mapping[str, Any] | None,
    ) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.sent.append(
            {"message": message, "class": error_class, "text": error_message, "attempts": attempts, **(details or {})}
        )


@dataclass
class Sleeps:
    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


SMALL = RetryPolicy(max_attempts=4, initial_s=0.1, max_s=0.3)


def consumer_for(
    handler: Any,
    letters: Letters,
    *,
    ack_policy: AckPolicy = AckPolicy.NACK_ON_ERROR,
    policy: RetryPolicy = SMALL,
    sleep: Sleeps | None = None,
    **extra: Any,
) -> Consumer:
    consumers = Consumers("svc", stall_after_s=30)
    name = f"svc/orders-{uuid.uuid4().hex[:8]}"  # the metrics' labels are process-wide
    extra.setdefault("model", Order)
    return Consumer(
        service="svc",
        subscriber=name,
        handler=handler,
        dead_letter=letters,
        ack_policy=ack_policy,
        policy=policy,
        progress=consumers.add(name, "orders.v1"),
        sleep=sleep or Sleeps(),
        **extra,
    )
