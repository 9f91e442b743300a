"""The customer merge's decisions (services/catalog_sync/customer_merge.py): the three-way compare against the
last-synced snapshot, owners, `newest` only with real times beyond the clock skew, and review for everything else."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.catalog_sync.customer_merge import Agreed, ChangeTimes, decide, merge, newest_side
from shared.customers import FIELD_NAMES, CustomerSyncRules, FieldName, State, sync_rules_from_data

pytestmark = pytest.mark.unit

RAW: dict[str, Any] = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "deploy/config/customer-sync.yaml").read_text(encoding="utf-8")
)
NINE = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
TEN = NINE + timedelta(hours=1)
NO_TIMES = ChangeTimes()


def rules(**owners: str) -> CustomerSyncRules:
    data = copy.deepcopy(RAW)
    data["fields"].update(owners)
    return sync_rules_from_data(data)


def plain(_name: FieldName, m3: str, quotewerks: str) -> bool:
    return m3.casefold() == quotewerks.casefold()


def field(
    which: FieldName,
    /,
    *,
    agreed: tuple[str, str] | None,
    m3: str,
    quotewerks: str,
    times: ChangeTimes = NO_TIMES,
    open_review: bool = False,
    **owners: str,
) -> tuple[str, str]:
    decision = decide(
        rules(**owners),
        which,
        agreed=Agreed(*agreed) if agreed else None,
        m3=m3,
        quotewerks=quotewerks,
        equivalent=plain(which, m3, quotewerks),
        times=times,
        open_review=open_review,
    )
    return decision.action, decision.reason


# --- one side changed --------------------------------------------------------------------------------------------


def test_a_field_changed_on_one_side_flows_to_the_other_whichever_side_and_whatever_the_times() -> None:
    old = ("a@x.example", "a@x.example")
    assert field("email", agreed=old, m3="b@x.example", quotewerks="a@x.example")[0] == "to_quotewerks"
    assert field("email", agreed=old, m3="a@x.example", quotewerks="b@x.example")[0] == "to_m3"
    # The same-day tie of M3's LMDT plays no part: no time is needed when only one side changed.
    late_m3 = ChangeTimes(m3=TEN, quotewerks=NINE)
    assert field("email", agreed=old, m3="a@x.example", quotewerks="b@x.example", times=late_m3)[0] == "to_m3"


def test_an_owned_field_edited_on_the_other_side_gets_the_owners_value_back() -> None:
    action, reason = field("name", agreed=("Acme", "Acme"), m3="Acme", quotewerks="Acme Renamed", name="m3")
    assert action == "to_quotewerks"
    assert "put back" in reason
    assert field("phone", agreed=("1", "1"), m3="2", quotewerks="1", phone="quotewerks")[0] == "to_m3"
    # The owner's own edit flows as usual.
    assert field("name", agreed=("Acme", "Acme"), m3="Acme AB", quotewerks="Acme", name="m3")[0] == "to_quotewerks"


def test_a_value_cleared_on_one_side_is_for_a_person() -> None:
    action, reason = field("phone", agreed=("1", "1"), m3="1", quotewerks="", phone="newest")
    assert action == "review"
    assert "cleared in QuoteWerks" in reason


# --- both sides changed ------------------------------------------------------------------------------------------


def test_both_sides_changed_an_owned_field_the_owner_wins_on_both_sides() -> None:
    changed = {"agreed": ("Acme", "Acme"), "m3": "Acme M3", "quotewerks": "Acme QW"}
    # The other side's edit is later; the owner still wins.
    assert field("name", **changed, times=ChangeTimes(m3=NINE, quotewerks=TEN), name="m3")[0] == "to_quotewerks"  # type: ignore[arg-type]
    assert field("name", **changed, times=ChangeTimes(m3=TEN, quotewerks=NINE), name="quotewerks")[0] == "to_m3"  # type: ignore[arg-type]


def test_newest_takes_the_later_real_time_in_both_orders_on_the_same_day() -> None:
    changed = {"agreed": ("a@x.example", "a@x.example"), "m3": "m3@x.example", "quotewerks": "qw@x.example"}
    assert field("email", **changed, times=ChangeTimes(m3=NINE, quotewerks=TEN))[0] == "to_m3"  # type: ignore[arg-type]
    assert field("email", **changed, times=ChangeTimes(m3=TEN, quotewerks=NINE))[0] == "to_quotewerks"  # type: ignore[arg-type]


def test_newest_without_a_real_time_or_within_the_clock_skew_goes_to_review() -> None:
    changed = {"agreed": ("a@x.example", "a@x.example"), "m3": "m3@x.example", "quotewerks": "qw@x.example"}
    action, reason = field("email", **changed, times=ChangeTimes(m3=None, quotewerks=TEN))  # type: ignore[arg-type]
    assert (action, "not known" in reason) == ("review", True)
    close = ChangeTimes(m3=NINE, quotewerks=NINE + timedelta(seconds=90))  # skew 120 s in the shipped rules
    action, reason = field("email", **changed, times=close)  # type: ignore[arg-type]
    assert (action, "within 120 s" in reason) == ("review", True)


def test_a_review_field_always_goes_to_a_person_when_both_changed() -> None:
    changed = {"agreed": ("1", "1"), "m3": "2", "quotewerks": "3"}
    assert field("phone", **changed, times=ChangeTimes(NINE, TEN), phone="review")[0] == "review"  # type: ignore[arg-type]
    # One side only still flows: review is about conflicts.
    assert field("phone", agreed=("1", "1"), m3="1", quotewerks="3", phone="review")[0] == "to_m3"


def test_the_clock_skew_between_the_systems_is_a_setting() -> None:
    assert newest_side(ChangeTimes(NINE, NINE + timedelta(seconds=30)), timedelta(seconds=10)) == "quotewerks"
    assert newest_side(ChangeTimes(NINE, NINE + timedelta(seconds=30)), timedelta(seconds=60)) is None
    assert newest_side(ChangeTimes(NINE + timedelta(seconds=61), NINE), timedelta(seconds=60)) == "m3"
    strict = sync_rules_from_data({**RAW, "clock_skew_s": 0})
    decision = decide(strict, "email", agreed=Agreed("a", "a"), m3="b", quotewerks="c", equivalent=False,
                      times=ChangeTimes(NINE, NINE + timedelta(seconds=1)))  # fmt: skip
    assert decision.action == "to_m3"


# --- agreement, echoes, open items -------------------------------------------------------------------------------


def test_sides_holding_the_same_value_agree_whatever_changed() -> None:
    # Both edited to the same value: nothing to write.
    assert field("email", agreed=("a", "a"), m3="b", quotewerks="B")[0] == "agreed"
    # The bridge's own write coming back: the side shows the snapshot, so nothing changed.
    assert field("email", agreed=("b", "b"), m3="b", quotewerks="b")[0] == "in_step"


def test_an_open_review_item_holds_the_field_until_the_sides_agree() -> None:
    held = field("email", agreed=("a", "a"), m3="m3", quotewerks="qw", open_review=True)
    assert held[0] == "waiting"
    # A side changed again meanwhile: still for the person (the item gets the new values).
    assert field("email", agreed=("a", "a"), m3="m3-2", quotewerks="qw", open_review=True)[0] == "waiting"
    assert field("email", agreed=("a", "a"), m3="same", quotewerks="same", open_review=True)[0] == "agreed"


def test_without_a_snapshot_each_differing_field_counts_as_changed_on_both_sides() -> None:
    assert field("name", agreed=None, m3="Acme AB", quotewerks="ACME", name="m3")[0] == "to_quotewerks"
    assert field("email", agreed=None, m3="a@x", quotewerks="b@x", times=ChangeTimes(None, TEN))[0] == "review"
    assert field("city", agreed=None, m3="Oslo", quotewerks="oslo")[0] == "agreed"


def test_edits_of_different_fields_on_the_two_sides_both_survive() -> None:
    agreed = {name: Agreed("v", "v") for name in FIELD_NAMES}
    m3: State = dict.fromkeys(FIELD_NAMES, "v")
    quotewerks: State = dict(m3)
    m3["email"] = "m3@x.example"  # an M3 edit of the e-mail ...
    quotewerks["phone"] = "+46 1"  # ... and a QuoteWerks edit of the phone, which refreshes its LastModified
    decisions = merge(rules(), agreed, m3, quotewerks, times=ChangeTimes(NINE, TEN), equivalent=plain)
    actions = {d.field: d.action for d in decisions}
    assert actions == {"name": "in_step", "address": "in_step", "city": "in_step", "postal_code": "in_step",
                       "country": "in_step", "phone": "to_m3", "email": "to_quotewerks"}  # fmt: skip
