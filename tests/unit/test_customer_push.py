"""Customers M3 → QuoteWerks (services/catalog_sync/customers.py) against an in-memory contact manager and a real
SQLite state store (the same migrations as PostgreSQL)."""

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.catalog_sync.customers import (
    CustomerPush,
    CustomerPushRejectedError,
    country_table,
    quotewerks_country,
)
from shared.contracts import M3CustomerChanged
from shared.customers import (
    FINGERPRINT_M3,
    FINGERPRINT_QUOTEWERKS,
    is_quotewerks_echo,
    load_sync_rules,
    m3_event_state,
    state_hash,
)
from shared.mapping import LookupTable, load_rules
from shared.quotewerks import QuoteWerksConflictError, QuoteWerksError, customer_from_contact
from shared.state import db, fingerprints, ledger

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# name, address, city, postal code, country: m3; phone: quotewerks; email: newest
RULES = load_sync_rules(ROOT / "deploy/config/customer-sync.yaml")
COUNTRIES = country_table(load_rules(ROOT / "deploy/config/order-mapping.yaml"))
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class Contacts:
    """The QuoteWerks contact manager, in memory; LastModified moves on every write like the real one."""

    def __init__(self, *records: dict[str, str]) -> None:
        self.records = {r["CMAccountNo"]: dict(r) for r in records}
        self.puts: list[tuple[str, dict[str, str]]] = []
        self.edit_before_next_put: dict[str, str] = {}  # a QuoteWerks user saving this just before our write

    async def find_customer(self, account: str) -> dict[str, Any] | None:
        found = self.records.get(account)
        return dict(found) if found else None

    async def customers(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.records.values()]

    async def put_customer(
        self, account: str, fields: Mapping[str, str], *, read_as: str | None = None, new: bool = False
    ) -> bool:
        if self.edit_before_next_put:
            edit, self.edit_before_next_put = self.edit_before_next_put, {}
            self.records[account] = {**self.records[account], **edit, "LastModified": stamp(datetime.now(UTC))}
        current = self.records.get(account)
        if (new and current is not None) or (read_as is not None and (current or {}).get("LastModified") != read_as):
            raise QuoteWerksConflictError(f"customer {account} changed since it was read")
        created = account not in self.records
        self.puts.append((account, dict(fields)))
        self.records[account] = {**fields, "CMAccountNo": account, "LastModified": stamp(datetime.now(UTC))}
        return created


def contact(account: str, **columns: str) -> dict[str, str]:
    record = {
        "CMAccountNo": account, "Company": "Nordic Pump AB", "Contact": "Eva Berg", "Address1": "12 Harbour Road",
        "Address2": "", "Address3": "", "City": "Goteborg", "State": "", "PostalCode": "41101", "Country": "Sweden",
        "PhoneNumber": "+46 555", "Email": "orders@nordic.example", "LastModified": stamp(NOW - timedelta(days=2)),
    }  # fmt: skip
    return {**record, **columns}


def m3_event(number: str = "C000003", **changes: Any) -> M3CustomerChanged:
    data: dict[str, Any] = {
        "customer_number": number, "action": "change", "name": "Nordic Pump AB",
        "address_lines": ["12 Harbour Road"], "town": "Goteborg", "postal_code": "41101", "country": "SE",
        "phone": "+46 555", "email": "orders@nordic.example", "changed_at": NOW,
    }  # fmt: skip
    return M3CustomerChanged.model_validate({**data, **changes})


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await db.migrate(url)
    created = db.create_engine(url)
    yield created
    await created.dispose()


def push(contacts: Contacts, engine: AsyncEngine) -> CustomerPush:
    return CustomerPush(contacts, engine, RULES, COUNTRIES)


def test_country_codes_become_the_names_quotewerks_uses() -> None:
    assert COUNTRIES is not None
    assert quotewerks_country("SE", "Sverige", COUNTRIES) == "Sverige"  # already means SE: kept
    assert quotewerks_country("SE", "Germany", COUNTRIES) == "Sweden"  # the table's first name for SE
    assert quotewerks_country("FI", "", COUNTRIES) == "FI"  # not in the table: the code
    assert quotewerks_country("SE", "se", None) == "se"
    assert quotewerks_country("", "Sweden", COUNTRIES) == ""
    assert quotewerks_country("US", "", LookupTable(entries={"USA": "US"})) == "USA"


