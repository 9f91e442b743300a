"""The audit trail's records (shared/platform/audit.py, the M3 client's hook): business keys only, bulk writes named by
their transactions, a full queue dropping with a count instead of holding up the work."""

import asyncio

import pytest

from shared.contracts import AuditEvent
from shared.m3.transport import _audited
from shared.platform.audit import AuditTrail, audit_events, business_keys
from shared.platform.correlation import bind_correlation_id

pytestmark = pytest.mark.unit


def test_only_business_keys_are_kept_never_names_addresses_or_e_mails() -> None:
    add = {"CUNM": "Nordic Pump AB", "CUA1": "12 Harbour Road", "MAIL": "orders@nordic.example", "PHNO": "+46 555",
           "CUNO": "C000003", "CSCD": "SE"}  # fmt: skip
    assert business_keys(add) == {"CUNO": "C000003"}
    assert business_keys(None) == {}


def test_a_bulk_write_is_named_by_its_transactions_with_the_first_records_keys() -> None:
    request = {"json": {"program": "OIS100MI", "transactions": [
        {"transaction": "AddBatchLine", "record": {"ORNO": "B1", "ITNO": "ITM1", "ORQA": "2"}},
        {"transaction": "AddBatchLine", "record": {"ORNO": "B1", "ITNO": "ITM2", "ORQA": "1"}},
    ]}}  # fmt: skip
    assert _audited("OIS100MI", "bulk", request) == (
        "OIS100MI/AddBatchLine (2 records)",
        {"ORNO": "B1", "ITNO": "ITM1"},
    )
    assert _audited("CRS610MI", "ChgBasicData", {"params": {"CUNO": "C1", "MAIL": "x@y.example"}}) == (
        "CRS610MI/ChgBasicData",
        {"CUNO": "C1"},
    )


async def test_events_carry_the_correlation_id_and_a_full_queue_drops_with_a_count() -> None:
    sent: list[AuditEvent] = []

    async def send(event: AuditEvent) -> None:
        sent.append(event)

    trail = AuditTrail("order-writer", send)

    async def in_a_task() -> None:  # a task of its own: the id stays with it
        bind_correlation_id("corr-123")
        trail.record("m3", "OIS100MI/Confirm", {"ORNO": "B1"}, "ok")

    await asyncio.create_task(in_a_task())
    runner = asyncio.create_task(trail.run())
    await trail.drain(2.0)
    runner.cancel()
    assert [(e.operation, e.keys, e.outcome, e.correlation_id) for e in sent] == [
        ("OIS100MI/Confirm", {"ORNO": "B1"}, "ok", "corr-123")
    ]
    before = audit_events.labels("dropped")._value.get()
    full = AuditTrail("order-writer", send)
    for n in range(10_001):
        full.record("m3", "OIS100MI/Confirm", {"ORNO": str(n)}, "ok")
    assert audit_events.labels("dropped")._value.get() == before + 1
