"""What order-writer never forgets and never does twice, against the M3 simulator: a quote's batch orders (a held or
failed quote replayed looks for its order first, giving up never deletes a confirmed one), a quote's content (a
changed re-approval of a held quote is ordered; of an ordered one, held), a quote's owner (a worker whose lease
was taken over stops before its next M3 write) and a new customer's creation (claimed before CRS610MI/Add)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.order_writer import customer_creations
from services.order_writer.orders import OrderWriter
from shared.contracts import QuoteApproved
from shared.mapping import plan_customer
from shared.platform.state import db, ledger
from shared.platform.state.ledger import EntryBusyError, LeaseLostError, OrderState
from tests.unit.m3_faults import FaultyM3
from tests.unit.test_order_path import RULES, assert_exactly_one_correct_order, quote, started_batch

pytestmark = pytest.mark.unit


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
async def engine(state_file: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{state_file}"
    await db.migrate(url)
    created = db.create_engine(url)
    yield created
    await created.dispose()


def writer(m3: FaultyM3, engine: AsyncEngine, owner: str = "writer-a", lease_s: float = 60) -> OrderWriter:
    return OrderWriter(m3.client, engine, RULES, settle_s=0, owner=owner, lease_s=lease_s)


def with_line(approved: QuoteApproved, index: int, part: str) -> QuoteApproved:
    lines = list(approved.lines)
    lines[index] = lines[index].model_copy(update={"manufacturer_part_number": part})
    return approved.model_copy(update={"lines": lines})


# --- what M3 may hold is never forgotten ---------------------------------------------------------------------


async def test_a_held_quote_whose_order_went_through_is_found_when_replayed_not_ordered_again(
    m3: FaultyM3, engine: AsyncEngine
) -> None:
    """Confirm reached M3 but its answer was lost; the next attempt held the quote (an item was discontinued
    meanwhile). An operator replays it: the order is found by CUOR, announced, and nothing is sent again."""
    approved = quote(m3, "QHELDCONF")
    customer, batch = await started_batch(m3, engine, approved, 3)
    order = m3.run("OIS100MI", "Confirm", ORNO=batch)[0]["ORNO"]
    await ledger.record(engine, approved.doc_no, 0, OrderState.ORDERING, customer_number=customer,
                        batch_order_number=batch)  # fmt: skip
    await ledger.record(engine, approved.doc_no, 0, OrderState.HELD, batch_order_number=None, error="item 90")
    item = m3.sim.store.item(approved.lines[1].manufacturer_part_number)
    assert item is not None
    item.stat = "90"
    result = await writer(m3, engine).process(approved)
    assert (result.outcome, result.order_number) == ("created", order)
    assert len(m3.orders_for(approved.doc_no)) == 1
    assert (m3.transport.sent["Confirm"], m3.transport.sent["AddBatchHead"], m3.transport.sent["DelBatchHead"]) == (
        0, 0, 0,
    )  # fmt: skip
    entry = await ledger.entry(engine, approved.doc_no, 0)
    assert entry is not None
    assert (entry.state, entry.order_number, ledger.batch_orders_of(entry)) == (OrderState.CONFIRMED, order, [batch])


async def test_giving_up_never_deletes_a_batch_order_m3_confirmed(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QNODEL")
    customer, batch = await started_batch(m3, engine, approved, 3)
    m3.run("OIS100MI", "Confirm", ORNO=batch)
    entry = await ledger.record(engine, approved.doc_no, 0, OrderState.ORDERING, customer_number=customer,
                                batch_order_number=batch)  # fmt: skip
    await writer(m3, engine).batch_orders.delete_batch_order(entry, "held")
    assert m3.transport.sent["DelBatchHead"] == 0
    assert len(m3.orders_for(approved.doc_no)) == 1


# --- an approval is the document's content -------------------------------------------------------------------


async def test_a_held_quote_fixed_and_approved_again_becomes_one_order(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = with_line(quote(m3, "QFIXED"), 1, "NOPE-123")
    held = await writer(m3, engine).process(approved)
    assert held.outcome == "held"
    fixed = with_line(approved, 1, m3.sim.active_items()[5])
    result = await writer(m3, engine).process(fixed)
    assert result.outcome == "created"
    assert_exactly_one_correct_order(m3, fixed)


async def test_a_changed_quote_that_already_is_an_order_is_held_not_ordered_twice(
    m3: FaultyM3, engine: AsyncEngine
) -> None:
    approved = quote(m3, "QCHANGED")
    first = await writer(m3, engine).process(approved)
    assert first.outcome == "created"
    changed = with_line(approved, 0, m3.sim.active_items()[7])
    again = await writer(m3, engine).process(changed)
    assert again.outcome == "held"
    assert f"already is M3 order {first.order_number}" in again.problems[0].message
    unchanged = await writer(m3, engine).process(approved.model_copy(update={"approval_event": "replay"}))
    assert (unchanged.outcome, unchanged.order_number) == ("created", first.order_number)
    assert len(m3.orders_for(approved.doc_no)) == 1


# --- one owner per quote, fenced -----------------------------------------------------------------------------


async def test_a_quote_another_writer_holds_waits_for_its_lease_then_is_taken_over(
    m3: FaultyM3, engine: AsyncEngine
) -> None:
    """Writer B holds the quote and stops renewing (it froze): writer A waits for B's lease to end instead of
    spending its attempts, takes the quote over and orders it; B, should it wake, can write nothing more."""
    approved = quote(m3, "QBUSY")
    held, _ = await ledger.acquire(engine, approved.doc_no, 0, owner="writer-b", ttl_s=0.5)
    result = await writer(m3, engine).process(approved)
    assert result.outcome == "created"
    assert_exactly_one_correct_order(m3, approved)
    with pytest.raises(LeaseLostError):
        await ledger.renew(engine, held)


async def test_a_live_holder_keeps_the_quote_and_the_waiter_stays_out_of_m3(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QLIVE")
    await ledger.acquire(engine, approved.doc_no, 0, owner="writer-b", ttl_s=60)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):  # the consumer's message budget, in short
            await writer(m3, engine).process(approved)
    assert sum(m3.transport.sent.values()) == 0


async def test_an_expired_lease_is_taken_over_and_the_old_owner_can_write_no_more(engine: AsyncEngine) -> None:
    old, _ = await ledger.acquire(engine, "QFENCE", 0, owner="writer-a", ttl_s=0)
    new, _ = await ledger.acquire(engine, "QFENCE", 0, owner="writer-b", ttl_s=60)
    assert new.fence == old.fence + 1
    with pytest.raises(LeaseLostError):
        await ledger.renew(engine, old)
    with pytest.raises(LeaseLostError):
        await ledger.record(engine, "QFENCE", 0, OrderState.ORDERING, lease=old)
    await ledger.record(engine, "QFENCE", 0, OrderState.ORDERING, lease=new)
    await ledger.release(engine, old)  # a lost lease releases nothing
    entry = await ledger.entry(engine, "QFENCE", 0)
    assert entry is not None
    assert (entry.owner, entry.fence) == ("writer-b", new.fence)


async def take_over(engine: AsyncEngine, doc_no: str) -> None:
    """What another replica's acquire does once this one's lease has run out."""
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE order_ledger SET owner = 'writer-b', fence = fence + 1 WHERE doc_no = :doc_no"),
            {"doc_no": doc_no},
        )


async def test_the_check_before_a_write_asks_the_store_unless_the_lease_was_extended_a_moment_ago(
    engine: AsyncEngine,
) -> None:
    lease, _ = await ledger.acquire(engine, "QCHECK", 0, owner="writer-a", ttl_s=30)
    await take_over(engine, "QCHECK")  # only possible in earnest once the lease ran out
    await ledger.check(engine, lease)  # extended milliseconds ago: taken on trust
    lease.held_since -= 30 * ledger.CHECK_FRESH_FRACTION  # e.g. the worker was frozen since
    with pytest.raises(LeaseLostError):
        await ledger.check(engine, lease)
    with pytest.raises(LeaseLostError):  # a lost lease is never taken on trust again
        await ledger.check(engine, lease)


async def test_the_confirming_write_lets_the_lease_go_in_the_same_transaction(engine: AsyncEngine) -> None:
    lease, _ = await ledger.acquire(engine, "QDONE", 0, owner="writer-a", ttl_s=60)
    await ledger.record(engine, "QDONE", 0, OrderState.CONFIRMED, order_number="1000001", lease=lease, release=True)
    other, _ = await ledger.acquire(engine, "QDONE", 0, owner="writer-b", ttl_s=60)  # free at once
    await ledger.release(engine, lease)  # already let go: leaves writer-b's lease alone
    entry = await ledger.entry(engine, "QDONE", 0)
    assert entry is not None
    assert (entry.owner, entry.fence, entry.state) == ("writer-b", other.fence, OrderState.CONFIRMED)


async def test_an_undisturbed_order_of_a_known_customer_takes_few_state_store_transactions(
    m3: FaultyM3, engine: AsyncEngine
) -> None:
    """Each transaction is a locked read and a write on the store order-writers share: an order records its steps
    (taken, ordering, batch order, confirmed and let go) and checks its lease before a write only when it was not
    just extended."""
    w = writer(m3, engine)
    first = quote(m3, "QKNOWN", lines=10, company="Regular Buyer AB")
    await w.process(first)  # the customer exists in M3 now and is linked
    transactions: list[object] = []

    def began(connection: object) -> None:
        transactions.append(connection)

    event.listen(engine.sync_engine, "begin", began)
    try:
        second = quote(m3, "QAGAINST", lines=10).model_copy(update={"sold_to": first.sold_to})
        assert (await w.process(second)).outcome == "created"
    finally:
        event.remove(engine.sync_engine, "begin", began)
    assert len(transactions) <= 7, len(transactions)


async def test_a_writer_taken_over_during_add_batch_head_stops_and_leaves_no_batch_order(
    m3: FaultyM3, engine: AsyncEngine, state_file: Path
) -> None:
    """Writer A stalls inside AddBatchHead past its lease; writer B takes the quote over. A's ledger write fails
    on the fencing token: it deletes the batch order it just made and stops; B makes the one order."""
    approved = quote(m3, "QZOMBIE")
    original = m3.sim.execute

    def take_over_during_head(user: str, program: str, transaction: str, inputs: dict[str, str], **options: Any) -> Any:
        answer = original(user, program, transaction, inputs, **options)
        if transaction == "AddBatchHead" and inputs.get("CUOR") == "QZOMBIE":
            m3.sim.execute = original  # type: ignore[method-assign]
            with contextlib.closing(sqlite3.connect(state_file, timeout=10)) as connection, connection:
                connection.execute(
                    "UPDATE order_ledger SET owner = 'writer-b', fence = fence + 1 WHERE doc_no = 'QZOMBIE'"
                )
        return answer

    m3.sim.execute = take_over_during_head  # type: ignore[method-assign]
    with pytest.raises(LeaseLostError):
        await writer(m3, engine, owner="writer-a").process(approved)
    assert m3.open_batch_orders() == [], "the zombie's batch order is deleted"
    assert m3.transport.sent["AddBatchLine"] == 0
    with contextlib.closing(sqlite3.connect(state_file, timeout=10)) as connection, connection:
        connection.execute("UPDATE order_ledger SET lease_expires_at = NULL WHERE doc_no = 'QZOMBIE'")
    result = await writer(m3, engine, owner="writer-b").process(approved)
    assert result.outcome == "created"
    assert_exactly_one_correct_order(m3, approved)


# --- a new customer is created once --------------------------------------------------------------------------


async def test_a_customer_added_before_a_crash_is_found_not_added_again(m3: FaultyM3, engine: AsyncEngine) -> None:
    """Writer A claimed the creation and CRS610MI/Add went through; A died before recording the number. The quote's
    redelivery (after A's claim aged out) reads M3 for exactly what A sent and links that customer."""
    approved = quote(m3, "QNEWCUST", company="Crashed Creation AB")
    w = writer(m3, engine, owner="writer-b")
    plan = plan_customer(approved, RULES, field_lengths=await w.lengths())
    identity = f"email:{approved.sold_to.email.casefold()}"
    claim = await customer_creations.claim(engine, identity, plan.fields, owner="writer-a", hold_s=300)
    m3.run("CRS610MI", "Add", **claim.fields)
    w.customers.claim_hold_s = 0  # writer A's claim has aged out
    result = await w.process(approved)
    assert result.outcome == "created"
    assert m3.transport.sent["Add"] == 0
    assert_exactly_one_correct_order(m3, approved)


async def test_a_second_quote_of_a_customer_being_created_waits_for_the_first(
    m3: FaultyM3, engine: AsyncEngine
) -> None:
    approved = quote(m3, "QSECOND", company="Being Created AB")
    w = writer(m3, engine, owner="writer-b")
    plan = plan_customer(approved, RULES, field_lengths=await w.lengths())
    await customer_creations.claim(engine, f"email:{approved.sold_to.email.casefold()}", plan.fields,
                                   owner="writer-a", hold_s=300)  # fmt: skip
    with pytest.raises(EntryBusyError):
        await w.process(approved)
    assert m3.transport.sent["Add"] == 0


async def test_a_waiter_whose_holder_finished_the_quote_announces_that_order(m3: FaultyM3, engine: AsyncEngine) -> None:
    approved = quote(m3, "QWAITED")
    customer, batch = await started_batch(m3, engine, approved, 3)
    held, _ = await ledger.acquire(engine, approved.doc_no, 0, owner="writer-b", ttl_s=30)
    waiting = asyncio.create_task(writer(m3, engine, lease_s=5).process(approved))
    order = m3.run("OIS100MI", "Confirm", ORNO=batch)[0]["ORNO"]  # writer B finishes the quote
    await ledger.record(engine, approved.doc_no, 0, OrderState.CONFIRMED, order_number=order, customer_number=customer,
                        batch_order_number=batch, lease=held)  # fmt: skip
    await ledger.release(engine, held)
    result = await asyncio.wait_for(waiting, 60)
    assert (result.outcome, result.order_number) == ("created", order)
    assert (m3.transport.sent["AddBatchHead"], m3.transport.sent["Confirm"]) == (0, 0)
