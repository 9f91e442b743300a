"""The M3 client's retry policy: what provably did not reach M3 is retried, a read whose answer was lost is read
again, a write whose answer was lost raises `M3OutcomeUnknownError` and is never sent again by the client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.m3 import CircuitBreakers, M3OutcomeUnknownError
from shared.m3.lease import Priority
from shared.m3.transactions import changes_m3
from tests.unit.m3_faults import Fault, FaultyM3

pytestmark = pytest.mark.unit

LOST: list[Fault] = ["timeout", "cut", "504", "502", "503-unsent"]
P = Priority.TRANSACTIONAL


@pytest.fixture
async def m3() -> AsyncIterator[FaultyM3]:
    faulty = FaultyM3()
    yield faulty
    await faulty.close()


@pytest.mark.parametrize(
    ("program", "transaction", "writes"),
    [
        ("CRS610MI", "Add", True),
        ("CRS610MI", "ChgBasicData", True),
        ("OIS100MI", "AddBatchHead", True),
        ("OIS100MI", "Confirm", True),
        ("OIS100MI", "DelBatchHead", True),
        ("OIS100MI", "SomethingNew", True),  # unclassified: treated as a write
        ("CRS610MI", "GetBasicData", False),
        ("OIS100MI", "LstBatchHead", False),
        ("CRS610MI", "SearchCustomer", False),
        ("MRS001MI", "LstFields", False),
    ],
)
def test_transactions_that_change_m3_are_declared_once(program: str, transaction: str, writes: bool) -> None:
    assert changes_m3(program, transaction) is writes


@pytest.mark.parametrize("fault", LOST)
async def test_a_read_whose_answer_is_lost_is_read_again(m3: FaultyM3, fault: Fault) -> None:
    m3.transport.lose("GetBasicData", fault)
    customer = next(iter(m3.sim.store.customers))
    record = await m3.client.execute_one("CRS610MI", "GetBasicData", {"CUNO": customer}, priority=P)
    assert record is not None
    assert record["CUNO"] == customer
    assert m3.transport.faults == {f"GetBasicData:{fault}": 1}


@pytest.mark.parametrize("fault", LOST)
async def test_a_write_whose_answer_is_lost_is_not_sent_again(m3: FaultyM3, fault: Fault) -> None:
    customer = next(iter(m3.sim.store.customers))
    m3.transport.lose("AddBatchHead", fault)
    before = len(m3.sim.store.batch_orders)
    with pytest.raises(M3OutcomeUnknownError) as raised:
        await m3.client.execute_one("OIS100MI", "AddBatchHead", {"CUNO": customer, "CUOR": "X1"}, priority=P)
    assert raised.value.error_class == "outcome_unknown"
    assert raised.value.retryable
    assert m3.transport.sent["AddBatchHead"] == (0 if fault == "503-unsent" else 1)
    assert len(m3.sim.store.batch_orders) == before + (0 if fault == "503-unsent" else 1)


async def test_a_write_that_never_reached_m3_is_sent_again(m3: FaultyM3) -> None:
    customer = next(iter(m3.sim.store.customers))
    m3.transport.lose("AddBatchHead", "refused", "refused")
    head = await m3.client.execute_one("OIS100MI", "AddBatchHead", {"CUNO": customer, "CUOR": "X2"}, priority=P)
    assert head is not None
    assert head["ORNO"]
    assert len([b for b in m3.sim.store.batch_orders.values() if b.head.get("CUOR") == "X2"]) == 1


async def test_a_bulk_request_of_writes_is_a_write_and_of_reads_a_read(m3: FaultyM3) -> None:
    items = m3.sim.active_items()[:3]
    m3.transport.lose("GetItmBasic", "504")
    outcomes = await m3.client.bulk("MMS200MI", [("GetItmBasic", {"ITNO": i}) for i in items], priority=P)
    assert [o.error for o in outcomes] == [None, None, None]
    customer = next(iter(m3.sim.store.customers))
    batch = m3.run("OIS100MI", "AddBatchHead", CUNO=customer)[0]["ORNO"]
    m3.transport.lose("AddBatchLine", "cut")
    with pytest.raises(M3OutcomeUnknownError):
        await m3.client.bulk(
            "OIS100MI", [("AddBatchLine", {"ORNO": batch, "ITNO": i, "ORQT": "1"}) for i in items], priority=P
        )
    assert len(m3.sim.store.batch_orders[batch].lines) == 3  # done once, not twice


async def test_an_unknown_outcome_counts_against_the_programs_circuit_breaker(m3: FaultyM3) -> None:
    m3.client.breakers = CircuitBreakers(failures=1, reset_after_s=60)
    m3.transport.lose("Confirm", "504")
    with pytest.raises(M3OutcomeUnknownError):
        await m3.client.execute_one("OIS100MI", "Confirm", {"ORNO": "T000000999"}, priority=P)
    assert m3.client.breakers.state("OIS100MI") == "open"


async def test_the_deadline_is_the_whole_calls_not_each_attempts() -> None:
    """No attempt may wait longer than what is left of the call's deadline, whatever M3B_M3_TIMEOUT_S says."""
    m3 = FaultyM3(timeout_s=60.0, deadline_s=5.0)
    try:
        m3.transport.lose("GetBasicData", "timeout", "timeout")
        customer = next(iter(m3.sim.store.customers))
        await m3.client.execute_one("CRS610MI", "GetBasicData", {"CUNO": customer}, priority=P)
        sent = m3.transport.timeouts["GetBasicData"]
        assert len(sent) == 3
        assert max(sent) <= 5.0
        assert sent == sorted(sent, reverse=True)  # each retry gets what is left
    finally:
        await m3.close()
