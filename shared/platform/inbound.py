"""Authenticating inbound HTTP deliveries (QuoteWerks webhooks, ION BODs).

A sender that can only add custom headers (QuoteWerks, many ION connection points) authenticates with a shared
secret in a configured header, compared in constant time. A producer or proxy that can sign sends an
HMAC-SHA256 signature header `t=<unix seconds>,v1=<hex>` over `"{t}.{body}"`, accepted within a time window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from shared.platform.metrics import http_rejected
from shared.platform.settings import BridgeSettings

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a JSON body the bridge reads itself (no real delivery comes
close; a deeper one is an attack on the parser's recursion)."""


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

    @classmethod
    def from_settings(cls, settings: BridgeSettings, prefix: str, *, tolerance_s: float) -> InboundAuth:
        """From a service's settings `<prefix>_secret_header`, `<prefix>_secret`, `<prefix>_signature_header` and
        `<prefix>_signing_secret` (M3B_WEBHOOK_SECRET, M3B_BOD_SECRET, …). Logs at start what an operator must
        know: with neither secret every delivery is refused, and a `<prefix>_max_bytes` over M3B_MAX_BODY_BYTES
        cannot be reached."""
        auth = cls(
            secret_header=getattr(settings, f"{prefix}_secret_header"),
            shared_secret=getattr(settings, f"{prefix}_secret").get_secret_value(),
            signature_header=getattr(settings, f"{prefix}_signature_header"),
            signing_secret=getattr(settings, f"{prefix}_signing_secret").get_secret_value(),
            tolerance_s=tolerance_s,
        )
        env = f"M3B_{prefix.upper()}"
        if not auth.shared_secret and not auth.signing_secret:
            log.warning("neither %s_SECRET nor %s_SIGNING_SECRET is set: every delivery will be refused", env, env)
        max_bytes = getattr(settings, f"{prefix}_max_bytes", None)
        if isinstance(max_bytes, int) and max_bytes > settings.max_body_bytes:
            log.warning("%s_MAX_BYTES %d is over M3B_MAX_BODY_BYTES %d: bodies over the latter are refused (413)",
                        env, max_bytes, settings.max_body_bytes)  # fmt: skip
        return auth


def note_rejection(service: str, status: int, reason: str, detail: str) -> None:
    """One log line and one count for an HTTP request refused for what it holds. `detail` must name the reason, never
    carry a secret or the body; it is cut short and quoted so that no input can forge log lines."""
    http_rejected.labels(service, reason).inc()
    log.warning("request refused: %d %s: %r", status, reason, detail[:200])


def _octets(value: str) -> bytes:
    # Header values arrive as Latin-1 text; whatever they hold, compare bytes (compare_digest refuses non-ASCII str).
    return value.encode("utf-8", "backslashreplace")


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
        if not hmac.compare_digest(expected.encode(), _octets(fields.get("v1", ""))):
            raise RejectedDeliveryError(401, "bad_signature", "signature does not match the body")
        return "signature"
    presented = lowered.get(auth.secret_header.lower())
    if presented is not None and auth.shared_secret:
        if hmac.compare_digest(_octets(presented), _octets(auth.shared_secret)):
            return "secret"
        raise RejectedDeliveryError(401, "bad_secret", "wrong shared secret")
    raise RejectedDeliveryError(401, "unsigned", "neither the shared-secret header nor a signature")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and (len(declared) > 18 or int(declared) > limit)
    ):
        raise RejectedDeliveryError(413, "too_large", f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise RejectedDeliveryError(413, "too_large", f"body over {limit} bytes")
    return bytes(body)


# A string runs to its closing quote or, unterminated, to the end: one pass, no backtracking.
_JSON_STRING = re.compile(rb'"(?:[^"\\]+|\\.?)*"?', re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes, *, stop_above: int | None = None) -> int:
    """How deeply the arrays and objects of a JSON text nest, counted without parsing (strings skipped); counting
    stops once the depth passes `stop_above`."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_A_BRACKET)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        elif depth:
            depth -= 1
    return deepest


def load_json(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON body the bridge reads itself; RejectedDeliveryError(400) when it is not UTF-8 JSON or nests deeper than
    `max_depth` (checked before parsing: the parser recurses)."""
    if json_depth(body, stop_above=max_depth) > max_depth:
        raise RejectedDeliveryError(400, "too_deep", f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError, integers of more than 4300 digits
        raise RejectedDeliveryError(400, "malformed", "body is not JSON") from None
