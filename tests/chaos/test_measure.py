"""The chaos suite's judge counts each defect from ground truth (no processes: synthetic M3/QuoteWerks data)."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.contracts import DeadLetter, OrderResult, Problem, QuoteApproved
from tests.chaos.faults import POISON_KINDS, poison_payload
from tests.chaos.measure import DEFECTS, Row, Truth, judge
from tests.chaos.quotes import PlannedLine, PlannedQuote, new_customer, plan_quotes

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BASELINE = {"C000001", "C000002"}


def quote(number: str, *, customer: str | None = "C000001", bad: str = "", email: str = "") -> PlannedQuote:
    planned = PlannedQuote(number=number, lines=[PlannedLine("ITM000001", 2)], customer=customer, doc_no=number)
    planned.expected = [("ITM000001", Decimal(2), Decimal("10.00"))]
    if bad:
        planned.bad_items = [bad]
    if customer is None:
        planned.sold_to = {"SoldToEmail": email, "SoldToCompany": email}
    return planned


def order(orno: str, cuor: str, lines: int = 1, price: str = "10") -> dict[str, Any]:
    line = {"ITNO": "ITM000001", "ORQT": "2", "SAPR": price, "DIP1": "0"}
    return {"ORNO": orno, "CUOR": cuor, "CUNO": "C000001", "lines": [line] * lines}


def customers(*extra: tuple[str, str]) -> list[dict[str, Any]]:
    rows = [{"CUNO": "C000001", "CUNM": "Old One", "MAIL": "one@old.example.com"},
            {"CUNO": "C000002", "CUNM": "Old Two", "MAIL": "two@old.example.com"}]  # fmt: skip
    return rows + [{"CUNO": cuno, "CUNM": mail, "MAIL": mail} for cuno, mail in extra]


def letter(key: str, error_class: str) -> DeadLetter:
    return DeadLetter(
        service="order-writer", origin_topic="t", origin_partition=0, origin_offset=0, original_key=key,
        original_payload="", error_class=error_class, error_message="x", attempts=1, failed_at=NOW,
    )  # fmt: skip


def created(doc: str, orno: str) -> dict[str, str]:
    return {"CustomText01": orno, "CustomText02": f"M3 order {orno} for customer C000001, status 22"}


def test_a_clean_run_has_no_defects() -> None:
    quotes = [quote("Q1"), quote("Q2", bad="NOPE-1"), quote("Q3", customer=None, email="new@x.example.com")]
    truth = Truth(
        headers={"Q1": created("Q1", "1000000001"), "Q2": {"CustomText02": "M3 held: item NOPE-1 is unknown"},
                 "Q3": created("Q3", "1000000002")},
        orders=[order("1000000001", "Q1"), order("1000000002", "Q3")],
        batch_orders=[], customers=customers(("C000003", "new@x.example.com")),
        results={}, dead_letters=[letter("Q2", "held"), letter("POISON-001", "undecodable")],
    )  # fmt: skip
    row = judge(Row("t"), quotes, truth, BASELINE, {"POISON-001"})
    assert row.defects == 0, row.summary()
    assert (row.confirmed, row.held_ok, row.must_hold) == (2, 1, 1)
    assert row.dead_letters == {"order-writer:held": 1, "order-writer:undecodable": 1}


def test_every_defect_is_counted() -> None:
    quotes = [
        quote("Q1"), quote("Q2"), quote("Q3"), quote("Q4"), quote("Q5", bad="ITM000033"),
        quote("Q6", customer=None, email="new@x.example.com"), quote("Q7"),
    ]  # fmt: skip
    failed = OrderResult(doc_no="Q3", outcome="failed", decided_at=NOW,
                         problems=[Problem(error_class="business", message="already confirmed")])  # fmt: skip
    truth = Truth(
        headers={
            "Q1": created("Q1", "1000000001"),  # two orders
            "Q2": created("Q2", "1000000003"),  # doubled lines
            "Q3": {"CustomText02": "M3 failed: already confirmed"},  # false failure
            "Q4": {},  # no outcome
            "Q5": created("Q5", "1000000005"),  # had to be held
            "Q6": created("Q6", "1000000006"),
            "Q7": created("Q7", "1000000099"),  # wrong number written back
        },
        orders=[order("1000000001", "Q1"), order("1000000002", "Q1"), order("1000000003", "Q2", lines=2),
                order("1000000004", "Q3"), order("1000000005", "Q5"), order("1000000006", "Q6", price="11"),
                order("1000000007", "Q7")],
        batch_orders=[{"ORNO": "T000000009", "CUOR": "Q2", "STATUS": "", "LINES": 1}],
        customers=customers(("C000003", "new@x.example.com"), ("C000004", "new@x.example.com"),
                            ("C000005", "one@old.example.com")),
        results={"Q3": [failed]}, dead_letters=[],
    )  # fmt: skip
    row = judge(Row("t"), quotes, truth, BASELINE, {"POISON-001"})
    counted = {name: getattr(row, name) for name in DEFECTS}
    assert counted == {
        "no_outcome": 1, "multi_order": 1, "lines_differ": 2, "dup_customers": 2, "orphan_batches": 1,
        "false_failures": 1, "wrong_outcome": 2, "poison_lost": 1,
    }, row.summary()  # fmt: skip


def test_the_plan_mixes_sizes_customers_and_unorderable_quotes() -> None:
    quotes = plan_quotes(300, 42)
    assert {len(q.lines) - len(q.bad_items) for q in quotes} == {1, 10, 50}
    assert sum(q.customer is None for q in quotes) > 60
    assert len({q.new_customer_email for q in quotes if q.customer is None}) < sum(q.customer is None for q in quotes)
    assert 5 < sum(q.must_hold for q in quotes) < 45
    assert plan_quotes(300, 42)[7].body() == quotes[7].body()
    assert new_customer(42, 1)["SoldToEmail"] != new_customer(42, 2)["SoldToEmail"]


def test_poison_payloads_are_not_valid_quotes() -> None:
    for kind in POISON_KINDS:
        with pytest.raises((ValidationError, UnicodeDecodeError)):
            QuoteApproved.model_validate_json(poison_payload(kind, "POISON-1"))
    assert len(poison_payload("oversized", "POISON-1")) > 800_000
