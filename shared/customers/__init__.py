"""Customers both ways: the shared rules (who owns which field, last writer wins), the canonical state of a customer
on each side, and the echo guard. Both directions use this module: order-writer (`quotewerks.customer.changed.v1` →
CRS610MI, `services/order_writer/customers.py`) and catalog-sync (`m3.customer.changed.v1` → QuoteWerks,
`services/catalog_sync/customers.py`).

- `load_sync_rules` / `sync_rules_from_data`: validate `deploy/config/customer-sync.yaml` (a bad file stops the
  service at start);
- `winner(rules, field, quotewerks_at=..., m3_at=...)`: which side's value holds for one field;
- `m3_state` (a CRS610MI record), `m3_event_state` (an `M3CustomerChanged`), `party_state` (a QuoteWerks party):
  the synced fields in one canonical form; `state_hash` of such a state;
- the echo guard: before writing, each direction stores the hash of the state it is about to produce on the other
  side (`FINGERPRINT_M3` keyed by CUNO, `FINGERPRINT_QUOTEWERKS` keyed by the QuoteWerks customer id); a change
  event whose state has that hash is the bridge's own write coming back (`is_m3_echo`, `is_quotewerks_echo`), as is
  any event with `origin == "m3bridge"`;
- `CustomerWriteOutcome`: what applying one change did, in either direction; `settle_customer_change` (with
  `CustomerChangeRejectedError`): what a service's subscriber of customer changes does with one, dead-lettering a
  change that cannot be written and logging every outcome.

A domain package: it imports nothing of the service runtime (the subscribers are declared in the services' app.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts import M3CustomerChanged, Party, Problem, QuoteWerksCustomerChanged
from shared.customers.matching import MatchingRules
from shared.platform import rules_files
from shared.platform.state import fingerprints

log = logging.getLogger(__name__)


@dataclass
class CustomerWriteOutcome:
    """What applying one customer change did on the other side, in either direction: `customer` is the record there
    (an M3 customer number, a QuoteWerks customer id), `written` the fields it got, `reason` why nothing was."""

    action: Literal["ignored", "created", "updated", "unchanged"]
    customer: str = ""
    written: dict[str, str] = field(default_factory=dict)
    reason: str = ""


class CustomerChangeRejectedError(Exception):
    """The change cannot be written for good, in either direction (the other side refused it, the mapping did, a
    conflicting link): it goes to the dead letters with `problems`, for a person."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


class DeadLetterWithProblems(Protocol):
    def __call__(self, *, problems: Sequence[Problem]) -> Awaitable[None]: ...


async def settle_customer_change(
    applying: Awaitable[CustomerWriteOutcome], *, change: str, dead_letter: DeadLetterWithProblems
) -> CustomerWriteOutcome | None:
    """Apply one customer change (`applying`), logging what it did; a rejected one is dead-lettered with its problems
    and None returned. Anything else raised (retryable) goes on, so the consumer tries the change again."""
    try:
        outcome = await applying
    except CustomerChangeRejectedError as rejected:
        log.warning("%s rejected: %s", change, rejected)
        await dead_letter(problems=rejected.problems)
        return None
    log.info("%s: %s %s %s", change, outcome.action, outcome.customer, outcome.reason or sorted(outcome.written))
    return outcome


BRIDGE_ORIGIN = "m3bridge"
# Fingerprint kinds (at most 16 characters).
FINGERPRINT_QUOTEWERKS = "customer-qw"  # key QuoteWerks customer id: what the bridge last wrote there (catalog-sync)

FieldName = Literal["name", "address", "city", "postal_code", "country", "phone", "email"]
Owner = Literal["m3", "quotewerks", "newest", "review"]
Side = Literal["m3", "quotewerks"]
FIELD_NAMES: tuple[FieldName, ...] = ("name", "address", "city", "postal_code", "country", "phone", "email")
# The CRS610MI fields of each synced field.
M3_FIELDS: dict[FieldName, tuple[str, ...]] = {
    "name": ("CUNM",),
    "address": ("CUA1", "CUA2", "CUA3", "CUA4"),
    "city": ("TOWN",),
    "postal_code": ("PONO",),
    "country": ("CSCD",),
    "phone": ("PHNO",),
    "email": ("MAIL",),
}
FIELD_OF_CODE = {code: name for name, codes in M3_FIELDS.items() for code in codes}


