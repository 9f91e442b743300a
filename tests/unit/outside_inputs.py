"""What the property tests of the parsers that take outside input share (test_properties_*.py): the hypothesis
settings (a few derandomised examples per property in `make test`; 100, or `M3B_FUZZ_EXAMPLES`, in
`make fuzz`), the hang guard, and the strategies for noise and
near-valid mutations of valid examples: parts dropped, duplicated, renamed or retyped, huge numbers, deep nesting,
bytes that are not UTF-8."""

from __future__ import annotations

import contextlib
import copy
import json
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from types import FrameType
from typing import Any, TypeVar

from hypothesis import HealthCheck, note, settings, strategies as st

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


# --- valid examples: the seeds the mutations start from, shared by the properties and the Kafka payloads ------

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
