"""Linked customers merged both ways by catalog-sync (services/catalog_sync/customers.py, customer_merger.py)
against CRS610MI and the QuoteWerks contact manager in memory and a real SQLite state store (the same migrations as
PostgreSQL): the last-synced snapshot, edits on both sides, the review queue, deletes, crashes between the writes."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from services.catalog_sync.customer_facts import CustomerPushRejectedError, m3_changed_from_record
from services.catalog_sync.customer_merger import CustomerMerger
from services.catalog_sync.customer_sides import crs610_lengths, quotewerks_country
from services.catalog_sync.customers import CustomerMaster
from shared.contracts import M3CustomerChanged, QuoteWerksCustomerChanged
from shared.customers import sync_rules_from_data
from shared.m3 import M3TransientError
from shared.mapping import LookupTable, country_table, load_rules
from shared.platform.state import customer_snapshots as snapshots, ledger
from shared.quotewerks import QuoteWerksError, customer_from_contact
from tests.unit.customer_doubles import NOW, RECORD, Contacts, FakeM3, contact

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RAW: dict[str, Any] = yaml.safe_load((ROOT / "deploy/config/customer-sync.yaml").read_text(encoding="utf-8"))
MAPPING = load_rules(ROOT / "deploy/config/order-mapping.yaml")
COUNTRIES = country_table(MAPPING)
NINE, TEN = NOW - timedelta(hours=3), NOW - timedelta(hours=2)


def master(contacts: Contacts | None, engine: AsyncEngine, m3: FakeM3, **rules: Any) -> CustomerMaster:
    data = copy.deepcopy(RAW)
    data["fields"].update({k: v for k, v in rules.items() if k in data["fields"]})
    data.update({k: v for k, v in rules.items() if k not in data["fields"]})
    sync_rules = sync_rules_from_data(data)
    merger = CustomerMerger(m3, contacts, engine, sync_rules, MAPPING, COUNTRIES, crs610_lengths(m3))
    return CustomerMaster(contacts, engine, sync_rules, COUNTRIES, merger)


def m3_edit(m3: FakeM3, number: str = "C000003", at: datetime = NOW, **fields: object) -> M3CustomerChanged:
    """A user's edit in M3 and the change event M3 sends for it (its BOD's CreationDateTime is `at`)."""
    m3.customers.setdefault(number, {**RECORD, "CUNO": number}).update(fields)
    return m3_changed_from_record(number, m3.customers[number]).model_copy(update={"changed_at": at})


def qw_edit(
    contacts: Contacts, account: str = "C000003", at: datetime = NOW, **columns: str
) -> QuoteWerksCustomerChanged:
    """A user's edit in QuoteWerks and the change event the bridge reads for it."""
    contacts.edit(account, at, **columns)
    return customer_from_contact(contacts.records[account], change="updated", changed_at=at)


async def linked(engine: AsyncEngine, contacts: Contacts, m3: FakeM3, account: str = "C000003") -> CustomerMaster:
    """A customer linked and merged once, so both sides agree and the snapshot holds them."""
    customers = master(contacts, engine, m3)
    await ledger.link_customer(engine, account, "C000003", email="", company="", by="quotewerks")
    assert await customers.settle_decisions() == 1
    stored = await snapshots.snapshot(engine, "C000003")
    assert stored is not None
    assert len(stored.agreed) == 7
    m3.calls.clear()
    contacts.puts.clear()
    return customers


def both(m3: FakeM3, contacts: Contacts, account: str = "C000003") -> tuple[dict[str, object], dict[str, str]]:
    return m3.customers["C000003"], contacts.records[account]


def test_country_codes_become_the_names_quotewerks_uses() -> None:
    assert COUNTRIES is not None
    assert quotewerks_country("SE", "Sverige", COUNTRIES) == "Sverige"  # already means SE: kept
    assert quotewerks_country("SE", "Germany", COUNTRIES) == "Sweden"  # the table's first name for SE
    assert quotewerks_country("FI", "", COUNTRIES) == "FI"  # not in the table: the code
    assert quotewerks_country("SE", "se", None) == "se"
    assert quotewerks_country("", "Sweden", COUNTRIES) == ""
    assert quotewerks_country("US", "", LookupTable(entries={"USA": "US"})) == "USA"


# --- one side, then the other --------------------------------------------------------------------------------------


