"""order-writer's reconciliation (services/order_writer/reconcile.py) against the M3 simulator and a real SQLite
store: recorded approvals vs the ledger vs M3's orders, the differences counted as metrics, and the schedule's turn
taken by one replica a period."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.order_writer.orders import OrderWriter
from services.order_writer.reconcile import ReconcileReport, ledger_since, orders_in_m3, reconcile_orders
from shared.platform.state import deliveries, fingerprints
from shared.platform.state.models import SeenDelivery
from tests.unit.m3_faults import FaultyM3
from tests.unit.test_order_path import RULES, quote

pytestmark = pytest.mark.unit


async def record_approval(engine: AsyncEngine, doc_no: str, minutes_ago: float) -> None:
    """quote-ingest's claim of an approval, made `minutes_ago`."""
    async with async_sessionmaker(engine).begin() as session:
        session.add(SeenDelivery(source=deliveries.APPROVAL_CLAIMS, delivery_id=f"{doc_no}:0:x", subject=doc_no))
    async with async_sessionmaker(engine).begin() as session:
        await session.execute(
            update(SeenDelivery)
            .where(SeenDelivery.subject == doc_no)
            .values(seen_at=datetime.now(UTC) - timedelta(minutes=minutes_ago))
        )


def counted(kind: str) -> float | None:
    return REGISTRY.get_sample_value("m3bridge_reconcile_differences", {"kind": kind})


async def test_an_approval_never_ordered_and_an_order_deleted_in_m3_are_the_differences(
    m3: FaultyM3, engine: AsyncEngine
) -> None:
    writer = OrderWriter(m3.client, engine, RULES, settle_s=0, owner="writer-a")
    ordered, deleted = quote(m3, "QREC1"), quote(m3, "QREC2")
    for approved in (ordered, deleted):
        await record_approval(engine, approved.doc_no, minutes_ago=30)
        assert (await writer.process(approved)).outcome == "created"
    await record_approval(engine, "QREC3", minutes_ago=30)  # recorded, never reached order-writer
    await record_approval(engine, "QREC4", minutes_ago=1)  # may still be on its way
    [gone] = m3.orders_for(deleted.doc_no)
    del m3.sim.store.orders[gone]

    report = await reconcile_orders(engine, m3.client, since=datetime.now(UTC) - timedelta(days=1))
    found = sorted((d.doc_no, d.kind) for d in report.differences)
    assert found == [("QREC2", "order missing in M3"), ("QREC3", "approved, never ordered")]
    assert (report.approved, report.confirmed_in_ledger, report.checked_in_m3, report.problems) == (4, 2, 2, [])
    assert (counted("approved, never ordered"), counted("order missing in M3"), counted("order differs in M3")) == (
        1, 1, 0,
    )  # fmt: skip
    m3.sim.store.orders[gone] = m3.sim.store.orders[m3.orders_for(ordered.doc_no)[0]]  # the CUOR is QREC1's now
    again = await reconcile_orders(engine, m3.client, since=datetime.now(UTC) - timedelta(days=1))
    assert sorted((d.doc_no, d.kind) for d in again.differences) == [
        ("QREC2", "order differs in M3"), ("QREC3", "approved, never ordered"),
    ]  # fmt: skip


async def test_the_schedule_is_one_replicas_turn_a_period(engine: AsyncEngine) -> None:
    assert await fingerprints.take_turn(engine, "order-reconcile", 3600) is True
    assert await fingerprints.take_turn(engine, "order-reconcile", 3600) is False  # another replica, same period
    assert await fingerprints.take_turn(engine, "order-reconcile", 0) is True  # the period is over


async def test_an_order_worth_other_than_its_quote_is_a_difference(m3: FaultyM3, engine: AsyncEngine) -> None:
    writer = OrderWriter(m3.client, engine, RULES, settle_s=0, owner="writer-a")
    priced, repriced = quote(m3, "QTOT1"), quote(m3, "QTOT2")
    for approved in (priced, repriced):
        assert (await writer.process(approved)).outcome == "created"
    net = {doc_no: Decimal(str(m3.sim.store.orders[m3.orders_for(doc_no)[0]].head["NTAM"])) for doc_no in
           ("QTOT1", "QTOT2")}  # fmt: skip
    report = ReconcileReport(since="")
    entries = await ledger_since(engine, datetime.now(UTC) - timedelta(days=1))
    totals = {"QTOT1": net["QTOT1"], "QTOT2": net["QTOT2"] + Decimal("5.00")}
    await orders_in_m3(m3.client, [e for revisions in entries.values() for e in revisions], report, quote_totals=totals)
    [difference] = report.differences
    assert (difference.doc_no, difference.kind) == ("QTOT2", "totals differ")
    assert f"net; the quote's subtotal is {totals['QTOT2']}" in difference.detail


async def test_a_second_m3_order_with_the_quotes_docno_is_an_extra_order(m3: FaultyM3, engine: AsyncEngine) -> None:
    """What exactly once must never produce, found if it ever happens (or someone copies the order in OIS100)."""
    writer = OrderWriter(m3.client, engine, RULES, settle_s=0, owner="writer-a")
    approved = quote(m3, "QTWICE")
    assert (await writer.process(approved)).outcome == "created"
    [first] = m3.orders_for("QTWICE")
    original = m3.sim.store.orders[first]
    m3.sim.store.orders["1999999999"] = replace(
        original, orno="1999999999", head={**original.head, "ORNO": "1999999999"}
    )
    report = await reconcile_orders(engine, m3.client, since=datetime.now(UTC) - timedelta(days=1))
    [extra] = report.differences
    assert (extra.doc_no, extra.kind) == ("QTWICE", "extra order in M3")
    assert "1999999999" in extra.detail
    assert counted("extra order in M3") == 1
