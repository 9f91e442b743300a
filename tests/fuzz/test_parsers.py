"""The parsers of outside input under hypothesis: whatever they are given, they answer or raise their own documented
error, nothing else, and they return (no hang). The mapping formula parser has its own in tests/unit/test_bad_inputs.

Examples per test: M3B_FUZZ_EXAMPLES x 10 (150 in `make test`, more in `make fuzz`)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.quote_ingest.webhooks import Delivery, parse
from shared.bods import BodError, ParsedBod, parse_bod
from shared.inbound import RejectedDeliveryError
from shared.ionapi import IonApiCredentials, IonApiFileError
from shared.m3.errors import M3Error
from shared.m3.wire import parse_v1
from simulators.ion.bods import (
    BodContext,
    PriceLine,
    build_customer_party_master,
    build_inventory_count,
    build_item_master,
    build_price_list,
    build_sales_order,
)
from tests.fuzz.conftest import figures_of
from tests.fuzz.harness import EXAMPLES, JSON_VALUES

FUZZ = settings(max_examples=EXAMPLES * 10, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@contextlib.contextmanager
def tried(parser: str, *expected: type[Exception]) -> Iterator[None]:
    """Count one input of `parser`; its documented errors are an answer, any other exception a crash (and fails)."""
    figures = figures_of(f"parser: {parser}")
    figures.requests += 1
    try:
        yield
    except expected:
        return
    except Exception as exc:
        figures.crashes += 1
        figures.note(f"{type(exc).__name__}: {exc}")
        raise


# --- webhook bodies (quote-ingest) -----------------------------------------------------------------------------------

WEBHOOK_KEYS = st.sampled_from(["event", "EventFullName", "DocNo", "docNo", "CMAccountNo", "customer_id", "x"])
WEBHOOK_BODIES = st.one_of(
    st.binary(max_size=2000),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(WEBHOOK_KEYS, JSON_VALUES, max_size=6).map(lambda value: json.dumps(value).encode()),
    st.integers(0, 3000).map(lambda depth: b'{"event": "E", "DocNo": ' + b"[" * depth + b"1" + b"]" * depth + b"}"),
)


@FUZZ
@given(body=WEBHOOK_BODIES)
def test_a_webhook_body_is_a_delivery_or_a_refusal(body: bytes) -> None:
    try:
        with tried("webhook body"):
            delivery = parse(body)
    except RejectedDeliveryError as exc:
        figures_of("parser: webhook body").answered(exc.status)
        assert 400 <= exc.status < 500
        return
    assert isinstance(delivery, Delivery)
    assert delivery.event and (delivery.doc_no or delivery.customer_id)


# --- BOD XML (bod-listener) ------------------------------------------------------------------------------------------

CTX = BodContext(tenant="TST", accounting_entity="100_AAA", location="100")
WHEN = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
VALID_BODS = [
    build_item_master(
        CTX, item_number="ITM000001", description="Bolt", long_description="Steel bolt", unit_of_measure="PCS",
        item_group="FAST", item_type="FIN", status="20", variation=7, changed_at=WHEN, creation=WHEN,
    ).xml,
    build_customer_party_master(
        CTX, customer_number="C000042", name="Nordic Tools AB", address_lines=["1 Harbour Road"], town="Stockholm",
        postal_code="11122", country="SE", phone="+46 1234567", email="orders@nordic.example.com", status="20",
        action="Add", variation=1, changed_at=WHEN,
    ).xml,
    build_sales_order(
        CTX, order_number="1000000001", status="22", highest_status="23", customer_order_number="AAAQ1001",
        customer_number="C000001", variation=2, changed_at=WHEN,
    ).xml,
    build_inventory_count(
        CTX, item_number="ITM000005", warehouse="200", on_hand="12", allocatable="10", allocated="2", unit="PCS"
    ).xml,
    build_price_list(
        CTX, price_list="STD", currency="EUR", variation=4,
        lines=[PriceLine("ITM000001", Decimal("12.50"), date(2025, 1, 1)), PriceLine("ITM000002", "3", None)],
    ).xml,
]  # fmt: skip
_TEXTS = re.compile(rb">([^<]*)<")
_ATTRIBUTES = re.compile(rb'="([^"]*)"')
_TAGS = re.compile(rb"<([A-Za-z:]+)[ >]")


@st.composite
def mutated_bods(draw: st.DrawFn) -> bytes:
    """A real BOD with some element texts or attribute values replaced, then maybe cut short or a tag renamed."""
    xml: bytes = draw(st.sampled_from(VALID_BODS))
    spots = [m.span(1) for m in _TEXTS.finditer(xml)] + [m.span(1) for m in _ATTRIBUTES.finditer(xml)]
    for start, end in sorted(draw(st.sets(st.sampled_from(spots), min_size=1, max_size=4)), reverse=True):
        text = draw(st.one_of(st.text(max_size=80), st.sampled_from(["", "-1", "1e400", "NaN", "9" * 40, "Delete"])))
        xml = xml[:start] + escape(text, {'"': "&quot;"}).encode("utf-8", "surrogatepass") + xml[end:]
    how = draw(st.sampled_from(["as is", "cut", "rename"]))
    if how == "cut":
        xml = xml[: draw(st.integers(0, len(xml)))]
    elif how == "rename":
        tag = draw(st.sampled_from(sorted(set(_TAGS.findall(xml)))))
        xml = xml.replace(b"<" + tag, b"<" + draw(st.sampled_from([b"X", b"Show", b"DataArea", b"ID"])))
    return xml


@FUZZ
@given(xml=st.one_of(mutated_bods(), st.binary(max_size=2000), st.text(max_size=500).map(str.encode)))
def test_a_bod_is_parsed_or_refused_with_a_bod_error(xml: bytes) -> None:
    parsed = None
    with tried("BOD XML", BodError):
        parsed = parse_bod(xml)
    assert parsed is None or isinstance(parsed, ParsedBod)


def test_the_valid_bods_the_mutations_start_from_parse() -> None:
    for xml in VALID_BODS:
        assert parse_bod(xml).events


# --- the .ionapi reader (token-service) ------------------------------------------------------------------------------

IONAPI_KEYS = st.sampled_from(["ti", "ci", "cs", "iu", "pu", "ot", "or", "cn", "saak", "sask", "x"])
IONAPI_FILES = st.one_of(
    st.binary(max_size=1000),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(IONAPI_KEYS, JSON_VALUES, max_size=10).map(lambda value: json.dumps(value).encode()),
    st.dictionaries(IONAPI_KEYS, st.text(max_size=30), min_size=5, max_size=10).map(
        lambda value: b"\xef\xbb\xbf" + json.dumps(value).encode()  # with a byte order mark, as Windows writes it
    ),
)


def _secrets_in(content: bytes) -> list[str]:
    try:
        data = json.loads(content.decode("utf-8-sig"))
    except ValueError:
        return []
    found = [data.get(key) for key in ("cs", "sask")] if isinstance(data, dict) else []
    return [value for value in found if isinstance(value, str) and len(value) >= 8]


@FUZZ
@given(content=IONAPI_FILES)
def test_an_ionapi_file_is_credentials_or_an_ionapi_file_error(
    content: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path: Path = tmp_path_factory.getbasetemp() / "fuzzed.ionapi"
    path.write_bytes(content)
    try:
        with tried(".ionapi file"):
            credentials = IonApiCredentials.load(path)
    except IonApiFileError as exc:
        assert not [secret for secret in _secrets_in(content) if secret in str(exc)]  # names keys, never a secret
        return
    assert credentials.tenant and credentials.m3_base_url and credentials.grant_type


# --- M3 MI REST answers (every M3 caller) ----------------------------------------------------------------------------

_FIELD_SPEC = st.dictionaries(st.sampled_from(["@name", "@type", "@length", "@description"]), JSON_VALUES)
_RECORD = st.fixed_dictionaries(
    {
        "NameValue": st.lists(
            st.fixed_dictionaries({"Name": JSON_VALUES, "Value": JSON_VALUES}) | JSON_VALUES, max_size=4
        )
        | JSON_VALUES
    }
)  # noqa: E501
MI_ANSWERS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "Program": st.text(max_size=10),
            "Transaction": st.text(max_size=10),
            "Metadata": JSON_VALUES
            | st.fixed_dictionaries(
                {}, optional={"Field": JSON_VALUES | _FIELD_SPEC | st.lists(_FIELD_SPEC, max_size=4)}
            ),
            "MIRecord": JSON_VALUES | st.lists(_RECORD | JSON_VALUES, max_size=4),
            "ErrorMessage": JSON_VALUES,
            "@type": JSON_VALUES | st.sampled_from(["ServerReturnedNOK", "TransactionNotFound"]),
            "@code": JSON_VALUES,
            "@field": JSON_VALUES,
            "Message": JSON_VALUES,
        },
    ),
)


@FUZZ
@given(body=MI_ANSWERS)
def test_an_mi_answer_is_rows_or_an_m3_error(body: Any) -> None:
    rows: list[dict[str, str]] = []
    with tried("M3 MI answer", M3Error):
        rows, specs = parse_v1(body, "MMS200MI", "GetItmBasic")
        assert all(spec.type in ("A", "N", "D") for spec in specs.values())
    assert all(isinstance(row, dict) and all(isinstance(v, str) for v in row.values()) for row in rows)