async def test_an_m3_owned_change_reaches_the_linked_quotewerks_customer(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("C000003"))
    outcome = await push(contacts, engine).apply(m3_event(name="Nordic Pumps Group AB", town="Malmo"))
    assert outcome.action == "updated"
    assert outcome.written == {"Company": "Nordic Pumps Group AB", "City": "Malmo"}
    record = contacts.records["C000003"]
    assert (record["Company"], record["City"], record["Country"], record["Contact"]) == (
        "Nordic Pumps Group AB", "Malmo", "Sweden", "Eva Berg"
    )  # fmt: skip
    link = await ledger.customer_link_for_m3(engine, "C000003")
    assert link is not None
    assert link.quotewerks_customer_id == "C000003"


async def test_the_write_it_causes_in_quotewerks_is_recognised_as_an_echo(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("C000003"))
    await push(contacts, engine).apply(m3_event(name="Nordic Pumps Group AB"))
    after = contacts.records["C000003"]
    echo = customer_from_contact(after, change="updated", changed_at=datetime.now(UTC))
    assert await is_quotewerks_echo(engine, echo)
    edited = customer_from_contact({**after, "PhoneNumber": "+46 1"}, change="updated", changed_at=datetime.now(UTC))
    assert not await is_quotewerks_echo(engine, edited)


async def test_fields_quotewerks_owns_or_won_are_not_overwritten(engine: AsyncEngine) -> None:
    later = NOW + timedelta(hours=1)  # the QuoteWerks e-mail is newer than the M3 change
    newer = contact("C000003", PhoneNumber="+46 777", Email="new@nordic.example", LastModified=stamp(later))
    contacts = Contacts(newer)
    outcome = await push(contacts, engine).apply(m3_event(phone="+46 555", email="old@nordic.example"))
    assert outcome.action == "unchanged"
    assert contacts.puts == []


async def test_a_newer_m3_email_wins(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("C000003", Email="old@nordic.example"))
    outcome = await push(contacts, engine).apply(m3_event(email="new@nordic.example"))
    assert outcome.written == {"Email": "new@nordic.example"}


async def test_an_empty_m3_value_never_clears_quotewerks(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("C000003"))
    outcome = await push(contacts, engine).apply(m3_event(town="", postal_code=""))
    assert outcome.action == "unchanged"


async def test_the_bridges_own_m3_write_is_not_echoed_back(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("C000003"))
    event = m3_event(name="Renamed By Bridge AB")
    await fingerprints.put(engine, FINGERPRINT_M3, "C000003", state_hash(m3_event_state(event)))
    outcome = await push(contacts, engine).apply(event)
    assert outcome.action == "ignored"
    assert contacts.puts == []
    assert (await push(contacts, engine).apply(m3_event(origin="m3bridge"))).action == "ignored"


async def test_an_unknown_m3_customer_is_created_in_quotewerks_under_its_number(engine: AsyncEngine) -> None:
    contacts = Contacts()
    event = m3_event("C000777", name="Baltic Valves Oy", country="FI", address_lines=["A 1", "B 2", "C 3", "D 4"])
    outcome = await push(contacts, engine).apply(event)
    assert outcome.action == "created"
    record = contacts.records["C000777"]
    assert (record["Company"], record["Address1"], record["Address2"], record["Address3"]) == (
        "Baltic Valves Oy", "A 1", "B 2", "C 3, D 4"
    )  # fmt: skip
    assert record["Country"] == "FI"
    assert await fingerprints.get(engine, FINGERPRINT_QUOTEWERKS, "C000777") is not None
    again = await push(contacts, engine).apply(event.model_copy(update={"changed_at": NOW + timedelta(seconds=1)}))
    assert again.action == "unchanged"
    assert len(contacts.puts) == 1


