"""The correlation id that follows one piece of work across HTTP calls, Kafka messages and log lines."""

from __future__ import annotations

import uuid
from contextvars import ContextVar

# The Kafka header and HTTP header names are part of the contract other producers follow.
KAFKA_HEADER = "correlation-id"
SOURCE_HEADER = "source"
HTTP_HEADER = "X-Correlation-ID"

_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def current_correlation_id() -> str | None:
    return _current.get()


def bind_correlation_id(value: str | None) -> str:
    """Make `value` (or a fresh id when it is empty) the correlation id of the running task."""
    correlation_id = value or new_correlation_id()
    _current.set(correlation_id)
    return correlation_id
