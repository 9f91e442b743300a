"""Customers: the rules file, the canonical states, the echo guard, and order-writer's part (a QuoteWerks customer M3
does not know yet is found or created, and linked; services/order_writer/customers.py) against CRS610MI in memory."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.order_writer import customer_creations, customers
from services.order_writer.customers import CustomerSync
from services.order_writer.orders import OrderWriter
from shared.contracts import M3CustomerChanged, Party, Problem, QuoteWerksCustomerChanged
from shared.customers import (
    FINGERPRINT_QUOTEWERKS,
    CustomerChangeRejectedError,
    CustomerSyncRules,
    CustomerSyncRulesError,
    CustomerWriteOutcome,
    is_quotewerks_echo,
    load_sync_rules,
    m3_event_state,
    m3_state,
    party_state,
    settle_customer_change,
    state_hash,
    sync_rules_from_data,
)
from shared.m3 import M3BusinessError, M3TransientError
from shared.mapping import load_rules
from shared.platform.state import fingerprints
from tests.unit.customer_doubles import RECORD, FakeM3

pytestmark = pytest.mark.unit

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "config"
RAW: dict[str, Any] = yaml.safe_load((CONFIG / "customer-sync.yaml").read_text(encoding="utf-8"))
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def rules(**owners: str) -> CustomerSyncRules:
    data = copy.deepcopy(RAW)
    data["fields"].update(owners)
    return sync_rules_from_data(data)


# --- the rules file -------------------------------------------------------------------------------------------


def test_the_shipped_rules_load() -> None:
    loaded = load_sync_rules(CONFIG / "customer-sync.yaml")
    assert loaded.owner("name") == "m3"
    assert loaded.owner("phone") == "quotewerks"
    assert loaded.owner("email") == "newest"
    assert loaded.clock_skew_s == 120
    assert loaded.quotewerks_deleted == "review"
    assert loaded.create_in_m3 is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["fields"].pop("phone"), "fields.phone: Field required"),
        (lambda d: d["fields"].update(fax="m3"), "fields.fax: Extra inputs are not permitted"),
        (
            lambda d: d["fields"].update(city="crm"),
            "fields.city: Input should be 'm3', 'quotewerks', 'newest' or 'review'",
        ),
        (lambda d: d.update(tie="m3"), "tie: Extra inputs are not permitted"),
        (lambda d: d.update(clock_skew_s=-1), "clock_skew_s: Input should be greater than or equal to 0"),
        (lambda d: d.update(quotewerks_deleted="recreate"), "quotewerks_deleted: Input should be 'review' or 'unlink'"),
        (lambda d: d.update(version=2), "version: Input should be 1"),
        (lambda d: d.update(direction="both"), "direction: Extra inputs are not permitted"),
    ],
)
def test_invalid_rules_name_the_entry_at_fault(change: Any, message: str) -> None:
    data = copy.deepcopy(RAW)
    change(data)
    with pytest.raises(CustomerSyncRulesError) as error:
        sync_rules_from_data(data, origin="customer-sync.yaml")
    assert message in str(error.value)
    assert "customer-sync.yaml" in str(error.value)


def test_a_file_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "customer-sync.yaml"
    bad.write_text("fields: [unclosed\n")
    with pytest.raises(CustomerSyncRulesError, match="not YAML"):
        load_sync_rules(bad)


# --- the canonical state and the echo guard ---------------------------------------------------------------------


def m3_event(**changes: Any) -> M3CustomerChanged:
    data: dict[str, Any] = {
        "customer_number": "C000003", "action": "change", "name": "Nordic Pump AB",
        "address_lines": ["12 Harbour Road"], "town": "Goteborg", "postal_code": "41101", "country": "SE",
        "phone": "+46 555", "email": "orders@nordic.example", "changed_at": NOW,
    }  # fmt: skip
    return M3CustomerChanged.model_validate({**data, **changes})


def qw_event(**changes: Any) -> QuoteWerksCustomerChanged:
    party = {
        "Company": "Nordic Pump AB", "Address1": "12 Harbour Road", "City": "Goteborg", "PostalCode": "41101",
        "Country": "SE", "PhoneNumber": "+46 555", "Email": "orders@nordic.example", "CMAccountNo": "C000003",
    }  # fmt: skip
    party.update(changes.pop("party", {}))
    data: dict[str, Any] = {"customer_id": "C000003", "change": "updated", "customer": party, "changed_at": NOW}
    return QuoteWerksCustomerChanged.model_validate({**data, **changes})


def test_a_record_and_the_event_m3_emits_for_it_have_the_same_state() -> None:
    assert m3_state(RECORD) == m3_event_state(m3_event())
    assert state_hash(m3_state(RECORD)) == state_hash(m3_event_state(m3_event()))
    assert state_hash(m3_state(RECORD)) != state_hash(m3_event_state(m3_event(phone="+46 556")))


def test_party_state_reads_the_quotewerks_fields() -> None:
    party = Party.model_validate({"Company": " Acme  Ltd ", "Address1": "1 Road", "Address3": "Unit 4"})
    state = party_state(party)
    assert state["name"] == "Acme Ltd"
    assert state["address"] == "1 Road\nUnit 4"


class Memory:
    """fingerprints, the customer links and customer creations, in memory."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}
        self.links: dict[str, Any] = {}
        self.creations: dict[str, Any] = {}

    async def get(self, _engine: object, kind: str, key: str) -> str | None:
        return self.values.get((kind, key))

    async def put(self, _engine: object, kind: str, key: str, value: str) -> None:
        self.values[(kind, key)] = value

    async def customer_link(self, _engine: object, identity: str) -> Any:
        return self.links.get(identity)

    async def link_customer(
        self, _engine: object, identity: str, number: str, *, email: str, company: str, by: str
    ) -> bool:
        if any(link.m3_customer_number == number and key != identity for key, link in self.links.items()):
            return False
        self.links[identity] = type("Link", (), {"m3_customer_number": number, "last_written_by": by})()
        return True

    async def find_creation(self, _engine: object, identity: str) -> Any:
        return self.creations.get(identity)

    async def claim_creation(
        self, _engine: object, identity: str, fields: Any, *, owner: str, hold_s: float
    ) -> customer_creations.CreationClaim:
        self.creations[identity] = type("Creation", (), {"m3_customer_number": None})()
        return customer_creations.CreationClaim(dict(fields), resumed=False)

    async def creation_done(self, _engine: object, identity: str, number: str) -> None:
        self.creations[identity].m3_customer_number = number


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Memory:
    store = Memory()
    monkeypatch.setattr(fingerprints, "get", store.get)
    monkeypatch.setattr(fingerprints, "put", store.put)
    monkeypatch.setattr(customers.ledger, "customer_link", store.customer_link)
    monkeypatch.setattr(customers.ledger, "link_customer", store.link_customer)
    monkeypatch.setattr(customer_creations, "find", store.find_creation)
    monkeypatch.setattr(customer_creations, "claim", store.claim_creation)
    monkeypatch.setattr(customer_creations, "created", store.creation_done)
    return store