async def test_an_m3_edit_reaches_quotewerks_and_its_echo_is_dropped_without_reading(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    outcome = await customers.apply(m3_edit(m3, CUNM="Nordic Pumps Group AB", TOWN="Malmo"))
    assert outcome.action == "updated"
    assert outcome.written == {"QuoteWerks Company": "Nordic Pumps Group AB", "QuoteWerks City": "Malmo"}
    m3_record, record = both(m3, contacts)
    assert (record["Company"], record["City"], record["Country"], record["Contact"]) == (
        "Nordic Pumps Group AB", "Malmo", "Sweden", "Eva Berg"
    )  # fmt: skip
    assert m3.writes() == []
    # QuoteWerks' change event for that write, and a replay of the M3 event: nothing read, nothing written.
    m3.calls.clear()
    echo = customer_from_contact(record, change="updated", changed_at=datetime.now(NOW.tzinfo))
    assert (await customers.apply_quotewerks(echo)).action == "ignored"
    assert (await customers.apply(m3_changed_from_record("C000003", m3_record))).action == "ignored"
    assert m3.calls == []
    assert (await customers.apply(m3_edit(m3, origin="m3bridge"))).action == "ignored"


async def test_a_quotewerks_edit_reaches_m3(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    outcome = await customers.apply_quotewerks(qw_edit(contacts, PhoneNumber="+46 777", Email="new@nordic.example"))
    assert outcome.written == {"M3 PHNO": "+46 777", "M3 MAIL": "new@nordic.example"}
    assert m3.writes() == [("ChgBasicData", {"CUNO": "C000003", "PHNO": "+46 777", "MAIL": "new@nordic.example"})]
    assert contacts.puts == []


async def test_an_m3_owned_field_edited_in_quotewerks_gets_m3s_value_back(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    outcome = await customers.apply_quotewerks(qw_edit(contacts, Company="Renamed In QuoteWerks AB"))
    assert outcome.written == {"QuoteWerks Company": "Nordic Pump AB"}
    assert both(m3, contacts)[1]["Company"] == "Nordic Pump AB"
    assert m3.writes() == []


# --- both sides ---------------------------------------------------------------------------------------------------


async def test_edits_of_different_fields_on_the_two_sides_both_survive(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    m3_change = m3_edit(m3, at=NINE, MAIL="m3@nordic.example")  # M3 at 09:00 ...
    qw_change = qw_edit(contacts, at=TEN, PhoneNumber="+46 999")  # ... QuoteWerks at 10:00, another field
    await customers.apply(m3_change)  # M3's event arrives while QuoteWerks' edit is already made
    await customers.apply_quotewerks(qw_change)
    m3_record, record = both(m3, contacts)
    assert (m3_record["MAIL"], m3_record["PHNO"]) == ("m3@nordic.example", "+46 999")
    assert (record["Email"], record["PhoneNumber"]) == ("m3@nordic.example", "+46 999")
    assert await snapshots.items(engine) == []


@pytest.mark.parametrize("m3_first", [True, False], ids=["M3 09:00, QuoteWerks 10:00", "QuoteWerks 09:00, M3 10:00"])
async def test_same_day_edits_of_a_newest_field_go_to_the_later_one_in_both_orders(
    engine: AsyncEngine, m3_first: bool
) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    m3_at, qw_at = (NINE, TEN) if m3_first else (TEN, NINE)
    m3_change = m3_edit(m3, at=m3_at, MAIL="m3@nordic.example")
    qw_change = qw_edit(contacts, at=qw_at, Email="qw@nordic.example")
    # Whichever event is handled first, both sides end with the later edit.
    await customers.apply(m3_change)
    await customers.apply_quotewerks(qw_change)
    later = "qw@nordic.example" if m3_first else "m3@nordic.example"
    m3_record, record = both(m3, contacts)
    assert (m3_record["MAIL"], record["Email"]) == (later, later)
    assert await snapshots.items(engine) == []


async def test_an_owned_field_edited_on_both_sides_takes_the_owners_value_even_if_older(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    m3_change = m3_edit(m3, at=NINE, CUNM="Nordic Pump Holding AB")
    qw_edit(contacts, at=TEN, Company="Nordic Pump (QW) AB")
    await customers.apply(m3_change)
    m3_record, record = both(m3, contacts)
    assert (m3_record["CUNM"], record["Company"]) == ("Nordic Pump Holding AB", "Nordic Pump Holding AB")


async def test_edits_too_close_to_order_wait_for_a_person_who_settles_them(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    m3_change = m3_edit(m3, at=TEN, MAIL="m3@nordic.example")
    qw_edit(contacts, at=TEN + timedelta(seconds=30), Email="qw@nordic.example")
    outcome = await customers.apply(m3_change)
    assert (outcome.action, outcome.reason) == ("unchanged", "waiting for review: email")
    [item] = await snapshots.items(engine)
    assert (item.kind, item.field, item.m3_value, item.quotewerks_value) == (
        "conflict", "email", "m3@nordic.example", "qw@nordic.example"
    )  # fmt: skip
    assert (item.agreed_m3, item.agreed_quotewerks) == ("orders@nordic.example", "orders@nordic.example")
    assert "within 120 s" in item.reason
    # Nothing was overwritten, and a later event does not decide it either.
    assert m3.writes() == []
    assert contacts.puts == []
    await customers.apply_quotewerks(qw_edit(contacts, at=NOW, PhoneNumber="+46 1"))
    assert both(m3, contacts)[0]["MAIL"] == "m3@nordic.example"
    assert both(m3, contacts)[1]["Email"] == "qw@nordic.example"
    # A person takes QuoteWerks' value; the next round applies it on both sides and closes the item.
    await snapshots.decide(engine, item.id, "quotewerks", None, "eva")
    assert await customers.settle_decisions() == 1
    m3_record, record = both(m3, contacts)
    assert (m3_record["MAIL"], record["Email"]) == ("qw@nordic.example", "qw@nordic.example")
    closed = await snapshots.item(engine, item.id)
    assert closed is not None
    assert (closed.status, closed.outcome) == ("closed", "decided by eva: QuoteWerks' value")
    assert await snapshots.items(engine) == []


async def test_a_person_can_settle_on_a_value_neither_side_has(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    await linked(engine, contacts, m3)
    m3_edit(m3, PHNO="+46 1")
    qw_edit(contacts, PhoneNumber="+46 2")
    customers = master(contacts, engine, m3, phone="review")
    await customers.apply(m3_changed_from_record("C000003", m3.customers["C000003"]))
    [item] = await snapshots.items(engine)
    await snapshots.decide(engine, item.id, "value", "+46 3", "eva")
    await customers.settle_decisions()
    m3_record, record = both(m3, contacts)
    assert (m3_record["PHNO"], record["PhoneNumber"]) == ("+46 3", "+46 3")


async def test_two_sides_that_come_to_agree_close_the_review_item(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    m3_change = m3_edit(m3, at=TEN, MAIL="m3@nordic.example")
    qw_edit(contacts, at=TEN, Email="qw@nordic.example")
    await customers.apply(m3_change)
    [item] = await snapshots.items(engine)
    await customers.apply_quotewerks(qw_edit(contacts, at=NOW, Email="m3@nordic.example"))
    assert await snapshots.items(engine) == []
    closed = await snapshots.item(engine, item.id)
    assert closed is not None
    assert closed.outcome == "the two sides came to agree"


# --- crashes and races --------------------------------------------------------------------------------------------


async def test_a_merge_interrupted_between_its_two_writes_finishes_on_redelivery(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    m3_change = m3_edit(m3, at=NINE, MAIL="m3@nordic.example")
    qw_edit(contacts, at=TEN, PhoneNumber="+46 999")
    m3.fail = M3TransientError("gateway timeout", status=504)  # QuoteWerks written, then M3 does not answer
    with pytest.raises(M3TransientError):
        await customers.apply(m3_change)
    assert both(m3, contacts)[1]["Email"] == "m3@nordic.example"
    stored = await snapshots.snapshot(engine, "C000003")
    assert stored is not None
    assert set(stored.pending) == {"email", "phone"}
    m3.fail = None
    await customers.apply(m3_change)  # the consumer's redelivery
    m3_record, record = both(m3, contacts)
    assert (m3_record["MAIL"], m3_record["PHNO"]) == ("m3@nordic.example", "+46 999")
    assert (record["Email"], record["PhoneNumber"]) == ("m3@nordic.example", "+46 999")
    stored = await snapshots.snapshot(engine, "C000003")
    assert stored is not None
    assert stored.pending == {}
    assert stored.agreed["email"].m3 == "m3@nordic.example"


async def test_an_edit_in_quotewerks_during_the_write_is_not_overwritten(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    contacts.edit_before_next_put = {"PhoneNumber": "+46 111"}
    outcome = await customers.apply(m3_edit(m3, CUNM="Nordic Pumps Group AB"))
    assert outcome.action == "updated"
    m3_record, record = both(m3, contacts)
    # The M3 name is written on top of the record as the user left it, and the user's phone reaches M3.
    assert (record["Company"], record["PhoneNumber"], m3_record["PHNO"]) == (
        "Nordic Pumps Group AB", "+46 111", "+46 111"
    )  # fmt: skip


# --- links, matches, creation, deletes ----------------------------------------------------------------------------


async def test_an_unknown_m3_customer_is_created_in_quotewerks_under_its_number(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(), FakeM3()
    customers = master(contacts, engine, m3)
    event = m3_edit(m3, "C000777", CUNM="Baltic Valves Oy", CSCD="FI", CUA1="A 1", CUA2="B 2", CUA3="C 3",
                    CUA4="D 4", MAIL="info@baltic.example")  # fmt: skip
    outcome = await customers.apply(event)
    assert outcome.action == "created"
    record = contacts.records["C000777"]
    assert (record["Company"], record["Address1"], record["Address2"], record["Address3"]) == (
        "Baltic Valves Oy", "A 1", "B 2", "C 3, D 4"
    )  # fmt: skip
    assert record["Country"] == "FI"
    assert (await customers.apply(event.model_copy(update={"changed_at": NOW + timedelta(seconds=1)}))).action == (
        "ignored"
    )
    assert len(contacts.puts) == 1


async def test_dedupe_by_email_then_company_links_an_existing_quotewerks_customer(engine: AsyncEngine) -> None:
    contacts, m3 = (
        Contacts(contact("QW-17", Company="Other Name AB"), contact("QW-18", Email="", Company="Acme Ltd")),
        FakeM3(),
    )
    customers = master(contacts, engine, m3)
    by_email = await customers.apply(m3_edit(m3, "C000050", CUNM="Nordic Pump AB"))
    assert by_email.customer == "QW-17"
    by_name = await customers.apply(m3_edit(m3, "C000051", CUNM="ACME  ltd", MAIL=""))
    assert by_name.customer == "QW-18"
    assert "C000050" not in contacts.records
    assert "C000051" not in contacts.records
    link = await ledger.customer_link(engine, "QW-17")
    assert link is not None
    assert link.m3_customer_number == "C000050"


@pytest.mark.parametrize("decision", ["link", "create"])
async def test_two_quotewerks_customers_alike_are_a_review_item_a_person_settles(
    engine: AsyncEngine, decision: str
) -> None:
    contacts, m3 = Contacts(contact("QW-1"), contact("QW-2", Company="Nordic Pumps AB")), FakeM3()
    customers = master(contacts, engine, m3)
    outcome = await customers.apply(m3_edit(m3, "C000060"))
    assert outcome.action == "unchanged"
    assert "2 QuoteWerks customers match by email (review item" in outcome.reason
    assert contacts.puts == []
    [item] = await snapshots.items(engine)
    assert (item.kind, item.m3_customer_number, item.quotewerks_value) == ("match", "C000060", "QW-1 (100), QW-2 (100)")
    # The next change of that M3 customer waits as well: no guess, no creation.
    assert (await customers.apply(m3_edit(m3, "C000060", TOWN="Boras"))).action == "unchanged"
    assert len(await snapshots.items(engine)) == 1
    await snapshots.decide(engine, item.id, decision, "QW-2" if decision == "link" else None, "eva")  # type: ignore[arg-type]
    await customers.settle_decisions()
    assert await snapshots.items(engine) == []
    if decision == "link":
        link = await ledger.customer_link(engine, "QW-2")
        assert link is not None
        assert link.m3_customer_number == "C000060"
        assert contacts.records["QW-2"]["City"] == "Boras"  # merged at once: M3 owns the city
        assert "C000060" not in contacts.records
    else:
        assert contacts.records["C000060"]["Company"] == "Nordic Pump AB"
        assert await ledger.customer_link(engine, "QW-1") is None


async def test_a_spelling_variant_in_quotewerks_is_found_not_duplicated(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("QW-7", Company="Nordik Pump", Email="", PostalCode="411 01")), FakeM3()
    outcome = await master(contacts, engine, m3).apply(m3_edit(m3, "C000061", MAIL=""))
    assert outcome.customer == "QW-7"
    assert "C000061" not in contacts.records
    assert contacts.records["QW-7"]["Company"] == "Nordic Pump AB"  # M3 owns the name


async def test_a_quotewerks_customer_linked_elsewhere_is_not_taken(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000070")), FakeM3()
    await ledger.link_customer(engine, "C000070", "C000099", email="", company="", by="quotewerks")
    with pytest.raises(CustomerPushRejectedError, match="linked to M3 customer C000099"):
        await master(contacts, engine, m3).apply(m3_edit(m3, "C000070"))


async def test_a_quotewerks_change_of_a_customer_nobody_linked_is_left_to_order_writer(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("QW-5")), FakeM3()
    outcome = await master(contacts, engine, m3).apply_quotewerks(qw_edit(contacts, "QW-5", PhoneNumber="+46 1"))
    assert (outcome.action, m3.calls) == ("ignored", [])


async def test_a_deleted_m3_customer_keeps_its_quotewerks_customer(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    outcome = await master(contacts, engine, m3).apply(m3_edit(m3).model_copy(update={"action": "delete"}))
    assert outcome.action == "ignored"
    assert "deleted" in outcome.reason
    assert "C000003" in contacts.records


@pytest.mark.parametrize("decision", ["recreate", "unlink"])
async def test_a_linked_customer_deleted_in_quotewerks_is_a_decision_not_a_recreation(
    engine: AsyncEngine, decision: str
) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    del contacts.records["C000003"]
    outcome = await customers.apply(m3_edit(m3, CUNM="Nordic Pumps Group AB"))
    assert outcome.action == "unchanged"
    assert "C000003" not in contacts.records
    [item] = await snapshots.items(engine)
    assert (item.kind, item.quotewerks_customer_id) == ("deleted", "C000003")
    assert "gone from QuoteWerks" in item.reason
    await snapshots.decide(engine, item.id, decision, None, "eva")  # type: ignore[arg-type]
    await customers.settle_decisions()
    link = await ledger.customer_link(engine, "C000003")
    if decision == "recreate":
        assert contacts.records["C000003"]["Company"] == "Nordic Pumps Group AB"
        assert link is not None
    else:
        assert "C000003" not in contacts.records
        assert link is None
    assert await snapshots.items(engine) == []


async def test_deleted_in_quotewerks_with_the_unlink_rule_forgets_the_link(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    await linked(engine, contacts, m3)
    del contacts.records["C000003"]
    await master(contacts, engine, m3, quotewerks_deleted="unlink").apply(m3_edit(m3, CUNM="Renamed AB"))
    assert await ledger.customer_link(engine, "C000003") is None
    assert await snapshots.items(engine) == []


# --- QuoteWerks read-only, refusals, outages ----------------------------------------------------------------------


async def test_without_the_contact_manager_quotewerks_edits_still_reach_m3_and_nothing_is_lost(
    engine: AsyncEngine,
) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    await linked(engine, contacts, m3)
    read_only = master(None, engine, m3)
    await read_only.apply_quotewerks(qw_edit(contacts, PhoneNumber="+46 777", Company="Renamed AB"))
    assert m3.customers["C000003"]["PHNO"] == "+46 777"
    assert m3.customers["C000003"]["CUNM"] == "Nordic Pump AB"  # M3 owns the name; QuoteWerks cannot be put back
    stored = await snapshots.snapshot(engine, "C000003")
    assert stored is not None
    assert stored.agreed["name"].quotewerks == "Nordic Pump AB"  # still differs: the next merge that can write does


async def test_a_record_quotewerks_refuses_is_rejected_and_counted(engine: AsyncEngine) -> None:
    class Refusing(Contacts):
        async def put_customer(self, account: str, fields: Mapping[str, str], **_: Any) -> bool:
            raise QuoteWerksError(
                "QuoteWerks refused customer C000003: 422 Company too long", retryable=False, status=422
            )

    contacts, m3 = Refusing(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    with pytest.raises(CustomerPushRejectedError, match="422 Company too long") as rejected:
        await customers.apply(m3_edit(m3, CUNM="Renamed AB"))
    assert rejected.value.problems[0].message.startswith("M3 customer C000003")
    assert customers.counts["rejected"] == 1


async def test_quotewerks_being_down_is_retried_by_redelivery(engine: AsyncEngine) -> None:
    class Down(Contacts):
        async def put_customer(self, account: str, fields: Mapping[str, str], **_: Any) -> bool:
            raise QuoteWerksError("QuoteWerks answered 503", retryable=True, status=503)

    contacts, m3 = Down(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    with pytest.raises(QuoteWerksError, match="503"):
        await customers.apply(m3_edit(m3, CUNM="Renamed AB"))


# --- reconciliation ------------------------------------------------------------------------------------------------


async def test_reconciliation_repairs_what_the_rules_decide_queues_the_rest_and_then_finds_nothing(
    engine: AsyncEngine,
) -> None:
    """Edits on both sides whose events never arrived (a broker outage, a lost BOD): reconciliation finds them."""
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    m3.customers["C000003"].update({"TOWN": "Malmo", "MAIL": "m3@nordic.example"})  # no BOD came for these
    contacts.edit("C000003", NOW, PhoneNumber="+46 1", Email="qw@nordic.example")  # nor a webhook for these
    dry = await customers.reconcile(dry_run=True)
    assert (dry.links, dry.differing_fields, dry.repaired, dry.waiting) == (1, 3, {"city": 1, "phone": 1}, 1)
    assert m3.writes() == []
    assert contacts.puts == []
    assert await snapshots.items(engine) == []
    done = await customers.reconcile()
    assert (done.differing_fields, done.repaired, done.waiting, done.left) == (3, {"city": 1, "phone": 1}, 1, 0)
    m3_record, record = both(m3, contacts)
    assert (m3_record["PHNO"], record["City"]) == ("+46 1", "Malmo")
    # The e-mail changed on both sides with no M3 change time: a person decides.
    [item] = await snapshots.items(engine)
    assert item.field == "email"
    assert {d["field"]: d["action"] for d in done.differences} == {"city": "to_quotewerks", "phone": "to_m3",
                                                                  "email": "review"}  # fmt: skip
    await snapshots.decide(engine, item.id, "m3", None, "eva")
    await customers.settle_decisions()
    again = await customers.reconcile()
    assert (again.links, again.in_step, again.differing_fields, again.waiting) == (1, 1, 0, 0)


async def test_reconciliation_reports_a_customer_it_cannot_read_and_goes_on(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003"), contact("QW-9")), FakeM3()
    customers = await linked(engine, contacts, m3)
    await ledger.link_customer(engine, "QW-9", "C000404", email="", company="", by="quotewerks")  # not in M3
    report = await customers.reconcile()
    assert report.links == 2
    assert report.in_step == 1
    assert [f["m3_customer"] for f in report.failed] == ["C000404"]
    assert "does not exist" in report.failed[0]["error"]


async def test_a_customer_blocked_in_m3_is_reflected_as_a_review_item_never_a_delete(engine: AsyncEngine) -> None:
    contacts, m3 = Contacts(contact("C000003")), FakeM3()
    customers = await linked(engine, contacts, m3)
    await customers.apply(m3_edit(m3, STAT="90"))
    [item] = await snapshots.items(engine)
    assert (item.kind, item.m3_value) == ("blocked", "status 90")
    assert "C000003" in contacts.records
    await customers.apply(m3_edit(m3, STAT="20"))  # unblocked in M3: the item closes by itself
    assert await snapshots.items(engine) == []
    await customers.apply(m3_edit(m3, STAT="90"))
    [again] = await snapshots.items(engine)
    await snapshots.decide(engine, again.id, "keep", None, "eva")
    await customers.settle_decisions()
    assert await snapshots.items(engine) == []


async def test_the_customer_of_a_quote_without_a_quotewerks_account_has_no_contact_to_keep_in_step(
    engine: AsyncEngine,
) -> None:
    """order-writer links a sold-to without CMAccountNo by its e-mail: no contact record, nothing to merge."""
    contacts, m3 = Contacts(), FakeM3()
    customers = master(contacts, engine, m3)
    await ledger.link_customer(engine, "email:buyer@new.example", "C000003", email="", company="", by="m3bridge")
    assert await customers.settle_decisions() == 0
    outcome = await customers.apply(m3_edit(m3, CUNM="Renamed AB"))
    assert outcome.action == "ignored"
    assert contacts.puts == []
    assert await snapshots.items(engine) == []
    assert (await customers.reconcile()).links == 0
