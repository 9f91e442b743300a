"""What inventory-query answers over HTTP. The Kafka request/reply payloads (shared with other producers) are
in `shared.contracts`; the request topic is `shared.topics.AVAILABILITY_REQUEST`."""

from __future__ import annotations

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
from shared.topics import AVAILABILITY_REQUEST

REQUEST_TOPIC = AVAILABILITY_REQUEST.name
MAX_BATCH = AVAILABILITY_MAX_LINES

__all__ = [
    "MAX_BATCH",
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
]


class BatchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[AvailabilityQuery] = Field(min_length=1, max_length=MAX_BATCH)


class BatchAnswer(BaseModel):
    lines: list[LineResult]


class ErrorBody(BaseModel):
    detail: str
