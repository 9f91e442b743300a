"""What a QuoteWerks webhook says. Authentication is `shared.platform.inbound` (QuoteWerks cannot sign: a shared secret
in a custom header). The body is whatever template the customer configured: usually thin (event name, DocNo,
tenant), so the full document is fetched afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from prometheus_client import Counter

from shared.platform.inbound import (
    InboundAuth,
    RejectedDeliveryError,
    authenticate,
    load_json,
    note_rejection,
    read_body,
)
from shared.quotewerks import DocumentError, QuoteWerksError

if TYPE_CHECKING:
    from services.quote_ingest.ingest import Ingest

deliveries_total = Counter(
    "m3bridge_webhook_deliveries_total", "QuoteWerks webhook deliveries by outcome.", ["outcome"]
)

#: The body as the OpenAPI document shows it: the keys `parse` reads (either spelling); others are ignored.
WEBHOOK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "example": {"event": "QuoteValet.Accepted", "DocNo": "AAAQ1001"},
                    "properties": {
                        "event": {"type": "string", "description": "{{System.EventFullName}}"},
                        "EventFullName": {"type": "string"},
                        "DocNo": {"type": "string", "maxLength": 50, "description": "{{Document.DocNo}}"},
                        "docNo": {"type": "string", "maxLength": 50},
                        "CMAccountNo": {"type": "string", "maxLength": 64, "description": "a customer change"},
                        "customer_id": {"type": "string", "maxLength": 64},
                    },
                }
            }
        },
    }
}


@dataclass(frozen=True)
class Delivery:
    event: str  # `Context.EventName`, e.g. QuoteValet.Accepted
    doc_no: str
    customer_id: str


def parse(body: bytes) -> Delivery:
    """Reads the event and the document or customer it is about from a (usually thin) JSON body."""
    data = load_json(body)  # 400 when not JSON or nested deeper than any template makes it
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


async def answer_delivery(
    request: Request, ingest: Callable[[], Ingest], *, auth: InboundAuth, max_bytes: int, service: str
) -> tuple[int, dict[str, Any]]:
    """A webhook delivery read (within `max_bytes`), authenticated, parsed and ingested: the HTTP status and body to
    answer QuoteWerks with. A duplicate is 200, not 409 (QuoteWerks would deliver it again and again); QuoteWerks
    unreachable is 503, so it delivers again; a document that cannot be an approved quote is 422."""
    try:
        body = await read_body(request, max_bytes)
        authenticate(request.headers, body, auth)
        delivery = parse(body)
        result = await ingest().delivery(delivery)
    except RejectedDeliveryError as exc:
        deliveries_total.labels(exc.reason).inc()
        note_rejection(service, exc.status, exc.reason, f"webhook: {exc}")
        return exc.status, {"status": "rejected", "reason": exc.reason, "detail": str(exc)}
    except QuoteWerksError as exc:
        deliveries_total.labels("quotewerks_error").inc()
        return (503 if exc.retryable else 422), {"status": "not processed", "detail": str(exc)}
    except DocumentError as exc:
        deliveries_total.labels("invalid_document").inc()
        return 422, {"status": "invalid document", "detail": str(exc)}
    deliveries_total.labels(result.outcome).inc()
    status = {"published": 202, "recorded": 202, "ignored": 200, "duplicate": 200}[result.outcome]
    return status, {"status": result.outcome, "detail": result.detail}
