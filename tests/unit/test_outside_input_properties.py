"""Property tests for the parsers that read outside input: for ANY input each one either returns a valid result or
raises its own documented error for bad input, never another exception, and never hangs.

- QuoteWerks: the webhook body (`services.quote_ingest.webhooks.parse` → `Delivery` | `RejectedDeliveryError`) and
  the document and contact fetched afterwards (`shared.quotewerks.quote_from_document` / `customer_from_contact` →
  contract | `DocumentError`);
- ION BODs (`shared.bods.parse_bod` → `ParsedBod` | `BodError`);
- the `.ionapi` file (`shared.ionapi.IonApiCredentials.load` → credentials | `IonApiFileError`);
- M3 MI answers (`shared.m3.wire.parse_v1` on the JSON, and `M3Client.execute` / `bulk` on the raw HTTP answer →
  records | `M3Error`);
- Kafka payloads (`shared.consuming.decode` → the topic's model | `PoisonMessageError`; `Consumer.consume` → the
  handler or one dead letter).

Inputs are noise and near-valid mutations of valid examples: parts dropped, duplicated, renamed or retyped, huge
numbers, deep nesting, bytes that are not UTF-8, DTDs and entities. Examples per property: `M3B_FUZZ_EXAMPLES`
(default 100).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import signal
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any, TypeVar

import httpx
import pytest
from faststream import AckPolicy
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from services.quote_ingest.webhooks import Delivery, parse
from shared import contracts
from shared.bods import BodError, ParsedBod, parse_bod
from shared.consuming import INVALID, UNDECODABLE, Consumer, Consumers, PoisonMessageError, RetryPolicy, decode
from shared.inbound import RejectedDeliveryError
from shared.ionapi import IonApiCredentials, IonApiFileError
from shared.lease import Priority
from shared.m3 import M3Client, M3Error
from shared.m3 import wire as m3_wire
from shared.quotewerks import DocumentError, customer_from_contact, quote_from_document
from shared.topics import ALL_TOPICS
from simulators.ion.bods import (
    BodContext,
    PriceLine,
    build_customer_party_master,
    build_inventory_count,
    build_item_master,
    build_price_list,
    build_sales_order,
)
from tests.fuzz import examples
from tests.unit.m3_faults import FixedLeases

pytestmark = pytest.mark.unit

T = TypeVar("T")

FUZZ = settings(
    max_examples=examples(100),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
#: A parser still on one input after this long is hung (the slowest legitimate input, a 5 MB BOD, takes < 1 s).
HANG_S = 20.0


class ParserHungError(BaseException):
    """Raised into a parser that ran past HANG_S; a BaseException so no `except Exception` in the parser hides it."""


@contextlib.contextmanager
def no_hang(seconds: float = HANG_S) -> Iterator[None]:
    """Interrupts the code inside after `seconds` (SIGALRM), so a hang fails its example instead of stalling the run."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise ParserHungError(f"still parsing after {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def parsed_or_refused(parse_input: Callable[[], T], refusal: type[Exception], *, shown: object) -> T | None:
    """What the parser returns, or None when it refused the input with its own `refusal` error (which must say why).
    Any other exception propagates: hypothesis then reports the smallest input that raises it (`shown` is noted as
    well: the installed hypothesis prints generated arguments blank)."""
    text = repr(shown)
    note(f"input ({len(text)} characters as repr): {text[:3000]}{' ...' if len(text) > 3000 else ''}")
    refused: Exception | None = None
    with no_hang():
        try:
            return parse_input()
        except refusal as error:
            refused = error
    assert str(refused), f"{type(refused).__name__} without a message"
    return None


# --- inputs: noise and mutations ---------------------------------------------------------------------------------

TRICKY_TEXT = (
    "", " ", "\t\n", "²", "٣٤", "1" * 5000, "-1", "0", "-0", "1e999999", "1E+2", "NaN", "sNaN", "Infinity", "-inf",
    "0x10", "1_000", "12,5", "2026-11-23", "2026-02-30", "2026-11-23T10:00:00Z", "2026-11-23T25:00:00",
    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00", "Delete", "Add", "Replace", "Change", "Open",
    "Obsolete", "Sync", "QUOTE", "x" * 300, "é", "\U0001f600", "\x00", "\ud800", "20", "90", "null", "[]", "{}",
)  # fmt: skip
HUGE_NUMBERS = (
    10**400, -(10**4000), 2**63, -(2**63) - 1, 1e308, -1e308, 5e-324, float("inf"), float("-inf"), float("nan"),
)  # fmt: skip
SPECIAL_BYTES = (
    b"\xff", b"\xfe\xff", b"\xef\xbb\xbf", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\x00", b"\\ud800", b"\\u0000",
    b"1e99999", b"9" * 5000, b"-", b"NaN", b"Infinity", b'"', b"\\", b"{", b"[", b"}", b"]", b",", b":",
)  # fmt: skip

#: Nesting depths: around the JSON readers' limit (64) and the interpreter's recursion limit (1000), and far beyond.
DEPTHS = st.sampled_from((64, 65, 999, 1001, 3000, 100_000)) | st.integers(1, 100_000)

#: Digits that are not ASCII: `str.isdigit()` is true for all, `int()` reads only some (not "²" or "①").
NUMBER_LIKE = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=3)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(TRICKY_TEXT)
    | st.sampled_from(HUGE_NUMBERS)
    | NUMBER_LIKE
)


