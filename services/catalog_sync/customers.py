"""Customers in catalog-sync: M3 changes (`m3.customer.changed.v1`) and QuoteWerks changes
(`quotewerks.customer.changed.v1`) of linked customers are merged both ways (`customer_merger.py`).

Which QuoteWerks customer an M3 customer is: the customer link (either direction made it), else the QuoteWerks
customer whose CMAccountNo is the CUNO, else exactly one not yet linked customer with the same e-mail, else with the
same company name; none → a new QuoteWerks customer with CMAccountNo = CUNO. A QuoteWerks customer nobody linked
yet is order-writer's to find or create in M3.

A change event that shows its side exactly as the two sides last agreed (the bridge's own write coming back, or a
replay) is dropped without reading either system.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from services.catalog_sync.customer_facts import (
    CustomerMatchPendingError,
    CustomerPushRejectedError,
    CustomerReconcileReport,
    contact_facts,
    m3_changed_from_record,
    m3_facts,
    reconcile_differences,
    reconcile_finished,
)
from services.catalog_sync.customer_merge import Agreed
from services.catalog_sync.customer_merger import CustomerMerger
from services.catalog_sync.customer_sides import WRITABLE_COLUMNS, Contacts, quotewerks_columns
from shared.contracts import M3CustomerChanged, QuoteWerksCustomerChanged
from shared.customers import (
    BRIDGE_ORIGIN,
    FIELD_NAMES,
    FINGERPRINT_QUOTEWERKS,
    CustomerChangeRejectedError,
    CustomerSyncRules,
    CustomerWriteOutcome,
    State,
    clean,
    m3_event_state,
    party_state,
    state_hash,
)
from shared.customers.matching import Matcher, MatchResult
from shared.m3 import M3Error
from shared.mapping import LookupTable
from shared.platform.state import customer_snapshots as snapshots, fingerprints, ledger
from shared.platform.state.customer_snapshots import WorkItemValues
from shared.platform.state.models import CustomerWorkItem
from shared.quotewerks import QuoteWerksError, party_from_contact

log = logging.getLogger(__name__)

customer_changes = Counter(
    "m3bridge_catalog_customer_changes_total",
    "Customer changes (from M3 or QuoteWerks) merged by catalog-sync, by outcome.",
    ["outcome"],
)


class CustomerMaster:
    """Keeps linked customers in step both ways: `apply` takes `m3.customer.changed.v1`, `apply_quotewerks`
    `quotewerks.customer.changed.v1`, `settle_decisions` applies what a person decided on a review item."""

    def __init__(
        self,
        contacts: Contacts | None,
        engine: AsyncEngine,
        rules: CustomerSyncRules,
        countries: LookupTable | None,
        merger: CustomerMerger,
    ) -> None:
        self.contacts = contacts
        self.engine = engine
        self.rules = rules
        self.countries = countries
        self.merger = merger
        self.last_reconcile: CustomerReconcileReport | None = None
        self._unmerged_said: set[str] = set()
        self.counts = {"created": 0, "updated": 0, "unchanged": 0, "ignored": 0, "rejected": 0}

    async def apply(self, event: M3CustomerChanged) -> CustomerWriteOutcome:
        """Raises CustomerPushRejectedError (dead-letter it) or a retryable error (QuoteWerksError, OSError:
        redeliver). Writes to QuoteWerks are conditional on the record as read, so an edit made there meanwhile is
        never overwritten: the merge reads it again and decides again."""
        return await self._counted(self._apply(event), f"M3 customer {event.customer_number}")

    async def apply_quotewerks(self, event: QuoteWerksCustomerChanged) -> CustomerWriteOutcome:
        """A QuoteWerks change of a linked customer, merged both ways. One nobody linked yet is order-writer's."""
        return await self._counted(self._apply_quotewerks(event), f"QuoteWerks customer {event.customer_id}")

    async def _counted(self, applying: Awaitable[CustomerWriteOutcome], what: str) -> CustomerWriteOutcome:
        try:
            outcome = await applying
        except QuoteWerksError as exc:
            if exc.retryable:
                raise
            self._count("rejected")
            raise CustomerPushRejectedError(f"{what}: {exc}") from exc
        except M3Error as exc:
            if exc.retryable:
                raise
            self._count("rejected")
            raise CustomerPushRejectedError(f"{what}: {exc}") from exc
        except CustomerChangeRejectedError:
            self._count("rejected")
            raise
        self._count(outcome.action)
        return outcome

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        customer_changes.labels(outcome).inc()

    async def _apply(self, event: M3CustomerChanged) -> CustomerWriteOutcome:
        number = event.customer_number
        if event.origin == BRIDGE_ORIGIN:
            return CustomerWriteOutcome("ignored", reason=f"M3 customer {number}: the bridge's own write coming back")
        if event.action == "delete":
            return CustomerWriteOutcome(
                "ignored", reason=f"M3 customer {number} deleted: the QuoteWerks customer is kept"
            )
        link = await ledger.customer_link_for_m3(self.engine, number)
        if link is not None and not ledger.is_quotewerks_account(link.quotewerks_customer_id):
            return CustomerWriteOutcome(
                "ignored", number, reason="the customer of a quote without a QuoteWerks account: no contact to update"
            )
        if link is not None:
            await self._status(event, link.quotewerks_customer_id)
            if await self._as_agreed(number, lambda a: a.m3, m3_event_state(event)):
                return CustomerWriteOutcome("ignored", number, reason="M3 shows what the two sides last agreed")
            outcome = await self.merger.merge(number, link.quotewerks_customer_id, m3_event=event)
            return outcome.as_write_outcome(link.quotewerks_customer_id)
        if self.contacts is None:
            return CustomerWriteOutcome("ignored", number, reason="QuoteWerks' contact manager is not written here")
        found = await self.contacts.find_customer(number)
        account = number if found is not None else ""
        try:
            match = await self._match(event) if found is None else None
        except CustomerMatchPendingError as pending:
            return CustomerWriteOutcome("unchanged", number, reason=str(pending))
        if match is not None:
            found, account = match, str(match.get("CMAccountNo") or "")
        if found is None:
            return await self._create(event, number)
        await self._claim(account, number, found)
        outcome = await self.merger.merge(number, account, m3_event=event)
        return outcome.as_write_outcome(account)

    async def _status(self, event: M3CustomerChanged, account: str) -> None:
        """A linked customer blocked in M3 is reflected as a review item (the QuoteWerks customer is never deleted);
        unblocked, the item closes."""
        if self.rules.m3_blocked == "ignore" or not event.status:
            return
        number = event.customer_number
        if event.status in self.rules.m3_blocked_statuses:
            values = WorkItemValues(
                m3_value=f"status {event.status}", quotewerks_value="", agreed=None, m3_changed_at=event.changed_at,
                quotewerks_changed_at=None,
                reason=f"M3 customer {number} is blocked (status {event.status}); QuoteWerks customer {account} is "
                "kept: stop quoting it there if it should not be, then --take keep",
            )  # fmt: skip
            item_id, new = await snapshots.open_item(self.engine, "blocked", number, account, "", values)
            if new:
                log.warning("M3 customer %s is blocked (status %s): review item %d", number, event.status, item_id)
        else:
            await snapshots.close_fields(self.engine, number, [""], f"status {event.status} in M3", kind="blocked")

    async def _apply_quotewerks(self, event: QuoteWerksCustomerChanged) -> CustomerWriteOutcome:
        account = event.customer_id
        if event.origin == BRIDGE_ORIGIN:
            return CustomerWriteOutcome("ignored", account, reason="the bridge's own write coming back")
        link = await ledger.customer_link(self.engine, account)
        if link is None:
            return CustomerWriteOutcome("ignored", account, reason="not linked yet: order-writer finds or creates it")
        number = link.m3_customer_number
        if await self._as_agreed(number, lambda a: a.quotewerks, party_state(event.customer)):
            return CustomerWriteOutcome("ignored", number, reason="QuoteWerks shows what the two sides last agreed")
        outcome = await self.merger.merge(number, account, quotewerks_event=event)
        return outcome.as_write_outcome(number)

    async def _as_agreed(self, number: str, side: Callable[[Agreed], str], state: State) -> bool:
        """True when a change event shows its side exactly as last agreed, with no merge interrupted: nothing to do."""
        stored = await snapshots.snapshot(self.engine, number)
        if stored is None or stored.pending or set(stored.agreed) != set(FIELD_NAMES):
            return False
        return all(side(stored.agreed[name]) == state[name] for name in FIELD_NAMES)

    async def _claim(self, account: str, number: str, record: Mapping[str, Any]) -> None:
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

    async def _match(self, event: M3CustomerChanged) -> dict[str, Any] | None:
        """The one QuoteWerks customer not linked yet that the matching keys find; several are a review item for a
        person (CustomerMatchPendingError), never a guess."""
        assert self.contacts is not None
        records = {str(r["CMAccountNo"]): r for r in await self.contacts.customers() if r.get("CMAccountNo")}
        linked = {account for _, account in await ledger.customer_links(self.engine)}
        vat_column = self.rules.matching.quotewerks_vat_column
        pool = [contact_facts(r, self.countries, vat_column) for a, r in records.items() if a not in linked]
        result = Matcher(pool, self.rules.matching).match(m3_facts(event))
        if result.status == "one":
            return records[result.matches[0]]
        if result.status == "several":
            raise CustomerMatchPendingError(event, result, await self._match_item(event, result))
        return None

    async def _match_item(self, event: M3CustomerChanged, result: MatchResult) -> int:
        candidates = ", ".join(f"{account} ({result.scores[account]:g})" for account in result.matches[:10])
        values = WorkItemValues(
            m3_value=f"{event.customer_number} {event.name}", quotewerks_value=candidates, agreed=None,
            m3_changed_at=event.changed_at, quotewerks_changed_at=None,
            reason=f"{len(result.matches)} QuoteWerks customers match M3 customer {event.customer_number} by "
            f"{result.key}: link one (--take link --value ACCOUNT) or create a new one (--take create)",
        )  # fmt: skip
        item_id, new = await snapshots.open_item(self.engine, "match", event.customer_number, "", "", values)
        if new:
            log.warning("M3 customer %s matches %d QuoteWerks customers (%s): review item %d", event.customer_number,
                        len(result.matches), candidates, item_id)  # fmt: skip
        return item_id

    async def _create(self, event: M3CustomerChanged, account: str) -> CustomerWriteOutcome:
        """A new QuoteWerks customer for the M3 customer, linked, with the snapshot of what both now hold."""
        assert self.contacts is not None
        number = event.customer_number
        if not clean(event.name):
            raise CustomerPushRejectedError(f"M3 customer {number} has no name: QuoteWerks needs one")
        m3 = m3_event_state(event)
        record = dict.fromkeys(WRITABLE_COLUMNS, "")
        for columns in quotewerks_columns(m3, {}, self.countries).values():
            record.update(columns)
        # The fingerprint goes first: QuoteWerks' change event for this write may reach order-writer before we return.
        party = party_from_contact({**record, "CMAccountNo": account})
        await fingerprints.put(self.engine, FINGERPRINT_QUOTEWERKS, account, state_hash(party_state(party)))
        await self.contacts.put_customer(account, record, new=True)
        await ledger.link_customer(
            self.engine, account, number, email=record["Email"], company=record["Company"], by=BRIDGE_ORIGIN
        )
        quotewerks = party_state(party)
        agreed = {name: Agreed(m3[name], quotewerks[name]) for name in FIELD_NAMES}
        stored = await snapshots.snapshot(self.engine, number)
        await snapshots.save(self.engine, number, account, read_version=stored.version if stored else None,
                             agreed=agreed)  # fmt: skip
        await snapshots.note_m3_event(self.engine, number, state_hash(m3), event.changed_at)
        log.info("M3 customer %s created in QuoteWerks as %s", number, account)
        return CustomerWriteOutcome("created", account, written={k: v for k, v in record.items() if v})

    async def settle_decisions(self) -> int:
        """Apply what people decided on review items, and take up links no merge has seen yet (made by
        order-writer); returns how many customers it merged."""
        settled = 0
        for item in await snapshots.items(self.engine, status=(snapshots.DECIDED,)):
            try:
                if item.kind == "deleted":
                    await self._settle_deleted(item)
                elif item.kind == "match":
                    await self._settle_match(item)
                elif item.kind == "blocked":
                    await snapshots.close(self.engine, item.id, f"kept in QuoteWerks by {item.decided_by}")
                else:
                    await self.merger.merge(item.m3_customer_number, item.quotewerks_customer_id)
                settled += 1
            except (QuoteWerksError, M3Error, CustomerChangeRejectedError, OSError) as failed:
                log.warning("customer review item %d not applied yet: %s", item.id, failed)
        if self.contacts is not None:
            for number, account in await snapshots.unmerged_links(self.engine):
                try:
                    await self.merger.merge(number, account)
                    settled += 1
                except (QuoteWerksError, M3Error, CustomerChangeRejectedError, OSError) as failed:
                    # Tried again every round: said once per process, not every few seconds.
                    level = logging.DEBUG if number in self._unmerged_said else logging.WARNING
                    self._unmerged_said.add(number)
                    log.log(level, "new customer link %s / %s not merged yet: %s", number, account, failed)
        return settled

    async def reconcile(self, *, dry_run: bool = False) -> CustomerReconcileReport:
        """Every link merged again from what both systems hold now: differences the rules decide are repaired (not
        with `dry_run`), the others wait in the review queue; the report says which."""
        report = CustomerReconcileReport(started_at=datetime.now(UTC), dry_run=dry_run)
        for number, account in await ledger.customer_links(self.engine):
            report.links += 1
            try:
                outcome = await self.merger.merge(number, account, dry_run=dry_run)
            except (QuoteWerksError, M3Error, CustomerChangeRejectedError, OSError) as failed:
                report.failed.append(
                    {"m3_customer": number, "quotewerks_customer": account, "error": str(failed)[:500]}
                )
                continue
            report.add(number, account, outcome)
        report.finished_at = datetime.now(UTC)
        reconcile_differences.labels("repaired").set(sum(report.repaired.values()))
        reconcile_differences.labels("waiting").set(report.waiting)
        reconcile_differences.labels("left").set(report.left)
        if not dry_run:
            reconcile_finished.set(report.finished_at.timestamp())
        self.last_reconcile = report
        log.info("customer reconciliation%s: %d links, %d differing fields: %d %s, %d waiting for a person, %d left, "
                 "%d gone from QuoteWerks, %d failed", " (dry run)" if dry_run else "", report.links,
                 report.differing_fields, sum(report.repaired.values()), "to repair" if dry_run else "repaired",
                 report.waiting, report.left, report.gone, len(report.failed))  # fmt: skip
        return report

    async def _settle_match(self, item: CustomerWorkItem) -> None:
        """A person chose the QuoteWerks customer an M3 customer is (`link`), or a new one (`create`)."""
        if self.contacts is None:
            raise CustomerPushRejectedError("QuoteWerks' contact manager is not written here")
        number = item.m3_customer_number
        event = m3_changed_from_record(number, await self.merger.read_m3(number))
        if item.decision == "create":
            account = number
            if await self.contacts.find_customer(account) is not None:
                raise CustomerPushRejectedError(f"QuoteWerks already has a customer {account}: link it instead")
            await self._create(event, account)
        else:
            account = item.decided_value or ""
            record = await self.contacts.find_customer(account)
            if record is None:
                await snapshots.close(self.engine, item.id, f"not applied: QuoteWerks has no customer {account}")
                return
            await self._claim(account, number, record)
            await self.merger.merge(number, account, m3_event=event)
        await snapshots.close(self.engine, item.id, f"{item.decision} {account} by {item.decided_by}")

    async def _settle_deleted(self, item: CustomerWorkItem) -> None:
        number, account = item.m3_customer_number, item.quotewerks_customer_id
        if item.decision == "recreate":
            if self.contacts is None:
                raise CustomerPushRejectedError("QuoteWerks' contact manager is not written here")
            await snapshots.forget(self.engine, number)
            record = await self.merger.read_m3(number)
            event = m3_changed_from_record(number, record)
            await self._create(event, account)
            await snapshots.close(self.engine, item.id, f"recreated in QuoteWerks as {account} by {item.decided_by}")
        else:
            await ledger.unlink_customer(self.engine, account)
            await snapshots.forget(self.engine, number)
            await snapshots.close(self.engine, item.id, f"unlinked by {item.decided_by}")


review_items = Gauge("m3bridge_customer_review_items", "Customer review items waiting for a person, by kind.", ["kind"])


async def settle_decisions_forever(master: CustomerMaster, *, interval_s: float) -> None:
    """Apply decisions on review items as people take them, and keep the open-items gauge current."""
    while True:
        try:
            await master.settle_decisions()
            counts = await snapshots.count_open(master.engine)
            for kind in ("conflict", "deleted"):
                review_items.labels(kind).set(counts.get(kind, 0))
        except Exception as failed:  # the state store away for a moment: the next round tries again
            log.warning("customer review items not checked: %s", failed)
        await asyncio.sleep(interval_s)


async def reconcile_forever(master: CustomerMaster, *, interval_s: float) -> None:
    """A reconciliation of every customer link every `interval_s`; a failed one is logged and the schedule goes on."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await master.reconcile()
        except Exception:
            log.exception("scheduled customer reconciliation failed")
