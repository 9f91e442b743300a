"""The customer merge: one decision per field, the same in both directions.

Every linked customer has a last-synced snapshot: per field, the value each side held when the two last agreed
(`Agreed`). A merge compares each side's current value with its own side of the snapshot (a three-way compare), so
the two systems' different spellings of one value (M3's country code "SE", QuoteWerks' "Sweden"; four address lines
against three) never look like edits:

- neither side changed the field → nothing to do;
- the two sides hold the same value already (`equivalent`) → agreed, whatever happened before;
- one side changed it → it flows to the other side, unless the other side owns the field, in which case the owner's
  value is put back on the side that changed it (an owned field reads the same in both systems);
- both sides changed it → an owned field takes the owner's value on both sides; `newest` takes the later change only
  when both times are real and further apart than the configured clock skew; otherwise, and always for `review`,
  the field waits for a person in the review queue.

A value is never cleared on the other side by an empty one: that too is for a person. A field with an open review
item is left alone until the item is settled (or the two sides agree on their own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.customers import FIELD_NAMES, CustomerSyncRules, FieldName, Side, State

Action = Literal["in_step", "agreed", "to_m3", "to_quotewerks", "review", "waiting"]


@dataclass(frozen=True)
class Agreed:
    """One field as the two sides held it when they last agreed, each in its own spelling."""

    m3: str
    quotewerks: str


Snapshot = Mapping[FieldName, Agreed]


@dataclass(frozen=True)
class FieldDecision:
    """What the merge does with one field: `in_step` nothing changed; `agreed` both hold the same value now;
    `to_m3` / `to_quotewerks` write that side; `review` a person decides; `waiting` an open review item holds it."""

    field: FieldName
    action: Action
    reason: str
    m3_changed: bool = False
    quotewerks_changed: bool = False

    @property
    def writes(self) -> Side | None:
        if self.action == "to_m3":
            return "m3"
        if self.action == "to_quotewerks":
            return "quotewerks"
        return None


@dataclass(frozen=True)
class ChangeTimes:
    """When each side's current values were made, where that is known for real (an M3 BOD's CreationDateTime, a
    QuoteWerks LastModified read in its time zone). None: not known (M3's LMDT is a date, not a time)."""

    m3: datetime | None = None
    quotewerks: datetime | None = None


def _owner_value(owner: Side) -> Action:
    return "to_quotewerks" if owner == "m3" else "to_m3"


def newest_side(times: ChangeTimes, skew: timedelta) -> Side | None:
    """The side whose change is later by more than `skew`; None when a time is missing or they are too close."""
    if times.m3 is None or times.quotewerks is None:
        return None
    if times.m3 - times.quotewerks > skew:
        return "m3"
    if times.quotewerks - times.m3 > skew:
        return "quotewerks"
    return None


def decide(
    rules: CustomerSyncRules,
    name: FieldName,
    *,
    agreed: Agreed | None,
    m3: str,
    quotewerks: str,
    equivalent: bool,
    times: ChangeTimes,
    open_review: bool = False,
) -> FieldDecision:
    """The decision for one field. `agreed` None: the two sides never agreed on it (a link made before snapshots,
    or by a person), so each side counts as changed. `equivalent`: the two current values mean the same."""
    m3_changed = agreed is None or m3 != agreed.m3
    quotewerks_changed = agreed is None or quotewerks != agreed.quotewerks
    changed = {"m3_changed": m3_changed, "quotewerks_changed": quotewerks_changed}
    if equivalent:
        action: Action = "agreed" if (m3_changed or quotewerks_changed or open_review) else "in_step"
        return FieldDecision(name, action, "both sides hold the same value", **changed)
    if open_review:
        return FieldDecision(name, "waiting", "an open review item holds this field", **changed)
    if not m3_changed and not quotewerks_changed:
        # The snapshot itself differs: the two were left different on purpose (a person kept both) — leave them.
        return FieldDecision(name, "in_step", "unchanged on both sides since they were last settled", **changed)
    owner = rules.owner(name)
    if m3_changed != quotewerks_changed:
        changed_side: Side = "m3" if m3_changed else "quotewerks"
        other: Side = "quotewerks" if m3_changed else "m3"
        value = m3 if m3_changed else quotewerks
        if owner == other:
            return FieldDecision(name, _owner_value(owner), f"changed in {_label(changed_side)}, which does not own "
                                 f"it: {_label(owner)}'s value put back", **changed)  # fmt: skip
        if not value:
            return FieldDecision(name, "review", f"cleared in {_label(changed_side)}: clear it in {_label(other)} "
                                 "too?", **changed)  # fmt: skip
        action = "to_quotewerks" if m3_changed else "to_m3"
        return FieldDecision(name, action, f"changed in {_label(changed_side)} only", **changed)
    # Changed on both sides since they last agreed.
    if owner in ("m3", "quotewerks"):
        return FieldDecision(name, _owner_value(owner), f"changed on both sides: {_label(owner)} owns it", **changed)
    if owner == "review":
        return FieldDecision(name, "review", "changed on both sides: this field is settled by a person", **changed)
    later = newest_side(times, timedelta(seconds=rules.clock_skew_s))
    if later is None:
        why = (
            "a change time is not known"
            if times.m3 is None or times.quotewerks is None
            else f"the changes are within {rules.clock_skew_s:g} s of each other"
        )
        return FieldDecision(name, "review", f"changed on both sides and {why}", **changed)
    if not (m3 if later == "m3" else quotewerks):
        return FieldDecision(name, "review", f"cleared in {_label(later)} after an edit in the other: clear it?",
                             **changed)  # fmt: skip
    return FieldDecision(name, _owner_value(later), f"changed on both sides: {_label(later)}'s change is newer",
                         **changed)  # fmt: skip


def merge(
    rules: CustomerSyncRules,
    snapshot: Snapshot | None,
    m3: State,
    quotewerks: State,
    *,
    times: ChangeTimes,
    equivalent: Callable[[FieldName, str, str], bool],
    open_reviews: frozenset[FieldName] = frozenset(),
) -> list[FieldDecision]:
    """One decision per synced field, in `FIELD_NAMES` order."""
    return [
        decide(
            rules,
            name,
            agreed=(snapshot or {}).get(name),
            m3=m3.get(name, ""),
            quotewerks=quotewerks.get(name, ""),
            equivalent=equivalent(name, m3.get(name, ""), quotewerks.get(name, "")),
            times=times,
            open_review=name in open_reviews,
        )
        for name in FIELD_NAMES
    ]


def _label(side: str) -> str:
    return {"m3": "M3", "quotewerks": "QuoteWerks"}.get(side, side)
