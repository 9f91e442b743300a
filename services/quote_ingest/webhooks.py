"""What a QuoteWerks webhook says. Authentication is `shared.platform.inbound` (QuoteWerks cannot sign: a shared secret
in a custom header). The body is whatever template the customer configured: usually thin (event name, DocNo,
tenant), so the full document is fetched afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.platform.inbound import RejectedDeliveryError, load_json

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
