"""The retry policy of one M3 call: what is sent again and after how long, the call's deadline, and lost answers.

What provably did not reach M3 (a refused connection, 429, 401, lease problems, an open circuit) is retried, and
so is a read whose answer was lost; a write whose answer was lost is `M3OutcomeUnknownError`, never retried here.
"""

from __future__ import annotations

import random
import time

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay

from shared.m3.breaker import M3CircuitOpenError
from shared.m3.errors import (
    M3Error,
    M3OutcomeUnknownError,
    M3ThrottledError,
    M3TransientError,
    M3UnauthorizedError,
)
from shared.m3.lease import LeaseError


class DeadlinePassedError(M3TransientError):
    """The call's deadline passed before a request could be sent (nothing reached M3; not M3's fault)."""


def call_retrying(
    *, deadline_s: float, max_attempts: int, backoff_initial_s: float, backoff_max_s: float
) -> AsyncRetrying:
    """The retry loop for one call (it keeps count of the call's 401s, so one per call): at most `max_attempts`,
    none started after `deadline_s`."""
    unauthorized_seen = 0
    started = time.monotonic()

    def retry_wanted(exc: BaseException) -> bool:
        nonlocal unauthorized_seen
        if isinstance(exc, M3OutcomeUnknownError):
            return False
        if isinstance(exc, M3CircuitOpenError):
            # Wait for the probe only when it can happen within the deadline; else fail now (a rep gets the
            # last known figure at once instead of waiting out an outage).
            return time.monotonic() - started + exc.retry_after_s <= deadline_s
        if isinstance(exc, M3UnauthorizedError):
            unauthorized_seen += 1
            return unauthorized_seen <= 1  # one fresh token; a second 401 is a configuration problem
        return retryable(exc)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, M3CircuitOpenError):
            return exc.retry_after_s
        if isinstance(exc, M3UnauthorizedError):
            return 0.0
        if isinstance(exc, M3ThrottledError) and exc.retry_after_s is not None:
            return 0.0  # token-service pauses every caller's leases for the Retry-After
        if isinstance(exc, LeaseError) and exc.retry_after_s is not None:
            return exc.retry_after_s
        exponential: float = backoff_initial_s * 2.0 ** (state.attempt_number - 1)
        return min(backoff_max_s, exponential) * (0.5 + _jitter())

    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts) | stop_after_delay(deadline_s),
        wait=wait,
        retry=retry_if_exception(retry_wanted),
        reraise=True,
    )


def retryable(exc: BaseException) -> bool:
    """Whether the error says it may be sent again (lease errors and M3 errors say so themselves)."""
    if isinstance(exc, LeaseError):
        return exc.retryable
    return isinstance(exc, M3Error) and exc.retryable


def time_left(deadline_at: float, deadline_s: float, *, program: str, transaction: str) -> float:
    """Seconds left until `deadline_at` (a `time.monotonic()` instant); past it, nothing more is sent."""
    left = deadline_at - time.monotonic()
    if left <= 0:
        raise DeadlinePassedError(
            f"the {deadline_s:g}s deadline passed before the request could be sent",
            program=program,
            transaction=transaction,
        )
    return left


def lost_answer(changes: bool, message: str, *, program: str, transaction: str) -> M3TransientError:
    """The error for an answer lost after the request was sent: a read may simply be sent again, a write not."""
    error = M3OutcomeUnknownError if changes else M3TransientError
    return error(message, program=program, transaction=transaction)


def _jitter() -> float:
    return random.random()  # noqa: S311 - jitter, not security
