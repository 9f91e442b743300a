"""order-writer's order path against the M3 simulator, with answers lost after M3 acted and resumes from each
ledger state: every approved quote ends as exactly one confirmed order with exactly its lines, one customer, and
no batch order left open."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.order_writer import results
from services.order_writer.orders import OrderWriter, RejectedError
from shared.contracts import QuoteApproved
from shared.m3 import M3OutcomeUnknownError
from shared.mapping import load_rules
from shared.platform.consuming import NOT_RETRYABLE, RETRIES_EXHAUSTED, Failure
from shared.platform.state import ledger
from shared.platform.state.ledger import OrderState
from tests.unit.m3_faults import Fault, FaultyM3

pytestmark = pytest.mark.unit

RULES = load_rules(Path(__file__).resolve().parents[2] / "deploy" / "config" / "order-mapping.yaml")
LOST: list[Fault] = ["timeout", "cut", "504", "502"]


def writer(m3: FaultyM3, engine: AsyncEngine) -> OrderWriter:
    return OrderWriter(m3.client, engine, RULES, settle_s=0)


def quote(m3: FaultyM3, doc_no: str, *, lines: int = 3, company: str = "", revision: int = 0) -> QuoteApproved:
    items = m3.sim.active_items()[:lines]
    name = company or f"Fresh Customer {doc_no}"
    return QuoteApproved.model_validate(
        {
            "DocNo": doc_no,
            "Revision": revision,
            "SoldTo": {
                "Company": name,
                "Address1": "1 Main Street",
                "City": "Springfield",
                "PostalCode": "12345",
                "Country": "Sweden",
                "Email": f"buyer@{doc_no.lower()}.example",
            },
            "Lines": [
                {"LineType": 1, "ManufacturerPartNumber": item, "QtyTotal": str(n + 1), "UnitPrice": "10.50"}
                for n, item in enumerate(items)
            ],
            "ApprovedAt": "2026-11-23T10:00:00Z",
        }
    )


def assert_exactly_one_correct_order(m3: FaultyM3, approved: QuoteApproved) -> str:
    orders = m3.orders_for(approved.doc_no)
    assert len(orders) == 1, orders
    lines = m3.sim.store.orders[orders[0]].lines
    got = sorted((str(line["ITNO"]), Decimal(str(line["ORQT"]))) for line in lines)
    want = sorted((line.manufacturer_part_number, Decimal(str(line.qty_total))) for line in approved.lines)
    assert got == want
    assert m3.open_batch_orders() == []
    assert len(m3.customers_named(approved.sold_to.company)) == 1
    return orders[0]


async def test_an_undisturbed_quote_becomes_one_order(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "Q100")
    result = await writer(m3, engine).process(approved)
    assert result.outcome == "created"
    assert result.order_number == assert_exactly_one_correct_order(m3, approved)
    entry = await ledger.entry(engine, "Q100", 0)
    assert entry is not None
    assert entry.state == OrderState.CONFIRMED


@pytest.mark.parametrize("transaction", ["Add", "AddBatchHead", "AddBatchLine", "Confirm"])
@pytest.mark.parametrize("fault", LOST)
async def test_a_write_whose_answer_is_lost_after_m3_did_it_is_not_done_twice(
    m3: FaultyM3, engine: AsyncEngine, transaction: str, fault: Fault
) -> None:
    approved = quote(m3, f"Q{transaction}{fault}")
    m3.transport.lose(transaction, fault)
    result = await writer(m3, engine).process(approved)
    assert m3.transport.faults == {f"{transaction}:{fault}": 1}
    assert result.outcome == "created"
    assert result.order_number == assert_exactly_one_correct_order(m3, approved)
    # The write went to M3 once: what it did was read back, not done again.
    assert m3.transport.sent[transaction] == 1


@pytest.mark.parametrize("transaction", ["Add", "AddBatchHead", "AddBatchLine", "Confirm"])
async def test_a_refused_connection_is_retried_by_the_client(
    m3: FaultyM3, engine: AsyncEngine, transaction: str
) -> None:
    approved = quote(m3, f"QR{transaction}")
    m3.transport.lose(transaction, "refused", "refused")
    result = await writer(m3, engine).process(approved)
    assert result.outcome == "created"
    assert_exactly_one_correct_order(m3, approved)
    assert m3.transport.sent[transaction] == 1


async def test_lost_answers_on_every_write_still_give_one_order(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QALL", lines=10)
    for transaction in ("Add", "AddBatchHead", "AddBatchLine", "Confirm"):
        m3.transport.lose(transaction, "timeout", "504")
    result = await writer(m3, engine).process(approved)
    assert result.outcome == "created"
    assert_exactly_one_correct_order(m3, approved)


async def test_an_unresolved_unknown_outcome_is_raised_and_the_redelivery_resumes(
    m3: FaultyM3, engine: AsyncEngine
) -> None:
    approved = quote(m3, "QAGAIN")
    m3.transport.lose("Confirm", "refused", "refused", "refused", "refused")  # the client gives up: nothing sent
    with pytest.raises(Exception) as raised:
        await writer(m3, engine).process(approved)
    assert getattr(raised.value, "retryable", False)
    entry = await ledger.entry(engine, "QAGAIN", 0)
    assert entry is not None
    assert entry.state == OrderState.ORDERING
    assert entry.batch_order_number
    assert m3.orders_for("QAGAIN") == []
    result = await writer(m3, engine).process(approved)  # the redelivery
    assert result.outcome == "created"
    assert_exactly_one_correct_order(m3, approved)
    assert m3.transport.sent["AddBatchHead"] == 1


async def test_a_write_that_keeps_failing_before_m3_raises_outcome_unknown_and_resumes_later(
    m3: FaultyM3, engine: AsyncEngine
) -> None:
    approved = quote(m3, "QLOST")
    m3.transport.lose("AddBatchHead", "503-unsent", "503-unsent", "503-unsent")  # M3 never saw them, we cannot know
    with pytest.raises(M3OutcomeUnknownError):
        await writer(m3, engine).process(approved)
    assert m3.open_batch_orders() == []
    result = await writer(m3, engine).process(approved)
    assert result.outcome == "created"
    assert_exactly_one_correct_order(m3, approved)


# --- resuming from each ledger state -------------------------------------------------------------------------


async def started_batch(m3: FaultyM3, engine: AsyncEngine, approved: QuoteApproved, lines: int) -> tuple[str, str]:
    """What a crash leaves behind: customer created and linked, batch head with `lines` of the quote's lines."""
    w = writer(m3, engine)
    customer = await w.customer(approved)
    plan_lines = list(approved.lines)
    head = m3.run("OIS100MI", "AddBatchHead", CUNO=customer, CUOR=approved.doc_no, ORTP="100", FACI="100")
    batch = head[0]["ORNO"]
    for number, line in enumerate(plan_lines[:lines], start=1):
        m3.run(
            "OIS100MI",
            "AddBatchLine",
            ORNO=batch,
            ITNO=line.manufacturer_part_number,
            ORQT=str(line.qty_total),
            CUPO=str(number),
        )
    return customer, batch