async def test_a_quotewerks_event_with_the_state_the_bridge_wrote_there_is_an_echo(memory: Memory) -> None:
    event = qw_event()
    assert not await is_quotewerks_echo(None, event)  # type: ignore[arg-type]
    memory.values[(FINGERPRINT_QUOTEWERKS, "C000003")] = state_hash(party_state(event.customer))
    assert await is_quotewerks_echo(None, event)  # type: ignore[arg-type]
    assert not await is_quotewerks_echo(None, qw_event(party={"PhoneNumber": "+46 1"}))  # type: ignore[arg-type]


# --- QuoteWerks → M3 against an in-memory CRS610MI --------------------------------------------------------------


@pytest.fixture
def m3() -> FakeM3:
    return FakeM3()


def sync(m3: FakeM3, **owners: str) -> CustomerSync:
    writer = OrderWriter(m3, None, load_rules(CONFIG / "order-mapping.yaml"))  # type: ignore[arg-type]
    return CustomerSync(writer, None, rules(**owners))  # type: ignore[arg-type]


async def test_a_linked_customer_is_left_to_catalog_sync(memory: Memory, m3: FakeM3) -> None:
    await memory.link_customer(None, "C000003", "C000003", email="", company="", by="quotewerks")
    outcome = await sync(m3).apply(qw_event(party={"PhoneNumber": "+46 777"}))
    assert (outcome.action, outcome.customer) == ("ignored", "C000003")
    assert "catalog-sync" in outcome.reason
    assert m3.calls == []


async def test_the_bridges_own_write_is_not_echoed(memory: Memory, m3: FakeM3) -> None:
    outcome = await sync(m3).apply(qw_event(party={"PhoneNumber": "+46 777"}, origin="m3bridge"))
    assert outcome.action == "ignored"
    assert m3.calls == []


async def test_an_unknown_customer_is_created_and_linked(memory: Memory, m3: FakeM3) -> None:
    event = qw_event(
        customer_id="QW-NEW-1",
        party={"Company": "Brand New GmbH", "Email": "hello@brandnew.example", "CMAccountNo": "", "Country": "Germany"},
    )
    outcome = await sync(m3).apply(event)
    assert outcome.action == "created"
    assert [call[0] for call in m3.writes()] == ["Add"]
    created = m3.customers[outcome.customer]
    assert (created["CUNM"], created["CSCD"], created["MAIL"]) == ("Brand New GmbH", "DE", "hello@brandnew.example")
    assert memory.links["QW-NEW-1"].m3_customer_number == outcome.customer


