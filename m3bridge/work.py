"""`m3bridge work list|show|retry|resolve`: the quotes that need a person.

order-writer puts each quote it holds (an unknown or inactive item, a mapping refusal, a customer alike to several)
or fails (M3 refused it) on the work queue in the state store, with the reason, the class, the attempts, the
history and the quote itself; it takes it off when the quote becomes an order. `retry` sends the stored quote
again through the same exactly-once path (order-writer looks for its order in M3 first, paced by the tenant's
budget); `show` previews the M3 calls the current mapping makes of it; `resolve --note` closes an item a person
settled some other way. With `make run` the tools find its state store and broker themselves.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from m3bridge.local_run import BrokerNotFoundError, cli_settings
from shared.settings import BridgeSettings
from shared.state import db, work_items
from shared.state.models import WorkItem

REPLAY_HEADER = "m3bridge-replayed-from"


def as_dict(item: WorkItem) -> dict[str, Any]:
    return {
        "id": item.id, "kind": item.kind, "doc_no": item.subject, "revision": item.revision, "state": item.state,
        "class": item.error_class, "reason": item.reason, "customer": item.customer,
        "items": (item.items or "").split(),
        "attempts": item.attempts, "status": item.status, "opened_at": item.opened_at.isoformat(timespec="seconds"),
        "history": work_items.history(item),
    }  # fmt: skip


def line(item: WorkItem) -> str:
    return (f"#{item.id:<5} {item.subject:<14} {item.state:<7} {item.error_class:<14} {item.status:<9} "
            f"{item.attempts:>2}x  {item.reason[:90]}")  # fmt: skip


async def _engine(settings: BridgeSettings) -> Any:
    await db.migrate(settings.state_dsn())
    return db.create_engine(settings.state_dsn())


async def _find(engine: Any, ref: str) -> WorkItem | None:
    if ref.lstrip("#").isdigit():
        return await work_items.get(engine, int(ref.lstrip("#")))
    found = await work_items.search(engine, status="all", doc_no=ref, limit=1)
    return found[0] if found else None


async def _list(options: Any) -> int:
    settings = cli_settings()
    engine = await _engine(settings)
    try:
        status: work_items.Status = "all" if options.all else ("resolved" if options.resolved else "open")
        found = await work_items.search(
            engine, status=status, doc_no=options.doc, customer=options.customer, item=options.item,
            error_class=options.error_class,
        )  # fmt: skip
    finally:
        await engine.dispose()
    if options.json:
        print(json.dumps([as_dict(item) for item in found], indent=2, ensure_ascii=False))
        return 0
    for item in found:
        print(line(item))
    print(f"{len(found)} {'' if status == 'all' else status + ' '}work item(s)")
    return 0


def preview(payload: str) -> str:
    """The M3 calls the current mapping makes of the quote (offline: the rules' own field lengths)."""
    from services.order_writer.app import OrderWriterSettings
    from shared.contracts import QuoteApproved
    from shared.mapping import describe, load_rules, plan_customer, plan_order
    from shared.settings import config_path

    rules = load_rules(config_path(OrderWriterSettings().mapping_file))
    quote = QuoteApproved.model_validate_json(payload)
    customer = plan_customer(quote, rules, field_lengths={})
    return describe(plan_order(quote, rules, customer_number="", field_lengths={}, customer=customer))


async def _show(options: Any) -> int:
    settings = cli_settings()
    engine = await _engine(settings)
    try:
        item = await _find(engine, options.item)
    finally:
        await engine.dispose()
    if item is None:
        print(f"no work item {options.item}", file=sys.stderr)
        return 2
    if options.json:
        print(json.dumps(as_dict(item), indent=2, ensure_ascii=False))
        return 0
    print(line(item))
    print(f"  customer {item.customer or '-'}, items {item.items or '-'}, opened {item.opened_at:%Y-%m-%d %H:%M}")
    for event in work_items.history(item):
        detail = event.get("reason") or event.get("note") or ""
        print(f"  {event['at']}  {event['event']:<9} {detail}")
    print("\nwhat the current mapping sends to M3 (offline, before M3 checks the items):")
    try:
        print(preview(item.payload))
    except Exception as exc:  # a rules file that no longer loads is itself the answer
        print(f"  cannot plan: {exc}")
    return 0


async def _retry(options: Any) -> int:
    from shared.contracts import QuoteApproved
    from shared.kafka import create_broker, publish
    from shared.topics import QUOTE_APPROVED

    try:
        settings = cli_settings(needs_broker=True)
    except BrokerNotFoundError as missing:
        print(missing, file=sys.stderr)
        return 2
    engine = await _engine(settings)
    try:
        item = await _find(engine, options.item)
        if item is None:
            print(f"no work item {options.item}", file=sys.stderr)
            return 2
        if item.status != work_items.OPEN and not options.again:
            print(f"work item {item.id} is resolved; --again sends it anyway", file=sys.stderr)
            return 2
        quote = QuoteApproved.model_validate_json(item.payload)
        broker = create_broker(settings)
        async with broker:
            await broker.start()
            await publish(broker, QUOTE_APPROVED, quote, key=quote.doc_no,
                          headers={REPLAY_HEADER: f"work-item:{item.id}"})  # fmt: skip
        await work_items.note(engine, item.id, "retried", options.note or "sent again by a person")
    finally:
        await engine.dispose()
    print(f"quote {quote.doc_no} sent again (work item {item.id}); `m3bridge work show {item.id}` follows it")
    return 0


async def _resolve(options: Any) -> int:
    settings = cli_settings()
    engine = await _engine(settings)
    try:
        item = await _find(engine, options.item)
        if item is None:
            print(f"no work item {options.item}", file=sys.stderr)
            return 2
        await work_items.note(engine, item.id, "resolved", options.note, resolve=True)
    finally:
        await engine.dispose()
    print(f"work item {item.id} ({item.subject}) resolved: {options.note}")
    return 0


def run(options: Any) -> int:
    handler = {"list": _list, "show": _show, "retry": _retry, "resolve": _resolve}[options.action]
    return asyncio.run(handler(options))
