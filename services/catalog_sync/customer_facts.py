"""What catalog-sync's customer master reports and reads: the reconciliation report and its metrics, a contact's and
an M3 customer's matching facts, an M3 record as the change event it would have sent, and the errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from services.catalog_sync.customer_merger import MergeOutcome
from shared.contracts import M3CustomerChanged, Problem
from shared.customers import CustomerChangeRejectedError, clean
from shared.customers.matching import CustomerFacts, MatchResult
from shared.mapping import LookupTable

reconcile_differences = Gauge(
    "m3bridge_customer_reconcile_differences",
    "Customer fields the last reconciliation found different in M3 and QuoteWerks, by what became of them "
    "(repaired by the rules, waiting for a person, left: cannot be written here).",
    ["state"],
)
reconcile_finished = Gauge(
    "m3bridge_customer_reconcile_finished_timestamp_seconds",
    "When the last customer reconciliation (not a dry run) ended.",
)
SHOWN_DIFFERENCES = 200


@dataclass
class CustomerReconcileReport:
    """What one reconciliation of every customer link found and did."""

    started_at: datetime
    dry_run: bool
    finished_at: datetime | None = None
    links: int = 0
    in_step: int = 0
    differing_fields: int = 0
    repaired: dict[str, int] = field(default_factory=dict)
    waiting: int = 0
    left: int = 0
    gone: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    differences: list[dict[str, str]] = field(default_factory=list)

    def add(self, number: str, account: str, outcome: MergeOutcome) -> None:
        if outcome.gone:
            self.gone += 1
            self._show(number, account, "", "gone", "the QuoteWerks customer is gone (a review item)")
            return
        if not outcome.differing:
            self.in_step += 1
        decisions = {d.field: d for d in outcome.decisions}
        for name in outcome.differing:
            self.differing_fields += 1
            decision = decisions.get(name)
            action = decision.action if decision else "left"
            written = decision is not None and decision.writes is not None and name not in outcome.unwritable
            if written:
                self.repaired[name] = self.repaired.get(name, 0) + 1
            elif action in ("review", "waiting"):
                self.waiting += 1
            else:
                self.left += 1
                action = "left"
            self._show(number, account, name, action, decision.reason if decision else "")

    def _show(self, number: str, account: str, name: str, action: str, reason: str) -> None:
        if len(self.differences) < SHOWN_DIFFERENCES:
            self.differences.append({"m3_customer": number, "quotewerks_customer": account, "field": name,
                                     "action": action, "reason": reason})  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return data


class CustomerMatchPendingError(Exception):
    """Several QuoteWerks customers match an M3 customer: a review item waits for a person."""

    def __init__(self, event: M3CustomerChanged, result: MatchResult, item_id: int) -> None:
        super().__init__(
            f"waiting for a person: {len(result.matches)} QuoteWerks customers match by {result.key} (review item "
            f"{item_id})"
        )


def contact_facts(record: Mapping[str, Any], countries: LookupTable | None, vat_column: str = "") -> CustomerFacts:
    """A QuoteWerks contact as matching sees it (its country text as the code the lookup gives)."""
    country = clean(record.get("Country"))
    code = (countries.resolve(country) if countries is not None and country else None) or country
    return CustomerFacts(
        id=str(record.get("CMAccountNo") or ""),
        name=clean(record.get("Company")),
        email=clean(record.get("Email")),
        postal_code=clean(record.get("PostalCode")),
        country=code,
        vat=clean(record.get(vat_column)) if vat_column else "",
    )


def m3_facts(event: M3CustomerChanged, vat: str = "") -> CustomerFacts:
    return CustomerFacts(
        id=event.customer_number, name=event.name, email=event.email, postal_code=event.postal_code,
        country=event.country, vat=vat,
    )  # fmt: skip


def m3_changed_from_record(number: str, record: Mapping[str, Any]) -> M3CustomerChanged:
    """A CRS610MI record as the change event M3 would send for it (to create its QuoteWerks customer)."""
    return M3CustomerChanged(
        customer_number=number,
        action="change",
        name=clean(record.get("CUNM")),
        address_lines=[clean(record.get(code)) for code in ("CUA1", "CUA2", "CUA3", "CUA4")],
        town=clean(record.get("TOWN")),
        postal_code=clean(record.get("PONO")),
        country=clean(record.get("CSCD")),
        phone=clean(record.get("PHNO")),
        email=clean(record.get("MAIL")),
        status=clean(record.get("STAT")),
        changed_at=datetime.now(UTC),
    )


class CustomerPushRejectedError(CustomerChangeRejectedError):
    """The change cannot be applied without a person (several QuoteWerks customers match, QuoteWerks refused the
    record, …)."""

    def __init__(self, message: str) -> None:
        super().__init__([Problem(error_class="business", message=message[:2000])])
