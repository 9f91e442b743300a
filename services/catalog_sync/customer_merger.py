"""The merge of one linked customer, both ways (catalog-sync runs it for changes from either side).

A merge reads both systems as they are now (CRS610MI/GetBasicData, the QuoteWerks contact), decides each field with
`services/catalog_sync/customer_merge.py` against the last-synced snapshot, writes what the decisions say to either
side, opens a review item for each field a person must settle, and stores the new snapshot.

Crash points and what the next merge does about them:
- after `pending` is stored, before or between the two writes: each pending field whose two sides now hold the
  pending values counts as agreed (that write landed); the others are decided again from what the systems hold;
- after the writes, before the snapshot: the same;
- a lost QuoteWerks answer: the write is conditional on the record as read, so the next merge reads what it holds.
Merges of one customer run one at a time in a process; replicas are kept apart by the snapshot's version (a merge
that lost the race reads everything again).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from services.catalog_sync.customer_merge import Agreed, ChangeTimes, FieldDecision, merge
from services.catalog_sync.customer_sides import (
    PRIORITY,
    WRITABLE_COLUMNS,
    Contacts,
    CustomerM3,
    equivalent,
    party_quote,
    quotewerks_columns,
)
from shared.contracts import (
    M3CustomerChanged,
    Party,
    Problem,
    QuoteWerksCustomerChanged,
)
from shared.customers import (
    FIELD_NAMES,
    M3_FIELDS,
    CustomerChangeRejectedError,
    CustomerSyncRules,
    CustomerWriteOutcome,
    FieldName,
    State,
    clean,
    m3_event_state,
    m3_state,
    party_state,
    state_hash,
)
from shared.m3 import M3BusinessError
from shared.mapping import LookupTable, MappingRules, plan_customer
from shared.platform.state import customer_snapshots as snapshots, ledger
from shared.platform.state.customer_snapshots import WorkItemValues
from shared.platform.state.models import CustomerWorkItem
from shared.quotewerks import QuoteWerksConflictError, parse_last_modified, party_from_contact

log = logging.getLogger(__name__)

merge_decisions = Counter(
    "m3bridge_customer_merge_fields_total", "Customer fields decided by a merge, by action.", ["action"]
)
LOCK_STRIPES = 64
MERGE_ATTEMPTS = 4  # a QuoteWerks edit or another merge meanwhile: read both sides again and decide again

# The QuoteWerks contact-manager columns of each synced field.


@dataclass
class MergeOutcome:
    decisions: list[FieldDecision]
    to_m3: dict[str, str] = field(default_factory=dict)
    to_quotewerks: dict[str, str] = field(default_factory=dict)
    reviews: list[int] = field(default_factory=list)
    #: Fields whose two values did not mean the same when the merge read them.
    differing: list[FieldName] = field(default_factory=list)
    #: The linked QuoteWerks customer is gone.
    gone: bool = False
    #: Fields the decisions would write to QuoteWerks where it cannot be written (no contact manager here).
    unwritable: list[FieldName] = field(default_factory=list)

    def as_write_outcome(self, number: str) -> CustomerWriteOutcome:
        written = {
            **{f"M3 {k}": v for k, v in self.to_m3.items()},
            **{f"QuoteWerks {k}": v for k, v in self.to_quotewerks.items()},
        }
        if written:
            return CustomerWriteOutcome("updated", number, written=written)
        waiting = [d.field for d in self.decisions if d.action in ("review", "waiting")]
        reason = f"waiting for review: {', '.join(waiting)}" if waiting else "the two sides agree"
        return CustomerWriteOutcome("unchanged", number, reason=reason)


class _ReadAgainError(Exception):
    """Someone changed the customer during the merge: read both sides again."""


class CustomerMerger:
    def __init__(
        self,
        m3: CustomerM3,
        contacts: Contacts | None,
        engine: Any,
        rules: CustomerSyncRules,
        mapping: MappingRules,
        countries: LookupTable | None,
        lengths: Callable[[], Awaitable[Mapping[str, Mapping[str, int]]]],
    ) -> None:
        self.m3 = m3
        self.contacts = contacts
        self.engine = engine
        self.rules = rules
        self.mapping = mapping
        self.countries = countries
        self.lengths = lengths
        self.same = equivalent(countries)
        # Merges of one customer one at a time; a fixed set of locks keeps memory flat however many customers.
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    async def merge(
        self,
        number: str,
        account: str,
        *,
        m3_event: M3CustomerChanged | None = None,
        quotewerks_event: QuoteWerksCustomerChanged | None = None,
        dry_run: bool = False,
    ) -> MergeOutcome:
        """Merge the linked pair (`number` in M3, `account` in QuoteWerks). The triggering event, if any, tells when
        its side's values were made; `dry_run` decides and reports without writing or storing anything. Raises
        CustomerChangeRejectedError when M3 does not have the customer, and a retryable error when a system cannot
        be reached."""
        async with self._locks[zlib.crc32(number.encode()) % len(self._locks)]:
            for _ in range(MERGE_ATTEMPTS):
                try:
                    return await self._merge_once(number, account, m3_event, quotewerks_event, dry_run=dry_run)
                except _ReadAgainError as again:
                    log.info("customer %s: %s; merging again", number, again)
            raise QuoteWerksConflictError(f"customer {number} kept changing during {MERGE_ATTEMPTS} merges")

    async def read_m3(self, number: str) -> dict[str, Any]:
        try:
            record = await self.m3.execute_one("CRS610MI", "GetBasicData", {"CUNO": number}, priority=PRIORITY)
        except M3BusinessError as missing:
            raise CustomerChangeRejectedError([
                Problem(error_class="business", message=f"M3 customer {number}: {missing}"[:2000])
            ]) from missing  # fmt: skip
        return dict(record or {})

    async def _merge_once(
        self,
        number: str,
        account: str,
        m3_event: M3CustomerChanged | None,
        quotewerks_event: QuoteWerksCustomerChanged | None,
        *,
        dry_run: bool = False,
    ) -> MergeOutcome:
        stored = await snapshots.snapshot(self.engine, number)
        m3_record = await self.read_m3(number)
        m3_now = m3_state(m3_record)
        if self.contacts is not None:
            contact = await self.contacts.find_customer(account)
            if contact is None:
                if dry_run:
                    return MergeOutcome([], gone=True)
                return await self._gone_from_quotewerks(number, account, m3_now)
            quotewerks_now = party_state(party_from_contact(contact))
            quotewerks_at = parse_last_modified(contact.get("LastModified"))
        elif quotewerks_event is not None:
            contact, quotewerks_at = None, quotewerks_event.changed_at
            quotewerks_now = party_state(quotewerks_event.customer)
        else:
            return MergeOutcome([])  # QuoteWerks cannot be read here: its own change events bring its values
        agreed = dict(stored.agreed) if stored else {}
        for name, landed in (stored.pending if stored else {}).items():
            if m3_now[name] == landed.m3 and quotewerks_now[name] == landed.quotewerks:
                agreed[name] = landed  # that write of an interrupted merge landed
        times = ChangeTimes(m3=self._m3_time(m3_now, m3_event, stored), quotewerks=quotewerks_at)
        items = await snapshots.items(self.engine, m3_customer_number=number)
        decided = {i.field: i for i in items if i.kind == "conflict" and i.status == snapshots.DECIDED}
        waiting = frozenset(i.field for i in items if i.kind == "conflict" and i.status == snapshots.OPEN)
        decisions = merge(
            self.rules, agreed if stored else None, m3_now, quotewerks_now, times=times, equivalent=self.same,
            open_reviews=waiting | frozenset(decided),  # type: ignore[arg-type]
        )  # fmt: skip
        decisions = [self._person(d, decided.get(d.field), m3_now, quotewerks_now) for d in decisions]
        outcome = MergeOutcome(decisions)
        outcome.differing = [n for n in FIELD_NAMES if not self.same(n, m3_now[n], quotewerks_now[n])]
        party = party_from_contact(contact) if contact is not None else quotewerks_event.customer  # type: ignore[union-attr]
        m3_changes, quotewerks_changes = await self._changes(decisions, account, m3_record, m3_now, contact, party,
                                                              decided)  # fmt: skip
        m3_after = m3_state({**m3_record, **m3_changes})
        quotewerks_after = quotewerks_now
        if contact is not None and quotewerks_changes:
            quotewerks_after = party_state(party_from_contact({**contact, **quotewerks_changes}))
        written = {d.field for d in decisions if d.writes == "m3" or (d.writes and contact is not None)}
        new_agreed = dict(agreed)
        for d in decisions:
            if d.action == "to_quotewerks" and contact is None:
                outcome.unwritable.append(d.field)
                continue  # QuoteWerks is not written here: the field stays as it was agreed, and differs
            if d.action in ("agreed", "to_m3", "to_quotewerks"):
                new_agreed[d.field] = Agreed(m3_after[d.field], quotewerks_after[d.field])
            elif d.action == "in_step" and d.field not in new_agreed:
                new_agreed[d.field] = Agreed(m3_now[d.field], quotewerks_now[d.field])
        if dry_run:
            outcome.to_m3, outcome.to_quotewerks = m3_changes, quotewerks_changes if contact is not None else {}
            return outcome
        version = stored.version if stored else None
        if m3_changes or quotewerks_changes:
            pending = {name: new_agreed[name] for name in written}
            version = await snapshots.save(self.engine, number, account, read_version=version, pending=pending)
            if version is None:
                raise _ReadAgainError("another merge of it finished first")
            if quotewerks_changes and contact is not None and self.contacts is not None:
                record = {column: clean(contact.get(column)) for column in WRITABLE_COLUMNS}
                record.update(quotewerks_changes)
                read_as = str(contact.get("LastModified") or "") or None
                try:
                    await self.contacts.put_customer(account, record, read_as=read_as)
                except QuoteWerksConflictError as edited:
                    raise _ReadAgainError("QuoteWerks changed it meanwhile") from edited
                outcome.to_quotewerks = quotewerks_changes
            if m3_changes:
                await self.m3.execute("CRS610MI", "ChgBasicData", {"CUNO": number, **m3_changes}, priority=PRIORITY)
                outcome.to_m3 = m3_changes
        if await snapshots.save(self.engine, number, account, read_version=version, agreed=new_agreed) is None:
            raise _ReadAgainError("another merge of it finished first")
        if m3_event is not None:
            await snapshots.note_m3_event(
                self.engine, number, state_hash(m3_event_state(m3_event)), m3_event.changed_at
            )
        await self._settle_items(number, account, decisions, decided, agreed, m3_now, quotewerks_now, times, outcome)
        for d in decisions:
            merge_decisions.labels(d.action).inc()
        return outcome

    def _m3_time(
        self, m3_now: State, event: M3CustomerChanged | None, stored: snapshots.StoredSnapshot | None
    ) -> datetime | None:
        """When M3's current values were made: the change event's time when it shows them (this merge's trigger,
        or the newest one seen before); M3's own LMDT is a date and does not count."""
        current = state_hash(m3_now)
        if event is not None and state_hash(m3_event_state(event)) == current:
            return event.changed_at.astimezone(UTC)
        if stored is not None and stored.m3_event_hash == current and stored.m3_event_at is not None:
            return stored.m3_event_at
        return None

    def _person(
        self, decision: FieldDecision, item: CustomerWorkItem | None, m3: State, quotewerks: State
    ) -> FieldDecision:
        """A field a person decided: their choice, applied against what the systems hold now."""
        if item is None or decision.action == "agreed":
            return decision
        choice = item.decision
        if choice == "m3":
            return FieldDecision(decision.field, "to_quotewerks", f"decided by {item.decided_by}: M3's value")
        if choice == "quotewerks":
            return FieldDecision(decision.field, "to_m3", f"decided by {item.decided_by}: QuoteWerks' value")
        return FieldDecision(decision.field, "to_m3", f"decided by {item.decided_by}: {item.decided_value!r}")

    async def _changes(
        self,
        decisions: list[FieldDecision],
        account: str,
        m3_record: Mapping[str, Any],
        m3_now: State,
        contact: Mapping[str, Any] | None,
        party: Party,
        decided: Mapping[str, CustomerWorkItem],
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The CRS610MI fields and QuoteWerks columns the decisions write."""
        m3_changes: dict[str, str] = {}
        quotewerks_changes: dict[str, str] = {}
        chosen = {name: item.decided_value or "" for name, item in decided.items() if item.decision == "value"}
        to_m3 = [d.field for d in decisions if d.action == "to_m3"]
        if to_m3:
            source = party.model_copy(update={_PARTY_FIELD[n]: v for n, v in chosen.items() if n in _PARTY_FIELD})
            plan = plan_customer(party_quote(account, source), self.mapping, field_lengths=await self.lengths())
            for name in to_m3:
                for code in M3_FIELDS[name]:
                    value = clean(plan.fields.get(code))
                    if value != clean(m3_record.get(code)) and (value or clean(m3_record.get(code))):
                        m3_changes[code] = value
        to_quotewerks = [d.field for d in decisions if d.action == "to_quotewerks" or d.field in chosen]
        if to_quotewerks and contact is not None:
            m3_values: State = {**m3_now, **{n: v for n, v in chosen.items() if n in FIELD_NAMES}}
            columns = quotewerks_columns(m3_values, contact, self.countries)
            for name in to_quotewerks:
                for column, value in columns[name].items():
                    if value != clean(contact.get(column)):
                        quotewerks_changes[column] = value
        return m3_changes, quotewerks_changes

    async def _settle_items(
        self,
        number: str,
        account: str,
        decisions: list[FieldDecision],
        decided: Mapping[str, CustomerWorkItem],
        agreed: Mapping[FieldName, Agreed],
        m3_now: State,
        quotewerks_now: State,
        times: ChangeTimes,
        outcome: MergeOutcome,
    ) -> None:
        for d in decisions:
            item = decided.get(d.field)
            if item is not None:
                await snapshots.close(self.engine, item.id, d.reason if d.action != "agreed" else "the two sides agree")
            elif d.action == "agreed":
                await snapshots.close_fields(self.engine, number, [d.field], "the two sides came to agree")
            elif d.action == "review":
                values = WorkItemValues(
                    m3_value=m3_now[d.field], quotewerks_value=quotewerks_now[d.field], agreed=agreed.get(d.field),
                    m3_changed_at=times.m3, quotewerks_changed_at=times.quotewerks, reason=d.reason,
                )  # fmt: skip
                item_id, new = await snapshots.open_item(self.engine, "conflict", number, account, d.field, values)
                outcome.reviews.append(item_id)
                if new:
                    log.warning("customer %s / %s: %s is for a person (review item %d): %s", number, account,
                                d.field, item_id, d.reason)  # fmt: skip

    async def _gone_from_quotewerks(self, number: str, account: str, m3_now: State) -> MergeOutcome:
        """A linked customer no longer in QuoteWerks: never recreated silently."""
        if self.rules.quotewerks_deleted == "unlink":
            await ledger.unlink_customer(self.engine, account)
            await snapshots.forget(self.engine, number)
            log.warning("QuoteWerks customer %s (M3 %s) was deleted in QuoteWerks: unlinked", account, number)
            return MergeOutcome([])
        values = WorkItemValues(
            m3_value=m3_now["name"], quotewerks_value="", agreed=None, m3_changed_at=None, quotewerks_changed_at=None,
            reason=f"QuoteWerks customer {account} is gone from QuoteWerks; M3 customer {number} is still linked to it",
        )  # fmt: skip
        item_id, new = await snapshots.open_item(self.engine, "deleted", number, account, "", values)
        if new:
            log.warning("QuoteWerks customer %s (M3 %s) is gone from QuoteWerks: review item %d", account, number,
                        item_id)  # fmt: skip
        return MergeOutcome([], reviews=[item_id], gone=True)


_PARTY_FIELD: dict[FieldName, str] = {
    "name": "company", "city": "city", "postal_code": "postal_code", "country": "country", "phone": "phone_number",
    "email": "email",
}  # fmt: skip
