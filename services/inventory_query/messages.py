"""What inventory-query answers over HTTP. The Kafka request/reply payloads (shared with other producers) are
in `shared.contracts`; the request topic is `shared.contracts.topics.AVAILABILITY_REQUEST`."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import (
    AVAILABILITY_MAX_LINES,
    AvailabilityAnswer,
    AvailabilityQuery,
    AvailabilityReply,
    AvailabilityRequest,
    LineProblem,
    LineResult,
    Source,
)
from shared.contracts.topics import AVAILABILITY_REQUEST

REQUEST = AVAILABILITY_REQUEST
REQUEST_TOPIC = AVAILABILITY_REQUEST.name
MAX_BATCH = AVAILABILITY_MAX_LINES

__all__ = [
    "MAX_BATCH",
    "REQUEST",
    "REQUEST_TOPIC",
    "AvailabilityAnswer",
    "AvailabilityQuery",
    "AvailabilityReply",
    "AvailabilityRequest",
    "BatchAnswer",
    "BatchQuery",
    "ErrorBody",
    "LineProblem",
    "LineResult",
    "Source",
    "refusal",
]


class BatchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[AvailabilityQuery] = Field(min_length=1, max_length=MAX_BATCH)


class BatchAnswer(BaseModel):
    lines: list[LineResult]


class ErrorBody(BaseModel):
    detail: str


def refusal(correlation_id: str | None, reason: str) -> AvailabilityReply:
    """The reply to a request that gets no answer lines: why (it could not be read, or answering failed)."""
    return AvailabilityReply(correlation_id=correlation_id, error=reason[:2000], answered_at=datetime.now(UTC))