async def test_a_customer_found_by_email_is_linked_for_catalog_sync_to_merge(memory: Memory, m3: FakeM3) -> None:
    event = qw_event(customer_id="QW-77", party={"CMAccountNo": "", "PhoneNumber": "+46 000"})
    outcome = await sync(m3).apply(event)
    assert (outcome.action, outcome.customer) == ("unchanged", "C000003")
    assert memory.links["QW-77"].m3_customer_number == "C000003"
    assert m3.writes() == []


async def test_a_customer_linked_to_another_quotewerks_customer_is_a_business_refusal(
    memory: Memory, m3: FakeM3
) -> None:
    await memory.link_customer(None, "OTHER", "C000003", email="", company="", by="m3bridge")
    event = qw_event(customer_id="QW-77", party={"CMAccountNo": "", "PhoneNumber": "+46 000"})
    with pytest.raises(CustomerChangeRejectedError, match="already linked"):
        await sync(m3).apply(event)


async def test_m3_refusals_are_rejected_and_transient_failures_raise(memory: Memory, m3: FakeM3) -> None:
    new = qw_event(
        customer_id="QW-NEW-3", party={"Company": "Fresh Ltd", "Email": "x@fresh.example", "CMAccountNo": ""}
    )
    m3.fail = M3BusinessError("Telephone number is invalid", code="WPH0101", field="PHNO")
    with pytest.raises(CustomerChangeRejectedError) as refused:
        await sync(m3).apply(new)
    assert refused.value.problems[0].code == "WPH0101"
    m3.fail = M3TransientError("gateway timeout", status=504)
    with pytest.raises(M3TransientError):
        await sync(m3).apply(new.model_copy(update={"customer_id": "QW-NEW-4"}))


async def test_creation_off_dead_letters_an_unknown_customer(memory: Memory, m3: FakeM3) -> None:
    writer = OrderWriter(m3, None, load_rules(CONFIG / "order-mapping.yaml"))  # type: ignore[arg-type]
    off = sync_rules_from_data({**RAW, "create_in_m3": False})
    event = qw_event(customer_id="QW-NEW-2", party={"Company": "Nobody Ltd", "Email": "x@nobody.example"})
    with pytest.raises(CustomerChangeRejectedError, match="create_in_m3"):
        await CustomerSync(writer, None, off).apply(event)  # type: ignore[arg-type]
    assert m3.writes() == []


async def test_settling_a_change_dead_letters_a_rejection_and_lets_a_retryable_failure_through() -> None:
    letters: list[list[Problem]] = []

    async def dead_letter(*, problems: Sequence[Problem]) -> None:
        letters.append(list(problems))

    async def applied() -> CustomerWriteOutcome:
        return CustomerWriteOutcome("updated", "C000003", written={"PHNO": "+46 777"})

    async def rejected() -> CustomerWriteOutcome:
        raise CustomerChangeRejectedError([Problem(error_class="business", message="linked elsewhere")])

    async def m3_away() -> CustomerWriteOutcome:
        raise M3TransientError("gateway timeout")

    outcome = await settle_customer_change(applied(), change="change 1", dead_letter=dead_letter)
    assert outcome is not None
    assert outcome.customer == "C000003"
    assert await settle_customer_change(rejected(), change="change 2", dead_letter=dead_letter) is None
    assert [[p.message for p in problems] for problems in letters] == [["linked elsewhere"]]
    with pytest.raises(M3TransientError):
        await settle_customer_change(m3_away(), change="change 3", dead_letter=dead_letter)
    assert len(letters) == 1


async def test_a_customer_alike_to_several_m3_customers_waits_for_a_person(memory: Memory, m3: FakeM3) -> None:
    m3.customers["C000009"] = {**RECORD, "CUNO": "C000009", "MAIL": "sales@nordic.example"}  # a duplicate in M3
    event = qw_event(customer_id="QW-78", party={"CMAccountNo": "", "Email": "", "PostalCode": "411 01"})
    with pytest.raises(
        CustomerChangeRejectedError, match=r"matches 2 M3 customers by name_and_place \(C000003, C000009\)"
    ):
        await sync(m3).apply(event)
    assert m3.writes() == []
    assert "QW-78" not in memory.links


async def test_a_spelling_variant_of_an_m3_customer_is_linked_not_created(memory: Memory, m3: FakeM3) -> None:
    event = qw_event(customer_id="QW-79", party={"CMAccountNo": "", "Company": "NORDIC PUMP", "Email": ""})
    m3.customers["C000003"]["CUNM"] = "Nordic Pump AB"
    outcome = await sync(m3).apply(event)
    assert (outcome.action, outcome.customer) == ("unchanged", "C000003")
    assert m3.writes() == []


def test_a_new_customers_e_mail_identity_is_never_spelled_out_in_messages() -> None:
    shown = customer_creations.shown("email:buyer@new.example")
    assert "@" not in shown
    assert shown == customer_creations.shown("email:buyer@new.example")  # the same party reads the same in every line
    assert shown != customer_creations.shown("email:other@new.example")
    assert customer_creations.shown("C000003") == "C000003"