def json_values(keys: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    """Any JSON value, its object keys often ones the parser looks for."""
    key_names = st.text(max_size=12) | st.sampled_from(keys) if keys else st.text(max_size=12)
    return st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key_names, inner, max_size=5),
        max_leaves=12,
    )


def nested(value: Any, depth: int) -> Any:
    for n in range(depth):
        value = [value] if n % 2 else {"k": value}
    return value


def _mutate(draw: st.DrawFn, value: Any, keys: tuple[str, ...]) -> Any:
    """One change somewhere in a JSON value: walk down at random, then replace, drop, rename, duplicate or wrap."""
    if isinstance(value, dict) and value and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(value)))
        value[key] = _mutate(draw, value[key], keys)
        return value
    if isinstance(value, list) and value and draw(st.integers(0, 3)):
        index = draw(st.integers(0, len(value) - 1))
        value[index] = _mutate(draw, value[index], keys)
        return value
    change = draw(st.sampled_from(["replace", "drop", "rename", "duplicate", "wrap", "stringify", "deep"]))
    if change == "drop" and isinstance(value, dict | list) and value:
        if isinstance(value, dict):
            del value[draw(st.sampled_from(sorted(value)))]
        else:
            del value[draw(st.integers(0, len(value) - 1))]
        return value
    if change == "rename" and isinstance(value, dict) and value:
        old = draw(st.sampled_from(sorted(value)))
        value[draw(st.sampled_from(keys) | st.text(max_size=12))] = value.pop(old)
        return value
    if change == "duplicate" and isinstance(value, list) and value:
        value.append(copy.deepcopy(draw(st.sampled_from(value))))
        return value
    if change == "wrap":
        return draw(st.sampled_from([[value], {"value": value}]))
    if change == "stringify":
        return json.dumps(value)
    if change == "deep":
        # Deep enough to hurt a recursive reader, shallow enough for `json.loads` to have produced it.
        return nested(value, draw(st.integers(1, 200)))
    return draw(json_values(keys))


@st.composite
def mutated_json(draw: st.DrawFn, seeds: tuple[Any, ...], keys: tuple[str, ...]) -> Any:
    value = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        value = _mutate(draw, value, keys)
    return value


