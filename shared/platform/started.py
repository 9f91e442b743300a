"""A part of a service that exists only while the service runs: built by a start hook, used by handlers and routes."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class NotStartedError(RuntimeError):
    """A handler or route asked for a part before the start hooks built it (or after a failed start)."""


class StartedPart(Generic[T]):
    """`part = StartedPart[OrderWriter]("order-writer")`; the start hook calls `part.set(...)`, the handlers call
    `part()`. Reading it before it is set raises NotStartedError naming the service, not an AttributeError on None."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._part: T | None = None

    def set(self, part: T) -> T:
        self._part = part
        return part

    def __call__(self) -> T:
        if self._part is None:
            raise NotStartedError(f"{self._service} is not started")
        return self._part

    def peek(self) -> T | None:
        """The part, or None while the service starts (for health details, which are read at any time)."""
        return self._part