class CustomerSyncRulesError(ValueError):
    """customer-sync.yaml is not valid; the message names each entry at fault."""


class FieldOwners(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Owner
    address: Owner
    city: Owner
    postal_code: Owner
    country: Owner
    phone: Owner
    email: Owner


class CustomerSyncRules(BaseModel):
    """Who owns which customer field; read by both directions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    fields: FieldOwners
    clock_skew_s: float = Field(120.0, ge=0, le=86_400)
    quotewerks_deleted: Literal["review", "unlink"] = "review"
    m3_blocked: Literal["review", "ignore"] = "review"
    m3_blocked_statuses: tuple[str, ...] = ("90",)
    create_in_m3: bool = True
    matching: MatchingRules = MatchingRules()

    def owner(self, name: FieldName) -> Owner:
        owner: Owner = getattr(self.fields, name)
        return owner


def sync_rules_from_data(data: object, *, origin: str = "<customer-sync>") -> CustomerSyncRules:
    return rules_files.validated(
        CustomerSyncRules, data, error=CustomerSyncRulesError, what="customer sync rules", origin=origin
    )


def load_sync_rules(path: str | Path) -> CustomerSyncRules:
    """Read and validate customer-sync.yaml; call at start-up."""
    return rules_files.load(CustomerSyncRules, path, error=CustomerSyncRulesError, what="customer sync rules")


# --- canonical state and the echo guard -------------------------------------------------------------------

State = dict[FieldName, str]


def clean(value: object) -> str:
    """Text as compared on both sides: trimmed, inner runs of blanks folded to one."""
    return " ".join(str(value or "").split())


def _lines(values: list[object]) -> str:
    return "\n".join(text for text in (clean(v) for v in values) if text)


def m3_state(record: Mapping[str, object]) -> State:
    """The synced fields of a CRS610MI record (GetBasicData, or what a write leaves)."""
    return {
        "name": clean(record.get("CUNM")),
        "address": _lines([record.get(code) for code in M3_FIELDS["address"]]),
        "city": clean(record.get("TOWN")),
        "postal_code": clean(record.get("PONO")),
        "country": clean(record.get("CSCD")),
        "phone": clean(record.get("PHNO")),
        "email": clean(record.get("MAIL")),
    }


def m3_event_state(event: M3CustomerChanged) -> State:
    """The synced fields of an `m3.customer.changed.v1` event, in the form `m3_state` gives."""
    return {
        "name": clean(event.name),
        "address": _lines(list(event.address_lines)),
        "city": clean(event.town),
        "postal_code": clean(event.postal_code),
        "country": clean(event.country),
        "phone": clean(event.phone),
        "email": clean(event.email),
    }


def party_state(party: Party) -> State:
    """The synced fields of a QuoteWerks customer (as QuoteWerks has them, before any mapping)."""
    return {
        "name": clean(party.company),
        "address": _lines([party.address1, party.address2, party.address3]),
        "city": clean(party.city),
        "postal_code": clean(party.postal_code),
        "country": clean(party.country),
        "phone": clean(party.phone_number),
        "email": clean(party.email),
    }


def state_hash(state: Mapping[FieldName, str]) -> str:
    canonical = json.dumps({name: state.get(name, "") for name in FIELD_NAMES}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def is_quotewerks_echo(engine: AsyncEngine, event: QuoteWerksCustomerChanged) -> bool:
    """True when the QuoteWerks change is the bridge's own write (catalog-sync records those under
    `FINGERPRINT_QUOTEWERKS`, keyed by the QuoteWerks customer id, before writing)."""
    if event.origin == BRIDGE_ORIGIN:
        return True
    written = await fingerprints.get(engine, FINGERPRINT_QUOTEWERKS, event.customer_id)
    return written is not None and written == state_hash(party_state(event.customer))
