"""What goes wrong talking to QuoteWerks, whichever the transport."""

from __future__ import annotations


class QuoteWerksError(Exception):
    """QuoteWerks refused or could not be reached; `retryable` says whether trying later can help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class QuoteWerksConflictError(QuoteWerksError):
    """A conditional write found the record changed (or created) by someone else since it was read: read again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True, status=412)


class QuoteWerksConfigError(ValueError):
    """The configured QuoteWerks connection cannot do what the service needs; raised at start-up (a ValueError, so
    that `m3bridge serve` reports it as a setting without importing this module)."""