async def test_dedupe_by_email_then_company_links_an_existing_quotewerks_customer(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("QW-17", Company="Other Name AB"), contact("QW-18", Email="", Company="Acme Ltd"))
    by_email = await push(contacts, engine).apply(m3_event("C000050", name="Nordic Pump AB"))
    assert by_email.customer == "QW-17"
    by_name = await push(contacts, engine).apply(m3_event("C000051", name="ACME  ltd", email=""))
    assert by_name.customer == "QW-18"
    assert "C000050" not in contacts.records
    assert "C000051" not in contacts.records
    link = await ledger.customer_link(engine, "QW-17")
    assert link is not None
    assert link.m3_customer_number == "C000050"


async def test_two_quotewerks_customers_with_the_same_email_need_a_person(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("QW-1"), contact("QW-2"))
    with pytest.raises(CustomerPushRejectedError, match="2 QuoteWerks customers have Email"):
        await push(contacts, engine).apply(m3_event("C000060"))
    assert contacts.puts == []


async def test_a_quotewerks_customer_linked_elsewhere_is_not_taken(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("C000070"))
    await ledger.link_customer(engine, "C000070", "C000099", email="", company="", by="quotewerks")
    with pytest.raises(CustomerPushRejectedError, match="linked to M3 customer C000099"):
        await push(contacts, engine).apply(m3_event("C000070"))


async def test_an_older_m3_change_than_the_one_applied_is_ignored(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("C000003"))
    await push(contacts, engine).apply(m3_event(name="Newer Name AB"))
    stale = await push(contacts, engine).apply(m3_event(name="Older Name AB", changed_at=NOW - timedelta(hours=1)))
    assert stale.action == "ignored"
    assert contacts.records["C000003"]["Company"] == "Newer Name AB"


async def test_a_deleted_m3_customer_keeps_its_quotewerks_customer(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("C000003"))
    outcome = await push(contacts, engine).apply(m3_event(action="delete"))
    assert outcome.action == "ignored"
    assert "deleted" in outcome.reason
    assert "C000003" in contacts.records


async def test_an_edit_in_quotewerks_during_the_write_is_not_overwritten(engine: AsyncEngine) -> None:
    contacts = Contacts(contact("C000003"))
    contacts.edit_before_next_put = {"PhoneNumber": "+46 111", "Email": "new@nordic.example"}
    outcome = await push(contacts, engine).apply(m3_event(name="Nordic Pumps Group AB"))
    assert outcome.action == "updated"
    record = contacts.records["C000003"]
    # The M3 name is written on top of the record as the user left it, not on the one read before.
    assert (record["Company"], record["PhoneNumber"], record["Email"]) == (
        "Nordic Pumps Group AB", "+46 111", "new@nordic.example"
    )  # fmt: skip
    assert len(contacts.puts) == 1


async def test_a_record_quotewerks_refuses_is_rejected_and_counted(engine: AsyncEngine) -> None:
    class Refusing(Contacts):
        async def put_customer(self, account: str, fields: Mapping[str, str], **_: Any) -> bool:
            raise QuoteWerksError(
                "QuoteWerks refused customer C000003: 422 Company too long", retryable=False, status=422
            )

    pusher = push(Refusing(contact("C000003")), engine)
    with pytest.raises(CustomerPushRejectedError, match="422 Company too long") as rejected:
        await pusher.apply(m3_event(name="Renamed AB"))
    assert rejected.value.problems[0].message.startswith("M3 customer C000003")
    assert pusher.counts["rejected"] == 1


async def test_quotewerks_being_down_is_retried_by_redelivery(engine: AsyncEngine) -> None:
    class Down(Contacts):
        async def put_customer(self, account: str, fields: Mapping[str, str], **_: Any) -> bool:
            raise QuoteWerksError("QuoteWerks answered 503", retryable=True, status=503)

    with pytest.raises(QuoteWerksError, match="503"):
        await push(Down(contact("C000003")), engine).apply(m3_event(name="Renamed AB"))
