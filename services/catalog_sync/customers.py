"""Customers M3 → QuoteWerks (catalog-sync): `m3.customer.changed.v1` → the QuoteWerks contact manager.

Which QuoteWerks customer an M3 customer is: the customer link (either direction made it), else the QuoteWerks
customer whose CMAccountNo is the CUNO, else exactly one not yet linked customer with the same e-mail, else with the
same company name; none → a new QuoteWerks customer with CMAccountNo = CUNO. Only the fields M3 wins by the rules
(`shared/customers.py`, `deploy/config/customer-sync.yaml`) are written, and an empty M3 value never clears one.

No ping-pong: the M3 change the bridge itself wrote (order-writer) is recognised by its state hash and dropped; before
writing to QuoteWerks the hash of what QuoteWerks will hold is stored, so order-writer drops the QuoteWerks change
event that the write causes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts import M3CustomerChanged, Problem
from shared.customers import (
    BRIDGE_ORIGIN,
    FIELD_NAMES,
    FINGERPRINT_QUOTEWERKS,
    M3_SYNCED_AT,
    CustomerChangeRejectedError,
    CustomerSyncRules,
    CustomerWriteOutcome,
    FieldName,
    clean,
    is_m3_echo,
    last_synced_at,
    mark_synced,
    party_state,
    state_hash,
    winner,
)
from shared.mapping import LookupTable, MappingRules
from shared.quotewerks import QuoteWerksConflictError, QuoteWerksError, parse_last_modified, party_from_contact
from shared.state import fingerprints, ledger

log = logging.getLogger(__name__)

customer_changes = Counter(
    "m3bridge_catalog_customer_changes_total", "M3 customer changes applied to QuoteWerks, by outcome.", ["outcome"]
)
CONFLICT_ATTEMPTS = 3  # a QuoteWerks user editing the same customer meanwhile: read again and decide again

# The QuoteWerks contact-manager columns of each synced field.
QUOTEWERKS_COLUMNS: dict[FieldName, tuple[str, ...]] = {
    "name": ("Company",),
    "address": ("Address1", "Address2", "Address3"),
    "city": ("City",),
    "postal_code": ("PostalCode",),
    "country": ("Country",),
    "phone": ("PhoneNumber",),
    "email": ("Email",),
}
WRITABLE_COLUMNS = (
    "Company", "Contact", "Address1", "Address2", "Address3", "City", "State", "PostalCode", "Country",
    "PhoneNumber", "Email",
)  # fmt: skip


class Contacts(Protocol):
    """The QuoteWerks side (`shared.quotewerks.QuoteWerksClient`)."""

    async def find_customer(self, account: str) -> dict[str, Any] | None: ...
    async def customers(self) -> list[dict[str, Any]]: ...
    async def put_customer(
        self, account: str, fields: Mapping[str, str], *, read_as: str | None = None, new: bool = False
    ) -> bool: ...


class CustomerPushRejectedError(CustomerChangeRejectedError):
    """The change cannot be applied without a person (several QuoteWerks customers match, QuoteWerks refused the
    record, …)."""

    def __init__(self, message: str) -> None:
        super().__init__([Problem(error_class="business", message=message[:2000])])


def country_table(rules: MappingRules) -> LookupTable | None:
    """The lookup the order mapping uses for CSCD (QuoteWerks country text → M3 country code), if any."""
    section = rules.customer
    for rule in section.fields if section is not None else []:
        if rule.target == "CSCD" and rule.lookup is not None:
            return rules.lookups.get(rule.lookup)
    return None


def quotewerks_country(code: str, current: str, table: LookupTable | None) -> str:
    """M3's country code as QuoteWerks text: the current text when it already means that code (so "Sverige" stays
    "Sverige" for SE), else the first name the table gives the code, else the code itself."""
    if not code:
        return ""
    if current and (current.casefold() == code.casefold() or (table is not None and table.resolve(current) == code)):
        return current
    if table is not None:
        for name, mapped in table.entries.items():
            if mapped == code:
                return name
    return code


def quotewerks_values(event: M3CustomerChanged, current: Mapping[str, object], table: LookupTable | None) -> dict[
    FieldName, dict[str, str]
]:  # fmt: skip
    """Each synced field of the M3 customer as the QuoteWerks columns it becomes. M3 has four address lines,
    QuoteWerks three: the fourth continues the third."""
    lines = [clean(line) for line in event.address_lines if clean(line)]
    address = [*lines[:2], ", ".join(lines[2:])] if len(lines) > 3 else list(lines)
    address += [""] * (3 - len(address))
    return {
        "name": {"Company": clean(event.name)},
        "address": dict(zip(QUOTEWERKS_COLUMNS["address"], address, strict=True)),
        "city": {"City": clean(event.town)},
        "postal_code": {"PostalCode": clean(event.postal_code)},
        "country": {"Country": quotewerks_country(clean(event.country), clean(current.get("Country")), table)},
        "phone": {"PhoneNumber": clean(event.phone)},
        "email": {"Email": clean(event.email)},
    }


def changes_for_quotewerks(
    rules: CustomerSyncRules,
    current: Mapping[str, object],
    wanted: Mapping[FieldName, Mapping[str, str]],
    *,
    m3_at: datetime,
) -> dict[str, str]:
    """The QuoteWerks columns to write: those of fields M3 wins whose M3 value is not empty and differs. Address
    lines go as a unit."""
    quotewerks_at = parse_last_modified(current.get("LastModified"))
    changes: dict[str, str] = {}
    for name in FIELD_NAMES:
        if winner(rules, name, quotewerks_at=quotewerks_at, m3_at=m3_at) != "m3":
            continue
        columns = wanted[name]
        if not any(columns.values()):
            continue  # an empty M3 value never clears QuoteWerks
        if any(value != clean(current.get(column)) for column, value in columns.items()):
            changes.update(columns)
    return changes


class CustomerPush:
    """Applies `m3.customer.changed.v1` to QuoteWerks."""

    def __init__(
        self, contacts: Contacts, engine: AsyncEngine, rules: CustomerSyncRules, countries: LookupTable | None
    ) -> None:
        self.contacts = contacts
        self.engine = engine
        self.rules = rules
        self.countries = countries
        self.counts = {"created": 0, "updated": 0, "unchanged": 0, "ignored": 0, "rejected": 0}

    async def apply(self, event: M3CustomerChanged) -> CustomerWriteOutcome:
        """Raises CustomerPushRejectedError (dead-letter it) or a retryable error (QuoteWerksError, OSError:
        redeliver). Writes are conditional on the record as read, so an edit made in QuoteWerks meanwhile is never
        overwritten: the change is decided again on the newer record."""
        try:
            outcome = await self._apply_reading_again(event)
        except QuoteWerksError as exc:
            if exc.retryable:
                raise
            self._count("rejected")
            raise CustomerPushRejectedError(f"M3 customer {event.customer_number}: {exc}") from exc
        except CustomerPushRejectedError:
            self._count("rejected")
            raise
        self._count(outcome.action)
        return outcome

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        customer_changes.labels(outcome).inc()

    async def _apply_reading_again(self, event: M3CustomerChanged) -> CustomerWriteOutcome:
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                return await self._apply(event)
            except QuoteWerksConflictError:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                log.info("QuoteWerks customer for %s changed while it was updated: reading it again",
                         event.customer_number)  # fmt: skip
        raise AssertionError("unreachable")  # pragma: no cover

    async def _apply(self, event: M3CustomerChanged) -> CustomerWriteOutcome:
        number = event.customer_number
        if await is_m3_echo(self.engine, event):
            return CustomerWriteOutcome("ignored", reason=f"M3 customer {number}: the bridge's own write coming back")
        if event.action == "delete":
            return CustomerWriteOutcome(
                "ignored", reason=f"M3 customer {number} deleted: the QuoteWerks customer is kept"
            )
        changed_at = event.changed_at.astimezone(UTC)
        applied_at = await last_synced_at(self.engine, number, M3_SYNCED_AT)
        if applied_at is not None and changed_at < applied_at:
            return CustomerWriteOutcome(
                "ignored", reason=f"older than the M3 change applied at {applied_at.isoformat()}"
            )
        account, current = await self._find(event)
        if current is None:
            return await self._create(event, account, changed_at)
        return await self._update(event, account, current, changed_at)

    async def _find(self, event: M3CustomerChanged) -> tuple[str, dict[str, Any] | None]:
        number = event.customer_number
        link = await ledger.customer_link_for_m3(self.engine, number)
        if link is not None:
            found = await self.contacts.find_customer(link.quotewerks_customer_id)
            return link.quotewerks_customer_id, found  # None: removed in QuoteWerks, recreated under its id
        found = await self.contacts.find_customer(number)
        if found is not None:
            return await self._claim(number, number, found)
        match = await self._match(event)
        if match is None:
            return number, None
        account = str(match.get("CMAccountNo") or "")
        return await self._claim(account, number, match)

    async def _claim(self, account: str, number: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        other = await ledger.customer_link(self.engine, account)
        if other is not None and other.m3_customer_number != number:
            raise CustomerPushRejectedError(
                f"QuoteWerks customer {account} is linked to M3 customer {other.m3_customer_number}, not {number}: "
                "merge or relink them"
            )
        await ledger.link_customer(
            self.engine, account, number, email=clean(record.get("Email")), company=clean(record.get("Company")),
            by="m3",
        )  # fmt: skip
        return account, record

    async def _match(self, event: M3CustomerChanged) -> dict[str, Any] | None:
        """Dedupe: the one QuoteWerks customer not linked yet with the same e-mail, else the same company name."""
        records = await self.contacts.customers()
        for column, value in (("Email", event.email), ("Company", event.name)):
            wanted = clean(value).casefold()
            if not wanted:
                continue
            alike = [r for r in records if r.get("CMAccountNo") and clean(r.get(column)).casefold() == wanted]
            # The link lookup only for the few with the same value, not for every QuoteWerks customer.
            same = [r for r in alike if await ledger.customer_link(self.engine, str(r["CMAccountNo"])) is None]
            if len(same) > 1:
                accounts = ", ".join(sorted(str(r.get("CMAccountNo")) for r in same)[:5])
                raise CustomerPushRejectedError(
                    f"M3 customer {event.customer_number}: {len(same)} QuoteWerks customers have {column} "
                    f"{value!r} ({accounts}): link one by hand"
                )
            if same:
                return same[0]
        return None

    async def _write(
        self,
        account: str,
        number: str,
        record: Mapping[str, str],
        changed_at: datetime,
        *,
        read_as: str | None,
        new: bool = False,
    ) -> None:
        """Put the record only if QuoteWerks still has it as read (`read_as`: its LastModified; `new`: it did not
        exist), link it to the M3 customer and remember the M3 change as applied."""
        # The fingerprint goes first: QuoteWerks' change event for this write may reach order-writer before we return.
        party = party_from_contact({**record, "CMAccountNo": account})
        await fingerprints.put(self.engine, FINGERPRINT_QUOTEWERKS, account, state_hash(party_state(party)))
        await self.contacts.put_customer(account, record, read_as=read_as, new=new)
        await ledger.link_customer(
            self.engine, account, number, email=record["Email"], company=record["Company"], by=BRIDGE_ORIGIN
        )
        await mark_synced(self.engine, number, changed_at, M3_SYNCED_AT)

    async def _create(self, event: M3CustomerChanged, account: str, changed_at: datetime) -> CustomerWriteOutcome:
        if not clean(event.name):
            raise CustomerPushRejectedError(f"M3 customer {event.customer_number} has no name: QuoteWerks needs one")
        wanted = quotewerks_values(event, {}, self.countries)
        record = dict.fromkeys(WRITABLE_COLUMNS, "")
        for columns in wanted.values():
            record.update(columns)
        await self._write(account, event.customer_number, record, changed_at, read_as=None, new=True)
        log.info("M3 customer %s created in QuoteWerks as %s", event.customer_number, account)
        return CustomerWriteOutcome("created", account, written={k: v for k, v in record.items() if v})

    async def _update(
        self, event: M3CustomerChanged, account: str, current: Mapping[str, Any], changed_at: datetime
    ) -> CustomerWriteOutcome:
        wanted = quotewerks_values(event, current, self.countries)
        changes = changes_for_quotewerks(self.rules, current, wanted, m3_at=changed_at)
        if not changes:
            await mark_synced(self.engine, event.customer_number, changed_at, M3_SYNCED_AT)
            return CustomerWriteOutcome("unchanged", account, reason="nothing M3 wins differs from QuoteWerks")
        record = {column: clean(current.get(column)) for column in WRITABLE_COLUMNS}
        record.update(changes)
        read_as = str(current.get("LastModified") or "") or None
        await self._write(account, event.customer_number, record, changed_at, read_as=read_as)
        log.info("QuoteWerks customer %s changed from M3 %s: %s", account, event.customer_number, sorted(changes))
        return CustomerWriteOutcome("updated", account, written=changes)