@pytest.mark.parametrize("recorded", [True, False], ids=["batch-number-recorded", "answer-lost-before-recording"])
@pytest.mark.parametrize("lines_present", [0, 2, 3])
async def test_a_redelivery_resumes_the_batch_order_it_started(
    m3: FaultyM3, engine: AsyncEngine, recorded: bool, lines_present: int
) -> None:
    approved = quote(m3, f"QRES{int(recorded)}{lines_present}")
    customer, batch = await started_batch(m3, engine, approved, lines_present)
    await ledger.record(
        engine,
        approved.doc_no,
        0,
        OrderState.ORDERING,
        customer_number=customer,
        batch_order_number=batch if recorded else None,
    )
    result = await writer(m3, engine).process(approved)
    assert result.outcome == "created"
    assert_exactly_one_correct_order(m3, approved)
    assert m3.transport.sent["AddBatchHead"] == 0  # resumed, not started again
    assert m3.sim.store.batch_orders[batch].status == "90"


async def test_a_line_added_twice_is_removed_before_confirm(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QTWICE")
    customer, batch = await started_batch(m3, engine, approved, 3)
    first = approved.lines[0]
    m3.run("OIS100MI", "AddBatchLine", ORNO=batch, ITNO=first.manufacturer_part_number, ORQT="1", CUPO="1")
    await ledger.record(engine, approved.doc_no, 0, OrderState.ORDERING, customer_number=customer,
                        batch_order_number=batch)  # fmt: skip
    await writer(m3, engine).process(approved)
    assert_exactly_one_correct_order(m3, approved)


async def test_an_order_confirmed_before_the_crash_is_announced_not_repeated(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QDONE")
    customer, batch = await started_batch(m3, engine, approved, 3)
    order = m3.run("OIS100MI", "Confirm", ORNO=batch)[0]["ORNO"]
    await ledger.record(engine, approved.doc_no, 0, OrderState.ORDERING, customer_number=customer,
                        batch_order_number=batch)  # fmt: skip
    result = await writer(m3, engine).process(approved)
    assert (result.outcome, result.order_number) == ("created", order)
    assert_exactly_one_correct_order(m3, approved)
    assert m3.transport.sent["Confirm"] == 0


async def test_confirm_reaching_m3_twice_is_success_for_our_own_order(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QCONF2")
    m3.transport.lose("Confirm", "twice")  # the second Confirm answers "already confirmed"
    result = await writer(m3, engine).process(approved)
    assert result.outcome == "created"
    assert_exactly_one_correct_order(m3, approved)


async def test_a_confirmed_order_is_announced_again_from_the_ledger(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QAGAIN2")
    first = await writer(m3, engine).process(approved)
    sent = dict(m3.transport.sent)
    again = await writer(m3, engine).process(approved)
    assert again.order_number == first.order_number
    assert (first.order_status, again.order_status) == ("", "22"), "Confirm says no status; the announcement reads it"
    # Nothing written again; only the order's status read for the announcement (and, once per process, the
    # API repository's fields of GetHead).
    calls = {t: n - sent.get(t, 0) for t, n in m3.transport.sent.items() if n != sent.get(t, 0)}
    assert {t: n for t, n in calls.items() if t != "LstFields"} == {"GetHead": 1}


# --- giving up: no batch order is left behind --------------------------------------------------------------


async def test_a_refused_confirm_deletes_the_batch_order(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QREFUSE", company="Blocked Buyer AB")
    w = writer(m3, engine)
    customer = await w.customer(approved)
    m3.sim.store.customers[customer]["STAT"] = "90"  # M3 refuses orders for a blocked customer at Confirm
    with pytest.raises(RejectedError) as rejected:
        await w.process(approved)
    assert "status 90" in str(rejected.value)
    assert m3.open_batch_orders() == []
    assert m3.transport.sent["DelBatchHead"] == 1
    entry = await ledger.entry(engine, approved.doc_no, 0)
    assert entry is not None
    assert entry.state == OrderState.FAILED
    assert entry.batch_order_number is None


async def test_a_quote_held_after_its_batch_order_started_deletes_it(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QHOLD")
    customer, batch = await started_batch(m3, engine, approved, 1)
    await ledger.record(engine, approved.doc_no, 0, OrderState.ORDERING, customer_number=customer,
                        batch_order_number=batch)  # fmt: skip
    item = m3.sim.store.item(approved.lines[1].manufacturer_part_number)
    assert item is not None
    item.stat = "90"  # discontinued in M3 before the redelivery
    result = await writer(m3, engine).process(approved)
    assert result.outcome == "held"
    assert batch not in m3.sim.store.batch_orders
    assert m3.orders_for(approved.doc_no) == []


async def test_a_batch_order_that_cannot_be_deleted_is_left_for_an_operator(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QLEFT", company="Blocked Too AB")
    w = writer(m3, engine)
    customer = await w.customer(approved)
    m3.sim.store.customers[customer]["STAT"] = "90"
    original = m3.sim.execute

    def refuse_delete(user: str, program: str, transaction: str, inputs: dict[str, str], **options: Any) -> Any:
        if transaction == "DelBatchHead":
            return original(user, program, "DelBatchHead", {"ORNO": "NO-SUCH"}, **options)
        return original(user, program, transaction, inputs, **options)

    m3.sim.execute = refuse_delete  # type: ignore[method-assign]
    with pytest.raises(RejectedError):
        await w.process(approved)
    left = await ledger.batch_orders_left(engine)
    assert [(e.doc_no, e.batch_order_number) for e in left] == [(approved.doc_no, m3.open_batch_orders()[0])]


async def test_a_newer_revision_replaces_the_older_ones_batch_order(m3: FaultyM3, engine: AsyncEngine) -> None:
    older = quote(m3, "QREV", revision=1)
    customer, batch = await started_batch(m3, engine, older, 2)
    await ledger.record(engine, "QREV", 1, OrderState.ORDERING, customer_number=customer, batch_order_number=batch)
    newer = quote(m3, "QREV", lines=2, revision=2)
    result = await writer(m3, engine).process(newer)
    assert result.outcome == "created"
    assert batch not in m3.sim.store.batch_orders
    assert_exactly_one_correct_order(m3, newer)
    late = await writer(m3, engine).process(older)  # the older revision redelivered after the newer one
    assert late.outcome == "held"
    assert "revision 2" in late.problems[0].message
    assert len(m3.orders_for("QREV")) == 1


def test_a_quote_given_up_on_is_reported_held_with_the_way_to_resume_it(m3: FaultyM3) -> None:
    approved = quote(m3, "AAAQ9901", revision=2)
    failure = Failure(RETRIES_EXHAUSTED, "M3OutcomeUnknownError: " + "x" * 5000, attempts=8)
    result = results.given_up(approved, failure)
    assert (result.doc_no, result.revision, result.outcome) == ("AAAQ9901", 2, "held")
    [problem] = result.problems
    assert problem.error_class == "transient"
    assert "not finished after 8 attempt(s), M3 did not answer in time" in problem.message
    assert results.REPLAY_HINT in problem.message
    bug = results.given_up(approved, Failure(NOT_RETRYABLE, "KeyError: 'ORNO'"))
    assert "it could not be processed (KeyError: 'ORNO')" in bug.problems[0].message


async def test_an_undisturbed_order_of_a_known_customer_takes_four_gateway_requests(
    m3: FaultyM3, engine: AsyncEngine
) -> None:
    """The items in one bulk GetItmBasic, AddBatchHead, the lines in one bulk AddBatchLine, Confirm: nothing read
    back that M3 already answered (a line M3 accepted is added; the order's status comes with M3's status events)."""
    w = writer(m3, engine)
    first = quote(m3, "QFIRST", lines=10, company="Regular Buyer AB")
    await w.process(first)  # now the customer exists in M3 and is linked
    before = dict(m3.transport.sent)
    second = quote(m3, "QSECOND", lines=10).model_copy(update={"sold_to": first.sold_to})
    result = await w.process(second)
    assert result.outcome == "created"
    assert_exactly_one_correct_order(m3, second)
    sent = {t: n - before.get(t, 0) for t, n in m3.transport.sent.items() if n != before.get(t, 0)}
    assert sent == {"GetItmBasic": 1, "AddBatchHead": 1, "AddBatchLine": 1, "Confirm": 1}
