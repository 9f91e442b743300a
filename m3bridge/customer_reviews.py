"""`m3bridge customers conflicts|resolve`: the customer review queue.

A review item is a customer field changed on both sides that the rules leave to a person (or a linked record gone
from QuoteWerks). `conflicts` lists the open ones with both values, what the two sides last agreed on and when each
side changed; `resolve` records a person's decision in the state store (M3B_STATE_URL), and catalog-sync applies it
to both systems within M3B_CUSTOMER_DECISIONS_POLL_S and closes the item.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from datetime import datetime
from typing import Any

from m3bridge import local_run
from shared.platform.settings import BridgeSettings
from shared.platform.state import customer_snapshots as snapshots, db
from shared.platform.state.models import CustomerWorkItem

CHOICES = {
    "conflict": ("m3", "quotewerks", "value"),
    "deleted": ("recreate", "unlink"),
    "match": ("link", "create"),
    "blocked": ("keep",),
}
# A value typed by a person goes to both sides as it is: not for fields the two systems spell differently.
NOT_BY_VALUE = ("address", "country")


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "unknown"


def as_dict(item: CustomerWorkItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "status": item.status,
        "m3_customer": item.m3_customer_number,
        "quotewerks_customer": item.quotewerks_customer_id,
        "field": item.field,
        "m3_value": item.m3_value,
        "quotewerks_value": item.quotewerks_value,
        "last_agreed": None if item.agreed_m3 is None else {"m3": item.agreed_m3, "quotewerks": item.agreed_quotewerks},
        "m3_changed_at": _when(item.m3_changed_at),
        "quotewerks_changed_at": _when(item.quotewerks_changed_at),
        "reason": item.reason,
        "decision": item.decision,
        "decided_value": item.decided_value,
        "decided_by": item.decided_by,
        "opened_at": _when(item.opened_at),
    }


def describe(item: CustomerWorkItem) -> str:
    where = f"M3 {item.m3_customer_number} / QuoteWerks {item.quotewerks_customer_id}"
    if item.kind == "deleted":
        lines = [f"#{item.id} deleted  {where}", f"    {item.reason}", "    resolve with --take recreate | unlink"]
    elif item.kind == "blocked":
        lines = [f"#{item.id} blocked  {where}", f"    {item.reason}"]
    elif item.kind == "match":
        lines = [f"#{item.id} match    M3 {item.m3_value}", f"    candidates in QuoteWerks: {item.quotewerks_value}",
                 f"    {item.reason}"]  # fmt: skip
    else:
        lines = [
            f"#{item.id} conflict {where}  field {item.field}",
            f"    M3:         {item.m3_value!r}  (changed {_when(item.m3_changed_at)})",
            f"    QuoteWerks: {item.quotewerks_value!r}  (changed {_when(item.quotewerks_changed_at)})",
        ]
        if item.agreed_m3 is not None:
            lines.append(f"    last agreed: M3 {item.agreed_m3!r}, QuoteWerks {item.agreed_quotewerks!r}")
        lines.append(f"    why: {item.reason}")
    if item.status == snapshots.DECIDED:
        chosen = item.decided_value if item.decision == "value" else item.decision
        lines.append(f"    decided by {item.decided_by}: {chosen!r}, waiting for catalog-sync to apply it")
    return "\n".join(lines)


async def _conflicts(settings: BridgeSettings, customer: str | None, as_json: bool) -> int:
    engine = db.create_engine(settings.state_dsn())
    try:
        await db.migrate(settings.state_dsn())
        found = await snapshots.items(engine, m3_customer_number=customer)
    finally:
        await engine.dispose()
    if as_json:
        print(json.dumps([as_dict(item) for item in found], indent=2, ensure_ascii=False))
    elif not found:
        print("no customer review items open")
    else:
        print("\n\n".join(describe(item) for item in found))
        print(f"\n{len(found)} open; settle one with: m3bridge customers resolve ID --take m3|quotewerks|value")
    return 0


def check_decision(item: CustomerWorkItem, take: str, value: str | None) -> str | None:
    """Why this decision cannot be taken on this item, or None."""
    if item.status == snapshots.CLOSED:
        return f"item {item.id} is already closed: {item.outcome}"
    choices = CHOICES.get(item.kind, ())
    if take not in choices:
        return f"item {item.id} is a {item.kind} item: --take {' | '.join(choices)}"
    if take == "link":
        return None if value and value.strip() else "--take link needs --value QUOTEWERKS_ID (one of the candidates)"
    if take == "value":
        if value is None or not value.strip():
            return "--take value needs --value TEXT (a value is never cleared on both sides from here)"
        if item.field in NOT_BY_VALUE:
            return f"the {item.field} is spelled differently in the two systems: --take m3 or --take quotewerks"
    elif value is not None:
        return "--value goes with --take value only"
    return None


async def _resolve(settings: BridgeSettings, item_id: int, take: str, value: str | None, by: str) -> int:
    engine = db.create_engine(settings.state_dsn())
    try:
        await db.migrate(settings.state_dsn())
        item = await snapshots.item(engine, item_id)
        if item is None:
            print(f"no customer review item {item_id}", file=sys.stderr)
            return 2
        problem = check_decision(item, take, value)
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
        decided = await snapshots.decide(engine, item_id, take, value.strip() if value else None, by)  # type: ignore[arg-type]
    finally:
        await engine.dispose()
    print(describe(decided))
    print("catalog-sync applies it to both systems within M3B_CUSTOMER_DECISIONS_POLL_S and closes the item")
    return 0


def run(action: str, *, customer: str | None = None, as_json: bool = False, item_id: int | None = None,
        take: str | None = None, value: str | None = None, by: str | None = None) -> int:  # fmt: skip
    settings = local_run.cli_settings()
    if action == "conflicts":
        return asyncio.run(_conflicts(settings, customer, as_json))
    if item_id is None or take is None:
        raise ValueError("resolve needs an item and --take")
    return asyncio.run(_resolve(settings, item_id, take, value, by or getpass.getuser()))