@st.composite
def mutated_bytes(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A valid body damaged at the byte level: bytes flipped, inserted, cut, nested very deep, re-encoded."""
    data = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        change = draw(st.sampled_from(["insert", "replace", "delete", "truncate", "nest", "latin-1", "re-encode"]))
        if change == "insert":
            data = data[:at] + draw(st.sampled_from(SPECIAL_BYTES) | st.binary(min_size=1, max_size=8)) + data[at:]
        elif change == "replace":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at + 4 :]
        elif change == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 16)) :]
        elif change == "truncate":
            data = data[:at]
        elif change == "nest":
            depth = draw(DEPTHS)
            opening = draw(st.sampled_from([b"[", b'{"k":', b'{"DocNo":']))
            data = opening * depth + data + (b"]" if opening == b"[" else b"}") * depth
        elif change == "latin-1":
            data = data.decode("utf-8", "replace").encode("latin-1", "replace")
        else:
            data = data.decode("utf-8", "replace").encode(
                draw(st.sampled_from(["utf-16", "utf-32", "cp1252"])), "replace"
            )
    return data


def json_bytes(value: Any) -> bytes:
    """Python's own JSON encoder (NaN and Infinity included, as other encoders send them)."""
    return json.dumps(value).encode("utf-8", "surrogatepass")


def json_bodies(seeds: tuple[Any, ...], keys: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Bytes that should be a JSON body: noise, any JSON, valid ones mutated as values or as bytes."""
    seed_bytes = tuple(json_bytes(seed) for seed in seeds)
    return (
        st.binary(max_size=300)
        | json_values(keys).map(json_bytes)
        | mutated_json(seeds, keys).map(json_bytes)
        | mutated_bytes(seed_bytes)
    )


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

DOCUMENT_SEED: dict[str, Any] = {
    "DocumentHeader": {
        "ID": 17, "DocNo": "AAA1001", "DocType": "QUOTE", "DocStatus": "Accepted", "DocName": "Bolts for Acme",
        "DocDate": "2026-11-20", "CustomerPONumber": "PO-77", "SalesRep": "JD", "ShipVia": "UPS", "Terms": "Net 30",
        "AlternateCurrencyIdentifier": "USD", "SubTotal": 150.5, "TotalTax": "12.04", "ShippingAmount": 0,
        "GrandTotal": "162.54", "LastModified": "2026-11-23T10:00:00Z", "SoldToCompany": "Acme",
        "SoldToCMAccountNo": "C000001", "ShipToCompany": "Acme Depot", "ShipToAddress1": "1 Main St",
        "BillToCountry": "US", "BillToEmail": "ap@acme.example",
    },
    "DocumentItems": [
        {"ID": 1, "SortOrder": 1, "LineType": 1, "LineAttributes": 0, "ManufacturerPartNumber": "ITM000001",
         "Description": "Steel bolt", "QtyTotal": "10", "UnitPrice": 15.05, "UnitList": "16", "UnitCost": None,
         "DiscountPercent": "5", "UnitOfMeasure": "EA", "Vendor": "", "Manufacturer": "Acme"},
        {"ID": 2, "SortOrder": 2, "LineType": 2, "LineAttributes": 0, "Description": "Delivered in one go"},
    ],
}  # fmt: skip
CONTACT_SEED: dict[str, Any] = {
    "CMAccountNo": "C000001", "Company": "Acme", "Contact": "Jo Doe", "Address1": "1 Main St", "City": "Springfield",
    "State": "IL", "PostalCode": "62701", "Country": "US", "PhoneNumber": "+1 555 0100", "Email": "jo@acme.example",
    "LastModified": "2026-11-23T10:00:00Z",
}  # fmt: skip
APPROVED_AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


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


# --- 2. ION BODs -------------------------------------------------------------------------------------------------

BOD_CONTEXT = BodContext(tenant="TST", accounting_entity="100_AAA", location="100")
BOD_WHEN = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
BOD_SEEDS: tuple[bytes, ...] = tuple(
    bod.xml
    for bod in (
        build_item_master(
            BOD_CONTEXT, item_number="ITM000001", description="Bolt", long_description="Steel bolt M8",
            unit_of_measure="EA", item_group="BOLTS", item_type="FG", status="20", variation=3, changed_at=BOD_WHEN,
            creation=BOD_WHEN,
        ),
        build_customer_party_master(
            BOD_CONTEXT, customer_number="C000001", name="Acme", address_lines=("1 Main St", "Floor 2"),
            town="Springfield", postal_code="62701", country="US", phone="+1 555 0100", email="jo@acme.example",
            status="20", changed_at=BOD_WHEN, creation=BOD_WHEN,
        ),
        build_sales_order(
            BOD_CONTEXT, order_number="1000000001", status="33", customer_order_number="AAA1001",
            customer_number="C000001", highest_status="44", changed_at=BOD_WHEN, creation=BOD_WHEN,
        ),
        build_inventory_count(
            BOD_CONTEXT, item_number="ITM000001", warehouse="100", on_hand=Decimal("12.5"), allocatable="10",
            allocated="2.5", unit="EA", changed_at=BOD_WHEN, creation=BOD_WHEN,
        ),
        build_price_list(
            BOD_CONTEXT, price_list="PL1", currency="USD", changed_at=BOD_WHEN, creation=BOD_WHEN,
            lines=(PriceLine("ITM000001", Decimal("15.05"), date(2026, 12, 1)),
                   PriceLine("ITM000002", "3", None, "C1")),
        ),
    )
)  # fmt: skip
BOD_NAMES = (
    "SyncItemMaster", "ShowItemMaster", "ProcessItemMaster", "SyncShipment", "Sync", "syncItemMaster",
    "ApplicationArea", "DataArea", "BODID", "CreationDateTime", "ActionCriteria", "ActionExpression", "ItemMaster",
    "ItemMasterHeader", "ItemID", "ID", "Description", "Status", "Code", "UserArea", "Property", "NameValue",
    "CustomerPartyMaster", "PartyIDs", "Location", "Address", "AddressLine", "Communication", "ChannelCode",
    "SalesOrder", "SalesOrderHeader", "DocumentID", "EffectiveDateTime", "InventoryCount", "InventoryCountLine",
    "CountQuantity", "PriceList", "PriceListHeader", "PriceListLine", "Price", "Amount", "LastModificationDateTime",
)  # fmt: skip
BOD_ATTRIBUTES = ("variationID", "actionCode", "type", "currencyID", "sequence", "name", "xmlns", "{urn:x}type")
XML_PROLOGUES = (
    b'<!DOCTYPE r [<!ENTITY e "x">]>',
    b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd">',
    b"<?xml-stylesheet href='x'?>",
    b"<!-- a comment -->",
)
XML_FRAGMENTS = (
    b"&e;", b"&nope;", b"&amp;", b"&#0;", b"&#xD800;", b"&#1114112;", b"&#x1F600;", b"<![CDATA[x]]>", b"<?pi x?>",
    b"<!-- c -->", b"<a:b xmlns:a='urn:a'/>", b"<undeclared:x/>", b"\xff", b"\xc3\x28", b"<", b">", b"]]>",
)  # fmt: skip
XML_DECLARATIONS = (
    b"<?xml version='1.0' encoding='latin-1'?>", b"<?xml version='1.0' encoding='utf-16'?>",
    b"<?xml version='1.0' encoding='x-unknown'?>", b"<?xml version='1.0' encoding='ebcdic-cp-us'?>",
    b"<?xml version='2.0'?>", b"<?xml version='1.0' standalone='no'?>",
)  # fmt: skip


def _rename(tag: str, name: str) -> str:
    namespace = tag[: tag.index("}") + 1] if tag.startswith("{") else ""
    return namespace + name


@st.composite
def mutated_bod_tree(draw: st.DrawFn) -> bytes:
    """A valid BOD with elements dropped, duplicated, renamed, emptied, or given odd text and attributes."""
    root = ET.fromstring(draw(st.sampled_from(BOD_SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        elements = list(root.iter())
        parents = {child: parent for parent in elements for child in parent}
        element = draw(st.sampled_from(elements))
        parent = parents.get(element)
        change = draw(st.sampled_from(["drop", "duplicate", "rename", "text", "attribute", "number", "empty", "move"]))
        if change == "drop" and parent is not None:
            parent.remove(element)
        elif change == "duplicate" and parent is not None:
            parent.insert(list(parent).index(element), copy.deepcopy(element))
        elif change == "rename":
            element.tag = _rename(element.tag, draw(st.sampled_from(BOD_NAMES) | st.from_regex(r"\A[A-Za-z]\w{0,8}\Z")))
        elif change == "text":
            element.text = draw(st.sampled_from(TRICKY_TEXT) | st.text(max_size=20) | NUMBER_LIKE)
        elif change == "attribute":
            # Mostly an attribute the reader looks at (variationID, actionCode, sequence, ...), else a new one.
            element = draw(st.sampled_from([e for e in elements if e.attrib] or elements))
            element.set(
                draw(st.sampled_from(sorted(element.attrib) or BOD_ATTRIBUTES) | st.sampled_from(BOD_ATTRIBUTES)),
                draw(st.sampled_from(TRICKY_TEXT) | st.text(max_size=8) | NUMBER_LIKE),
            )
        elif change == "number":
            # The numbers the envelope reads: the variation (attribute, or in the BODID) and address line order.
            numbered = [(e, key) for e in elements for key in e.attrib if key in ("variationID", "sequence")]
            bod_ids = [e for e in elements if e.tag.endswith("BODID")]
            value = draw(NUMBER_LIKE | st.sampled_from(TRICKY_TEXT))
            in_an_attribute = draw(st.booleans())
            if numbered and in_an_attribute:
                numbered_element, key = draw(st.sampled_from(numbered))
                numbered_element.set(key, value)
            elif bod_ids:
                noun = root.tag.rsplit("}", 1)[-1][len("Sync") :]
                bod_ids[0].text = f"infor-nid:TST:100_AAA:100:DOC1:1?{noun}&verb=Sync&variationID={value}"
        elif change == "empty":
            element[:] = []
        elif change == "move" and parent is not None:
            parent.remove(element)
            root.append(element)
    # Encoded by hand: a lone surrogate in the odd texts must reach the parser, not stop the serializer.
    return b"<?xml version='1.0' encoding='utf-8'?>\n" + ET.tostring(root, encoding="unicode").encode(
        "utf-8", "surrogatepass"
    )


@st.composite
def damaged_bod_bytes(draw: st.DrawFn) -> bytes:
    """A valid BOD damaged as text: DTDs and entities, fragments anywhere, another declared encoding, deep nesting."""
    xml = draw(st.sampled_from(BOD_SEEDS))
    declaration, _, body = xml.partition(b"?>")
    declaration += b"?>"
    change = draw(st.sampled_from(["prologue", "fragment", "declaration", "deep", "re-encode", "truncate"]))
    if change == "prologue":
        return declaration + draw(st.sampled_from(XML_PROLOGUES)) + body.replace(b"BOD", b"BOD&e;", 1)
    if change == "fragment":
        at = draw(st.integers(0, len(body)))
        return declaration + body[:at] + draw(st.sampled_from(XML_FRAGMENTS)) + body[at:]
    if change == "declaration":
        encoding = draw(st.from_regex(r"\A[A-Za-z][A-Za-z0-9_-]{0,11}\Z").map(lambda name: name.encode()))
        return (
            draw(st.sampled_from(XML_DECLARATIONS) | st.just(b"<?xml version='1.0' encoding='%s'?>" % encoding)) + body
        )
    if change == "deep":
        depth = draw(DEPTHS)
        at = body.index(b"</DataArea>") if draw(st.booleans()) else body.index(b"<ApplicationArea>")
        return declaration + body[:at] + b"<D>" * depth + b"</D>" * depth + body[at:]
    if change == "re-encode":
        return body.decode("utf-8").encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp500"])), "replace")
    return xml[: draw(st.integers(0, len(xml)))]


def assert_valid_bod(parsed: ParsedBod) -> None:
    assert parsed.bod_id
    assert parsed.events
    for event in parsed.events:
        payload = event.payload
        assert isinstance(payload, event.topic.payload)
        # What bod-listener publishes is what the topic's consumers will read back.
        assert type(payload).model_validate_json(payload.model_dump_json()) == payload


#: "²".isdigit() is True, int("²") raises.
INFOR_NID_WITH_SUPERSCRIPT_VARIATION = (
    b"infor-nid:TST:100_AAA:100:ITM000001:1?ItemMaster&amp;verb=Sync&amp;variationID=\xc2\xb2"
)


def test_the_seed_bods_are_valid() -> None:
    for xml in BOD_SEEDS:
        assert_valid_bod(parse_bod(xml))


@FUZZ
@given(xml=st.binary(max_size=400) | mutated_bod_tree() | damaged_bod_bytes() | mutated_bytes(BOD_SEEDS))
@example(xml=b"<?xml version='1.0' encoding='x-unknown'?><SyncItemMaster/>")
@example(xml=BOD_SEEDS[0].replace(b'variationID="3"', b'variationID="\xc2\xb2"'))
@example(xml=BOD_SEEDS[0].replace(b'variationID="3"', b'variationID="' + b"9" * 5000 + b'"'))
@example(xml=BOD_SEEDS[1].replace(b'sequence="1"', b'sequence="\xc2\xb2"'))
@example(xml=re.sub(rb"<BODID>[^<]*", b"<BODID>" + INFOR_NID_WITH_SUPERSCRIPT_VARIATION, BOD_SEEDS[0]))
@example(xml=b" " * (5 * 1024 * 1024 + 1))
def test_a_bod_is_parsed_or_refused_with_a_bod_error(xml: bytes) -> None:
    parsed = parsed_or_refused(lambda: parse_bod(xml), BodError, shown=xml)
    if parsed is not None:
        assert_valid_bod(parsed)


# --- 3. the .ionapi file -----------------------------------------------------------------------------------------

IONAPI_KEYS = ("ti", "ci", "cs", "iu", "pu", "ot", "or", "cn", "saak", "sask", "oa", "ev", "v")
IONAPI_SEED: dict[str, Any] = {
    "ti": "TST_TENANT", "cn": "m3bridge", "dt": "12", "ci": "TST_TENANT~abc", "cs": "client-secret",
    "iu": "https://mingle-ionapi.example/", "pu": "https://mingle-sso.example/TST_TENANT/as/",
    "oa": "authorization.oauth2", "ot": "token.oauth2", "or": "revoke_token.oauth2", "ev": "U1", "v": "1.1",
    "saak": "TST_TENANT#abc", "sask": "account-secret",
}  # fmt: skip


@pytest.fixture(scope="module")
def ionapi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ionapi")


@FUZZ
@given(content=json_bodies((IONAPI_SEED,), IONAPI_KEYS) | json_bodies((IONAPI_SEED,), IONAPI_KEYS).map(
    lambda body: b"\xef\xbb\xbf" + body
))  # fmt: skip
@example(content=b"[" * 100_000)
@example(content=b'{"ti": ' + b"[" * 5000 + b"]" * 5000 + b"}")
@example(content=b'{"ti": ' + b"1" * 5000 + b"}")
def test_an_ionapi_file_is_read_or_refused_with_an_ionapi_file_error(ionapi_dir: Path, content: bytes) -> None:
    path = ionapi_dir / f"{uuid.uuid4().hex}.ionapi"
    path.write_bytes(content)
    try:
        credentials = parsed_or_refused(lambda: IonApiCredentials.load(path), IonApiFileError, shown=content)
    finally:
        path.unlink()
    if credentials is not None:
        assert credentials.tenant
        assert credentials.client_id
        assert credentials.ion_api_url
        assert credentials.auth_server_url
        assert credentials.token_url
        assert credentials.m3_base_url
        assert credentials.grant_type in ("password", "client_credentials")


# --- 4. M3 MI answers ---------------------------------------------------------------------------------------------

MI_KEYS = (
    "Program", "Transaction", "Metadata", "Field", "@name", "@type", "@length", "@description", "MIRecord",
    "RowIndex", "NameValue", "Name", "Value", "ErrorMessage", "@code", "@field", "Message", "results", "records",
    "errorMessage", "errorCode", "errorField", "errorType", "transaction",
)  # fmt: skip
MI_SEEDS: tuple[Any, ...] = (
    {
        "Program": "CRS610MI", "Transaction": "LstByNumber",
        "Metadata": {"Field": [{"@name": "CUNO", "@type": "A", "@length": "10", "@description": "Customer"},
                               {"@name": "CRLM", "@type": "N", "@length": 15},
                               {"@name": "LMDT", "@type": "D", "@length": "8"}]},
        "MIRecord": [{"RowIndex": "0", "NameValue": [{"Name": "CUNO", "Value": "C0001     "},
                                                     {"Name": "CRLM", "Value": "1500.50"},
                                                     {"Name": "LMDT", "Value": "20261120"}]}],
    },
    {"Metadata": {"Field": {"@name": "ORNO", "@type": "A", "@length": "10"}},
     "MIRecord": [{"NameValue": [{"Name": "ORNO", "Value": "1000000001"}]}]},
    {"@type": "ServerReturnedNOK", "@code": "WCU0203", "@field": "CUNO", "Message": "Customer C9 does not exist"},
    {"ErrorMessage": {"@type": "ServerReturnedNOK", "@code": "SES0005", "Message": "Not authorized"}},
    {"@type": "TransactionNotFound", "Message": "Transaction Nope does not exist"},
)  # fmt: skip
BULK_SEEDS: tuple[Any, ...] = (
    {"results": [{"transaction": "GetBasicData", "records": [{"CUNO": "C0001", "CRLM": "10"}]},
                 {"transaction": "GetBasicData", "errorMessage": "Customer C9 does not exist", "errorCode": "WCU0203",
                  "errorField": "CUNO", "errorType": "ServerReturnedNOK"}]},
    {"results": [{"transaction": "GetBasicData", "records": []}, {"transaction": "GetBasicData"}]},
)  # fmt: skip


def test_the_seed_mi_answers_are_read() -> None:
    rows, specs = m3_wire.parse_v1(MI_SEEDS[0], "CRS610MI", "LstByNumber")
    assert rows[0]["CUNO"] == "C0001     "
    assert set(specs) == {"CUNO", "CRLM", "LMDT"}
    with pytest.raises(M3Error):
        m3_wire.parse_v1(MI_SEEDS[2], "CRS610MI", "GetBasicData")


@FUZZ
@given(body=json_values(MI_KEYS) | mutated_json(MI_SEEDS, MI_KEYS))
def test_an_mi_json_answer_is_rows_or_an_m3_error(body: Any) -> None:
    parsed = parsed_or_refused(lambda: m3_wire.parse_v1(body, "CRS610MI", "LstByNumber"), M3Error, shown=body)
    if parsed is not None:
        rows, specs = parsed
        assert all(isinstance(row, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in row.items())
                   for row in rows)  # fmt: skip
        assert all(spec.type in ("A", "N", "D") for spec in specs.values())


def m3_client_answering(status: int, content_type: str, body: bytes) -> tuple[M3Client, httpx.AsyncClient]:
    """The real M3 client, one attempt per call, in front of a Gateway that gives this one answer to everything."""

    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": content_type}, content=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return M3Client(FixedLeases(), http, validate=False, max_attempts=1), http  # type: ignore[arg-type]


def gateway_answers(seeds: tuple[Any, ...]) -> st.SearchStrategy[tuple[int, str, bytes]]:
    return st.tuples(
        st.sampled_from([200, 200, 200, 400, 400, 401, 403, 404, 429, 500, 502, 504, 302, 418]),
        st.sampled_from(["application/json", "application/json; charset=utf-8", "text/html", ""]),
        json_bodies(seeds, MI_KEYS),
    )


@FUZZ
@given(answer=gateway_answers(MI_SEEDS))
@example(answer=(200, "application/json", b"[" * 100_000))
@example(answer=(400, "application/json", b'{"results": [1]}'))
def test_an_mi_http_answer_is_records_or_an_m3_error(answer: tuple[int, str, bytes]) -> None:
    status, content_type, body = answer

    async def call() -> Any:
        client, http = m3_client_answering(status, content_type, body)
        async with http:
            return await client.execute("CRS610MI", "LstByNumber", {"CUNO": "C0001"}, priority=Priority.TRANSACTIONAL)

    records = parsed_or_refused(lambda: asyncio.run(call()), M3Error, shown=answer)
    if records is not None:
        assert isinstance(records, list)
        assert all(isinstance(record, dict) for record in records)


@FUZZ
@given(answer=gateway_answers(BULK_SEEDS))
@example(answer=(200, "application/json", b'{"results": [1, 2]}'))
@example(answer=(200, "application/json", b'{"results": [{"records": [1]}, {}]}'))
def test_a_bulk_http_answer_is_outcomes_or_an_m3_error(answer: tuple[int, str, bytes]) -> None:
    status, content_type, body = answer
    transactions = [("GetBasicData", {"CUNO": "C0001"}), ("GetBasicData", {"CUNO": "C0009"})]

    async def call() -> Any:
        client, http = m3_client_answering(status, content_type, body)
        async with http:
            return await client.bulk("CRS610MI", transactions, priority=Priority.TRANSACTIONAL)

    outcomes = parsed_or_refused(lambda: asyncio.run(call()), M3Error, shown=answer)
    if outcomes is not None:
        assert len(outcomes) == len(transactions)
        assert all(outcome.error is None or isinstance(outcome.error, M3Error) for outcome in outcomes)


# --- 5. Kafka payloads ---------------------------------------------------------------------------------------------


def _seed_payloads() -> dict[type[BaseModel], list[Any]]:
    """A valid JSON payload per model the bridge itself produces from outside input (the seeds to mutate)."""
    models: dict[type[BaseModel], list[Any]] = {}
    produced: list[BaseModel] = [
        quote_from_document(DOCUMENT_SEED, approval_event="QuoteValet.Accepted", approved_at=APPROVED_AT),
        customer_from_contact(CONTACT_SEED, change="updated", changed_at=APPROVED_AT),
        *(event.payload for xml in BOD_SEEDS for event in parse_bod(xml).events),
    ]
    for payload in produced:
        models.setdefault(type(payload), []).append(json.loads(payload.model_dump_json()))
    return models


SEED_PAYLOADS = _seed_payloads()
JSON_TOPICS = tuple(topic for topic in ALL_TOPICS if topic.content_type == "application/json")
PAYLOAD_KEYS = tuple(
    sorted({key for seeds in SEED_PAYLOADS.values() for seed in seeds for key in seed} | {"lines", "DocNo"})
)


@st.composite
def kafka_messages(draw: st.DrawFn) -> tuple[type[BaseModel], bytes]:
    model = draw(st.sampled_from(JSON_TOPICS)).payload
    seeds = tuple(SEED_PAYLOADS.get(model) or [{}])
    return model, draw(json_bodies(seeds, PAYLOAD_KEYS))


@FUZZ
@given(message=kafka_messages())
def test_a_kafka_payload_decodes_to_its_model_or_is_poison(message: tuple[type[BaseModel], bytes]) -> None:
    model, body = message
    payload = parsed_or_refused(lambda: decode(model, body), PoisonMessageError, shown=(model, body))
    if payload is not None:
        assert isinstance(payload, model)


APPROVED_SUBSCRIBER = f"properties/approved-{uuid.uuid4().hex[:8]}"  # metrics labels are process-wide
CONSUMERS = Consumers("properties", stall_after_s=30)
CONSUMERS.add(APPROVED_SUBSCRIBER, "quotewerks.quote.approved.v1")


class DeadLetters:
    def __init__(self) -> None:
        self.error_classes: list[str] = []

    async def __call__(self, message: Any, *, error_class: str, error_message: str, attempts: int, **_: Any) -> None:
        assert error_message
        assert attempts == 1
        self.error_classes.append(error_class)


@FUZZ
@given(body=json_bodies(tuple(SEED_PAYLOADS[contracts.QuoteApproved]), PAYLOAD_KEYS))
@example(body=b"[" * 100_000)
def test_a_consumer_hands_over_a_valid_payload_or_dead_letters_it_once(body: bytes) -> None:
    handled: list[Any] = []
    letters = DeadLetters()

    async def handler(payload: Any, _message: Any) -> None:
        handled.append(payload)

    consumer = Consumer(
        service="properties",
        subscriber=APPROVED_SUBSCRIBER,
        model=contracts.QuoteApproved,
        handler=handler,
        dead_letter=letters,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        policy=RetryPolicy(max_attempts=1),
        progress=CONSUMERS.progress[APPROVED_SUBSCRIBER],
    )
    message = SimpleNamespace(raw_message=SimpleNamespace(topic="quotewerks.quote.approved.v1", partition=0, offset=1))
    with no_hang():
        asyncio.run(consumer.consume(body, message))
    if handled:
        assert not letters.error_classes
        assert isinstance(handled[0], contracts.QuoteApproved)
    else:
        assert letters.error_classes in ([UNDECODABLE], [INVALID])
