"""The one M3 client: MI programs over REST through the ION API Gateway, behind token-service leases.

Nothing else in the code builds M3 URLs or parses `MIRecord`.
"""

from shared.m3.breaker import CircuitBreakers, M3CircuitOpenError
from shared.m3.client import M3Client, m3_client_for
from shared.m3.errors import (
    M3AuthorizationDeniedError,
    M3BusinessError,
    M3Error,
    M3InputError,
    M3NotFoundError,
    M3OutcomeUnknownError,
    M3ThrottledError,
    M3TransientError,
    M3UnauthorizedError,
)
from shared.m3.metadata import FieldSpec, TransactionMetadata

__all__ = [
    "CircuitBreakers",
    "FieldSpec",
    "M3AuthorizationDeniedError",
    "M3BusinessError",
    "M3CircuitOpenError",
    "M3Client",
    "M3Error",
    "M3InputError",
    "M3NotFoundError",
    "M3OutcomeUnknownError",
    "M3ThrottledError",
    "M3TransientError",
    "M3UnauthorizedError",
    "TransactionMetadata",
    "m3_client_for",
]
