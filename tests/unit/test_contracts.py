import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from shared.contracts import LineType, QuoteApproved, QuoteLine
from shared.contracts.topics import ALL_TOPICS, HEARTBEAT, QUOTE_APPROVED, dead_letter_topic
from shared.platform.kafka import MessageTooLargeError, encode

QUOTE_WIRE = {
    "DocNo": "AAAQ1001",
    "ID": 17,
    "DocStatus": "3-Manager Approved",
    "ShipVia": "UPS Ground",
    "SoldTo": {"Company": "Acme Ltd", "Email": "buyer@acme.example", "CMAccountNo": "ACME01"},
    "Lines": [
        {"LineType": 1, "ManufacturerPartNumber": "WIDGET-1", "QtyTotal": "2", "UnitPrice": "19.90"},
        {"LineType": 2, "Description": "Deliver to the back door"},
    ],
    "ApprovedAt": "2026-11-23T10:00:00Z",
    "SomeFutureField": "ignored",
}


def test_quote_reads_quotewerks_column_names() -> None:
    quote = QuoteApproved.model_validate(QUOTE_WIRE)
    assert quote.doc_no == "AAAQ1001"
    assert quote.id == 17
    assert quote.sold_to.company == "Acme Ltd"
    assert quote.sold_to.cm_account_no == "ACME01"
    assert quote.lines[0].unit_price == Decimal("19.90")
    assert quote.lines[1].line_type is LineType.COMMENT


def test_quote_writes_quotewerks_column_names_and_exact_decimals() -> None:
    wire = json.loads(QuoteApproved.model_validate(QUOTE_WIRE).model_dump_json())
    assert wire["DocNo"] == "AAAQ1001"
    assert wire["SoldTo"]["CMAccountNo"] == "ACME01"
    assert wire["Lines"][0]["UnitPrice"] == "19.90"
    assert "SomeFutureField" not in wire
    assert QuoteApproved.model_validate(wire) == QuoteApproved.model_validate(QUOTE_WIRE)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"DocNo": ""}, "DocNo"),
        ({"Lines": []}, "Lines"),
        ({"ApprovedAt": "yesterday"}, "ApprovedAt"),
        ({"DocNo": "X" * 51}, "DocNo"),
    ],
)
def test_bad_quotes_are_refused_naming_the_field(change: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        QuoteApproved.model_validate({**QUOTE_WIRE, **change})


def test_negative_quantity_is_refused() -> None:
    with pytest.raises(ValidationError, match="QtyTotal"):
        QuoteLine.model_validate({"QtyTotal": "-1"})


def test_topic_names_are_unique_and_versioned() -> None:
    names = [topic.name for topic in ALL_TOPICS]
    assert len(names) == len(set(names))
    assert all(name.endswith(".v1") for name in names)
    assert dead_letter_topic("order-writer").name == "dlq.order-writer.v1"


def test_encode_refuses_the_wrong_payload_for_a_topic() -> None:
    quote = QuoteApproved.model_validate(QUOTE_WIRE)
    with pytest.raises(TypeError, match="Heartbeat"):
        encode(HEARTBEAT, quote, max_bytes=1_000_000)


def test_encode_refuses_oversized_messages_before_sending() -> None:
    line = {"LineType": 1, "Description": "x" * 4000, "QtyTotal": "1", "UnitPrice": "1"}
    quote = QuoteApproved.model_validate({**QUOTE_WIRE, "Lines": [line] * 300, "ApprovedAt": datetime.now(UTC)})
    with pytest.raises(MessageTooLargeError, match="exceeds"):
        encode(QUOTE_APPROVED, quote, max_bytes=1_048_576)


def test_the_published_example_for_producers_is_a_valid_quote() -> None:
    from m3bridge.docs import EXAMPLE
    from shared.contracts import QUOTE_APPROVED_EXAMPLE

    quote = QuoteApproved.model_validate_json(EXAMPLE.read_text())
    assert quote == QuoteApproved.model_validate(QUOTE_APPROVED_EXAMPLE)
    assert quote.sold_to.cm_account_no == "C000001"
