"""Property tests: for ANY QuoteWerks input the parser returns a valid result or raises its own documented error for
bad input, never another exception, and never hangs. The webhook body (`services.quote_ingest.webhooks.parse` →
`Delivery` | `RejectedDeliveryError`) and the document and contact fetched afterwards
(`shared.quotewerks.quote_from_document` / `customer_from_contact` → contract | `DocumentError`). Inputs and
settings: `tests/unit/outside_inputs.py`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, strategies as st

from services.quote_ingest.webhooks import Delivery, parse
from shared import contracts
from shared.platform.inbound import RejectedDeliveryError
from shared.quotewerks import DocumentError, customer_from_contact, quote_from_document
from tests.unit.outside_inputs import (
    APPROVED_AT,
    CONTACT_SEED,
    DOCUMENT_SEED,
    FUZZ,
    json_bodies,
    json_values,
    mutated_json,
    parsed_or_refused,
)

pytestmark = pytest.mark.unit

# --- 1. QuoteWerks: webhook bodies, then the document and contact they name -----------------------------------------

WEBHOOK_KEYS = ("event", "EventFullName", "DocNo", "docNo", "CMAccountNo", "customer_id")
WEBHOOK_SEEDS: tuple[Any, ...] = (
    {"event": "QuoteValet.Accepted", "DocNo": "AAA1001"},
    {"EventFullName": "Document.AfterSave", "docNo": "AAA1002", "tenant": "acme"},
    {"event": "Contact.AfterSave", "CMAccountNo": "C000001"},
)


@FUZZ
@given(body=json_bodies(WEBHOOK_SEEDS, WEBHOOK_KEYS))
@example(body=b"[" * 100_000)
@example(body=b'{"event": "x", "DocNo": ' + b"9" * 5000 + b"}")
def test_a_webhook_body_is_read_or_refused_with_a_status(body: bytes) -> None:
    delivery = parsed_or_refused(lambda: parse(body), RejectedDeliveryError, shown=body)
    if delivery is not None:
        assert isinstance(delivery, Delivery)
        assert delivery.event
        assert delivery.doc_no or delivery.customer_id
        assert len(delivery.event) <= 128
        assert len(delivery.doc_no) <= 50
        assert len(delivery.customer_id) <= 64


def test_webhook_refusals_are_client_errors() -> None:
    """The property above accepts RejectedDeliveryError: it must be a 4xx, never a 5xx in disguise."""
    for body in (b"", b"\xff", b"[]", b"{}", b'{"event": "x"}', b"[" * 1000):
        with pytest.raises(RejectedDeliveryError) as refused:
            parse(body)
        assert 400 <= refused.value.status < 500


DOCUMENT_HEADER_KEYS = (
    "DocNo", "ID", "DocType", "DocStatus", "DocName", "DocDate", "CustomerPONumber", "SalesRep", "ShipVia", "Terms",
    "AlternateCurrencyIdentifier", "SubTotal", "TotalTax", "ShippingAmount", "GrandTotal", "LastModified",
    "SoldToCompany", "SoldToCMAccountNo", "ShipToCompany", "ShipToAddress1", "BillToCountry", "BillToEmail",
)  # fmt: skip
DOCUMENT_ITEM_KEYS = (
    "ID", "SortOrder", "LineType", "LineAttributes", "ManufacturerPartNumber", "Description", "QtyTotal", "UnitPrice",
    "UnitList", "UnitCost", "DiscountPercent", "UnitOfMeasure", "Vendor", "Manufacturer",
)  # fmt: skip
CONTACT_KEYS = (
    "CMAccountNo", "Company", "Contact", "Address1", "Address2", "Address3", "City", "State", "PostalCode", "Country",
    "PhoneNumber", "Email", "LastModified",
)  # fmt: skip
DOCUMENT_KEYS = ("DocumentHeader", "DocumentItems", *DOCUMENT_HEADER_KEYS, *DOCUMENT_ITEM_KEYS)


def document_inputs() -> st.SearchStrategy[Any]:
    """Documents as the QuoteWerks API answers them (any JSON object), mostly the valid one mutated."""
    return (
        mutated_json((DOCUMENT_SEED,), DOCUMENT_KEYS)
        | st.fixed_dictionaries(
            {"DocumentHeader": json_values(DOCUMENT_HEADER_KEYS), "DocumentItems": json_values(DOCUMENT_ITEM_KEYS)}
        )
        | st.dictionaries(st.sampled_from(DOCUMENT_KEYS), json_values(DOCUMENT_KEYS), max_size=3)
    ).filter(lambda document: isinstance(document, dict))


def test_the_seed_document_and_contact_are_valid() -> None:
    """The mutations start from inputs that parse (else the properties would only ever see refusals)."""
    quote = quote_from_document(DOCUMENT_SEED, approval_event="QuoteValet.Accepted", approved_at=APPROVED_AT)
    assert quote.doc_no == "AAA1001"
    assert len(quote.lines) == 2
    assert customer_from_contact(CONTACT_SEED, change="updated", changed_at=APPROVED_AT).customer_id == "C000001"


@FUZZ
@given(document=document_inputs())
@example(document={"DocumentHeader": {"DocNo": "A1"}, "DocumentItems": [{"LineType": "Product"}]})
@example(document={"DocumentHeader": {"DocNo": "A1"}, "DocumentItems": [{"LineType": "1" * 5000}]})
@example(document={"DocumentHeader": {"DocNo": "A1"}, "DocumentItems": [{"SortOrder": 1}, {"SortOrder": "2"}]})
def test_a_quotewerks_document_becomes_an_approved_quote_or_a_document_error(document: dict[str, Any]) -> None:
    quote = parsed_or_refused(
        lambda: quote_from_document(document, approval_event="QuoteValet.Accepted", approved_at=APPROVED_AT),
        DocumentError,
        shown=document,
    )
    if quote is not None:
        assert isinstance(quote, contracts.QuoteApproved)
        assert contracts.QuoteApproved.model_validate_json(quote.model_dump_json()) == quote


@FUZZ
@given(contact=mutated_json((CONTACT_SEED,), CONTACT_KEYS).filter(lambda contact: isinstance(contact, dict)))
def test_a_quotewerks_contact_becomes_a_customer_change_or_a_document_error(contact: dict[str, Any]) -> None:
    change = parsed_or_refused(
        lambda: customer_from_contact(contact, change="updated", changed_at=APPROVED_AT), DocumentError, shown=contact
    )
    if change is not None:
        assert isinstance(change, contracts.QuoteWerksCustomerChanged)
        assert contracts.QuoteWerksCustomerChanged.model_validate_json(change.model_dump_json()) == change
