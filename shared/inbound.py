"""Authenticating inbound HTTP deliveries (QuoteWerks webhooks, ION BODs).

A sender that can only add custom headers (QuoteWerks, many ION connection points) authenticates with a shared
secret in a configured header, compared in constant time. A producer or proxy that can sign sends an
HMAC-SHA256 signature header `t=<unix seconds>,v1=<hex>` over `"{t}.{body}"`, accepted within a time window.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request


class RejectedDeliveryError(Exception):
    """Not accepted; `status` is the HTTP status to answer and `reason` a label for metrics."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class InboundAuth:
    secret_header: str
    shared_secret: str
    signature_header: str
    signing_secret: str
    tolerance_s: float


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header value a producer sends (also used by tests and the simulator)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def authenticate(headers: Mapping[str, str], body: bytes, auth: InboundAuth, *, now: float | None = None) -> str:
    """Returns how the delivery authenticated ("secret" or "signature"); raises RejectedDeliveryError."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(auth.signature_header.lower())
    if signature is not None and auth.signing_secret:
        fields = dict(part.split("=", 1) for part in signature.split(",") if "=" in part)
        try:
            timestamp = int(fields["t"])
        except (KeyError, ValueError):
            raise RejectedDeliveryError(401, "bad_signature", "signature header without a timestamp") from None
        current = time.time() if now is None else now
        if abs(current - timestamp) > auth.tolerance_s:
            raise RejectedDeliveryError(401, "stale_signature", "signature timestamp outside the accepted window")
        expected = sign(body, auth.signing_secret, timestamp).split("v1=", 1)[1]
        if not hmac.compare_digest(expected, fields.get("v1", "")):
            raise RejectedDeliveryError(401, "bad_signature", "signature does not match the body")
        return "signature"
    presented = lowered.get(auth.secret_header.lower())
    if presented is not None and auth.shared_secret:
        if hmac.compare_digest(presented.encode(), auth.shared_secret.encode()):
            return "secret"
        raise RejectedDeliveryError(401, "bad_secret", "wrong shared secret")
    raise RejectedDeliveryError(401, "unsigned", "neither the shared-secret header nor a signature")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RejectedDeliveryError(413, "too_large", f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise RejectedDeliveryError(413, "too_large", f"body over {limit} bytes")
    return bytes(body)
