"""What can go wrong calling M3, one class per thing a caller can act on.

- authorization denied: Connect API Authorization (SES005) or company access refused the call: an
  administrator must grant it; retrying or changing the payload will not help;
- business NOK: M3 refused the data (code, field, message): fix the data or hold the work;
- input: our own check against the transaction's metadata failed before any call was made;
- throttled (429): the Gateway's rate limit; retried after the pause;
- unauthorized (401): the token was missing, expired or revoked; one retry with a fresh token;
- transient: 5xx, timeouts, dropped connections; retried with backoff (reads, and writes that provably never
  reached M3);
- outcome unknown: a write (a transaction that changes M3) was sent, but its answer was lost (timeout, connection
  cut after sending, 502/504 or another 5xx): M3 may have done it. Never re-sent as is: the caller reads M3 to
  learn what happened and does only what is missing;
- not found: no such program or transaction on this tenant.
"""

from __future__ import annotations


class M3Error(Exception):
    error_class = "m3"
    retryable = False

    def __init__(self, message: str, *, program: str = "", transaction: str = "") -> None:
        where = f"{program}/{transaction}" if program else ""
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.program = program
        self.transaction = transaction


class M3AuthorizationDeniedError(M3Error):
    error_class = "authorization"

    def __init__(self, message: str, *, code: str = "", program: str = "", transaction: str = "") -> None:
        super().__init__(message, program=program, transaction=transaction)
        self.code = code


class M3BusinessError(M3Error):
    error_class = "business"

    def __init__(self, message: str, *, code: str = "", field: str = "", program: str = "", transaction: str = ""):
        detail = " ".join(part for part in (f"[{code}]" if code else "", f"field {field}:" if field else "", message))
        super().__init__(detail, program=program, transaction=transaction)
        self.code = code
        self.field = field
        self.m3_message = message


class M3InputError(M3Error):
    """Refused before calling: the value does not fit the transaction's metadata."""

    error_class = "validation"

    def __init__(self, message: str, *, field: str, program: str = "", transaction: str = "") -> None:
        super().__init__(f"field {field}: {message}", program=program, transaction=transaction)
        self.field = field


class M3ThrottledError(M3Error):
    error_class = "throttled"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None, program: str = "", transaction: str = ""):
        super().__init__(message, program=program, transaction=transaction)
        self.retry_after_s = retry_after_s


class M3UnauthorizedError(M3Error):
    error_class = "unauthorized"
    retryable = True


class M3TransientError(M3Error):
    error_class = "transient"
    retryable = True

    def __init__(self, message: str, *, status: int | None = None, program: str = "", transaction: str = ""):
        super().__init__(message, program=program, transaction=transaction)
        self.status = status


class M3NotFoundError(M3Error):
    error_class = "not_found"


class M3OutcomeUnknownError(M3TransientError):
    """A write was sent and M3 may have done it, but its answer never came back. The M3 client does not retry it;
    the work can be resumed once the caller has read M3 to learn what happened (`retryable` is about the work)."""

    error_class = "outcome_unknown"
