"""`m3bridge work list|show|retry|resolve`: the quotes and changes that need a person.

order-writer puts each quote it holds (an unknown or inactive item, a mapping refusal, a customer alike to several)
or fails (M3 refused it) on the work queue in the state store, with the reason, the class, the attempts, the
history and the quote itself; it takes it off when the quote becomes an order. `retry` sends the stored quote
again through the same exactly-once path (order-writer looks for its order in M3 first, paced by the tenant's
budget); `show` previews the M3 calls the current mapping makes of it; `resolve --note` closes an item a person
settled some other way. A change catalog-sync or order-writer could not apply (an item, price, stock or customer
change) is an item too: `retry` sends the message to its topic again, and the item closes once it is applied.
With `make run` the tools find its state store and broker themselves.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from m3bridge.local_run import BrokerNotFoundError, cli_settings
from shared.platform.settings import BridgeSettings
from shared.platform.state import db, work_items
from shared.platform.state.models import WorkItem
from shared.platform.work_queue import WORK_ITEM_REF


def as_dict(item: WorkItem) -> dict[str, Any]:
    return {
        "id": item.id, "kind": item.kind, "subject": item.subject,
        **({"doc_no": item.subject} if item.kind == work_items.QUOTE else {}),
        "revision": item.revision, "state": item.state,
        "class": item.error_class, "reason": item.reason, "customer": item.customer,
        "items": (item.items or "").split(),
        "attempts": item.attempts, "status": item.status, "opened_at": item.opened_at.isoformat(timespec="seconds"),
        "history": work_items.history(item),
    }  # fmt: skip


def line(item: WorkItem) -> str:
    return (f"#{item.id:<5} {item.kind:<12} {item.subject:<14} {item.state:<7} {item.error_class:<17} "
            f"{item.status:<9} {item.attempts:>2}x  {item.reason[:90]}")  # fmt: skip


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
            error_class=options.error_class, kind=options.kind,
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
    from shared.mapping import load_rules, preview as planned
    from shared.platform.settings import config_path

    rules = load_rules(config_path(OrderWriterSettings().mapping_file))
    return planned(QuoteApproved.model_validate_json(payload), rules)


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
    if item.kind != work_items.QUOTE:
        change = work_items.Change.loads(item.payload)
        print(
            f"  {item.service}: the change on {change.topic} (key {change.key}), opened {item.opened_at:%Y-%m-%d %H:%M}"
        )
    else:
        print(f"  customer {item.customer or '-'}, items {item.items or '-'}, opened {item.opened_at:%Y-%m-%d %H:%M}")
    for event in work_items.history(item):
        detail = event.get("reason") or event.get("note") or ""
        print(f"  {event['at']}  {event['event']:<9} {detail}")
    if item.kind != work_items.QUOTE:
        print(f"\nthe message `m3bridge work retry {item.id}` sends again:\n  {change.value}")
        return 0
    first = next((event.get("plan") for event in work_items.history(item) if event.get("plan")), None)
    try:
        now = preview(item.payload)
    except Exception as exc:  # a rules file that no longer loads is itself the answer
        now = f"  cannot plan: {exc}"
    if first is not None and first != now:
        print("\nwhat the first attempt's mapping sent to M3 (offline):")
        print(first)
        print("\nwhat the current mapping sends to M3 instead (offline, before M3 checks the items):")
    elif first is not None:
        print("\nwhat the mapping sends to M3, as at the first attempt (offline, before M3 checks the items):")
    else:
        print("\nwhat the current mapping sends to M3 (offline, before M3 checks the items):")
    print(now)
    return 0


async def _send_again(settings: BridgeSettings, item: WorkItem) -> str:
    """Publishes the item's quote or change again, its replay header naming the item; says what it sent."""
    from shared.contracts import QuoteApproved
    from shared.contracts.topics import QUOTE_APPROVED, topic_named
    from shared.platform.kafka import REPLAY_HEADER, create_broker, publish, publish_raw

    headers = {REPLAY_HEADER: f"{WORK_ITEM_REF}{item.id}"}
    broker = create_broker(settings)
    async with broker:
        await broker.start()
        if item.kind == work_items.QUOTE:
            quote = QuoteApproved.model_validate_json(item.payload)
            await publish(broker, QUOTE_APPROVED, quote, key=quote.doc_no, headers=headers)
            return f"quote {quote.doc_no}"
        change = work_items.Change.loads(item.payload)
        topic = topic_named(change.topic)
        if topic is None:
            raise LookupError(f"work item {item.id} names topic {change.topic!r}, which the bridge does not have")
        await publish_raw(broker, topic, change.value.encode(), key=change.key or None,
                          max_bytes=settings.kafka_max_request_size, headers=headers)  # fmt: skip
        return f"{item.kind} change {change.key} (to {change.topic})"


async def _retry(options: Any) -> int:
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
        try:
            sent = await _send_again(settings, item)
        except LookupError as unknown:
            print(unknown, file=sys.stderr)
            return 2
        await work_items.note(engine, item.id, "retried", options.note or "sent again by a person")
    finally:
        await engine.dispose()
    print(f"{sent} sent again (work item {item.id}); `m3bridge work show {item.id}` follows it")
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
