"""Webhook deliveries from QuoteWerks (and other producers): who sent it, what it says, whether we saw it.

QuoteWerks cannot sign requests; a webhook can only carry custom headers. So a delivery is authentic when it
carries the configured shared secret in the configured header (compared in constant time), or, for producers
and proxies that can sign, an HMAC-SHA256 signature header `t=<unix seconds>,v1=<hex>` over `"{t}.{body}"`
within a time window. The body is whatever template the customer configured: usually thin (event name,
DocNo, tenant), so the full document is fetched afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass


class RejectedDeliveryError(Exception):
    """Not accepted; `status` is the HTTP status to answer and `reason` a label for metrics."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class WebhookAuth:
    secret_header: str
    shared_secret: str
    signature_header: str
    signing_secret: str
    tolerance_s: float


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header value a producer sends (also used by tests and the simulator)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def authenticate(headers: Mapping[str, str], body: bytes, auth: WebhookAuth, *, now: float | None = None) -> str:
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


@dataclass(frozen=True)
class Delivery:
    event: str  # `Context.EventName`, e.g. QuoteValet.Accepted
    doc_no: str
    customer_id: str


def parse(body: bytes) -> Delivery:
    """Reads the event and the document or customer it is about from a (usually thin) JSON body."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RejectedDeliveryError(400, "malformed", "body is not JSON") from None
    if not isinstance(data, dict):
        raise RejectedDeliveryError(400, "malformed", "body is not a JSON object")
    event = str(data.get("event") or data.get("EventFullName") or "").strip()
    doc_no = str(data.get("DocNo") or data.get("docNo") or "").strip()
    customer_id = str(data.get("CMAccountNo") or data.get("customer_id") or "").strip()
    if not event:
        raise RejectedDeliveryError(422, "malformed", "no `event` in the body (map {{System.EventFullName}})")
    if not doc_no and not customer_id:
        raise RejectedDeliveryError(422, "malformed", "no `DocNo` ({{Document.DocNo}}) or `CMAccountNo` in the body")
    if len(doc_no) > 50 or len(customer_id) > 64 or len(event) > 128:
        raise RejectedDeliveryError(422, "malformed", "event, DocNo or CMAccountNo too long")
    return Delivery(event=event, doc_no=doc_no, customer_id=customer_id)
