"""`m3bridge`: run a service, the embedded stack, migrations, topic creation, documents, keys.

m3bridge serve order-writer     one service (what each container runs)
m3bridge run                    the embedded stack (`make run`)
m3bridge migrate                bring the state store to the newest schema
m3bridge topics                 create the bridge's topics that are missing
m3bridge docs [--check]         regenerate docs/asyncapi.json and the README settings table
m3bridge keys --out DIR         generate the keys and passwords docker compose reads as secret files
m3bridge dead-letters list|replay --service order-writer [--key DocNo] [--error-class held]
m3bridge dry-run QUOTE.json [--customer CUNO]   the M3 calls the order mapping makes of a quote
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any


def _serve(options: argparse.Namespace) -> int:
    # A service never runs httpx's own command line, whose import (httpx/__init__ tries it) loads rich, click and
    # pygments: some 5 MB of resident memory in every container. httpx falls back to a stub when it is missing.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from pydantic import ValidationError

    from services import SERVICES
    from shared.platform.runtime import serve
    from shared.platform.settings import ENV_PREFIX

    try:
        runtime = SERVICES[options.service].create_runtime()
    except ValidationError as exc:
        for line in _settings_problems(exc, options.service):
            print(f"m3bridge serve {options.service}: {line}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"m3bridge serve {options.service}: cannot read {exc.filename or exc}: {exc.strerror or exc}"
              f"{_setting_holding(options.service, exc.filename)}", file=sys.stderr)  # fmt: skip
        return 2
    except ValueError as exc:  # a rules file or a combination of settings refused (QuoteWerksConfigError too)
        # pydantic-settings names a value it cannot parse (JSON, say) by its field: say the variable instead.
        named = re.sub(r'error parsing value for field "(\w+)" from source "\w+"',
                       lambda m: f"{ENV_PREFIX}{m[1].upper()} cannot be parsed (JSON expected)", str(exc))  # fmt: skip
        print(f"m3bridge serve {options.service}: {named}", file=sys.stderr)
        return 2
    serve(runtime)
    return 0


def _settings_problems(error: Any, service: str) -> list[str]:
    """A settings ValidationError as one line per setting, named as it is set (M3B_…), with what is wrong; the value
    given is shown unless the setting is a secret."""
    from services import settings_classes
    from shared.platform.settings import ENV_PREFIX

    fields = settings_classes()[service].model_fields
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "?"
        secret = "SecretStr" in str(fields[field].annotation) if field in fields else True
        given = problem.get("input")
        shown = "" if secret or isinstance(given, dict) or given is None else f"={str(given)[:80]}"
        lines.append(f"{ENV_PREFIX}{field.upper()}{shown}: {problem['msg']}")
    return lines


def _setting_holding(service: str, filename: object) -> str:
    """' (M3B_X)' when one of the service's path settings names `filename`, so the line says what to fix."""
    from services import settings_classes
    from shared.platform.settings import ENV_PREFIX

    if not filename:
        return ""
    try:
        settings = settings_classes()[service]()
    except Exception:  # the settings themselves are fine here (they were read), but never fail the message on it
        return ""
    wanted = Path(str(filename)).name
    for name, value in settings:
        if isinstance(value, Path) and value.name == wanted:
            return f" ({ENV_PREFIX}{name.upper()})"
    return ""


def _run(options: argparse.Namespace) -> int:
    from m3bridge import supervisor

    return supervisor.run(options)


def _migrate(_options: argparse.Namespace) -> int:
    from shared.platform.settings import BridgeSettings
    from shared.platform.state import db

    settings = BridgeSettings()
    revision = asyncio.run(db.migrate(settings.state_dsn()))
    print(f"state store at migration {revision}")
    return 0


def _topics(options: argparse.Namespace) -> int:
    from shared.contracts.topics import ensure_topics
    from shared.platform.kafka import aiokafka_client_options
    from shared.platform.settings import BridgeSettings

    settings = BridgeSettings()
    created = asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap_servers,
            partitions=options.partitions or settings.kafka_topic_partitions,
            replication=options.replication or settings.kafka_topic_replication,
            # The services' own connection (M3B_KAFKA_SECURITY_PROTOCOL, M3B_KAFKA_SASL_*).
            client_options=aiokafka_client_options(settings),
            dead_letter_retention_ms=settings.kafka_dead_letter_retention_ms,
        )
    )
    print(f"created {len(created)} topics: {', '.join(created) or '-'}")
    return 0


def _docs(options: argparse.Namespace) -> int:
    from m3bridge import docs

    stale = docs.stale() if options.check else docs.write()
    for path in stale:
        print(f"{path} {'is stale: run `make docs`' if options.check else 'written'}", file=sys.stderr)
    return 1 if options.check and stale else 0


#: Secret files the site fills in; `m3bridge keys` creates them empty (docker compose needs every file to exist).
def _keys(options: argparse.Namespace) -> int:
    from m3bridge.keys import write_keys

    return write_keys(options.out, force=options.force)


def _dead_letters(options: argparse.Namespace) -> int:
    from m3bridge import dead_letters

    return dead_letters.run(
        options.action, options.service, options.key, options.error_class, options.dry_run, options.again
    )


def _customers(options: argparse.Namespace) -> int:
    from m3bridge import customer_match, customer_reviews

    if options.action == "match":
        return customer_match.run_match(options.dry_run, options.json)
    if options.action == "link":
        return customer_match.run_link(options.quotewerks_customer, options.m3_customer)
    if options.action == "links":
        return customer_match.run_links(options.search, options.json)
    if options.action == "unlink":
        return customer_match.run_unlink(options.quotewerks_customer)
    if options.action == "conflicts":
        return customer_reviews.run("conflicts", customer=options.customer, as_json=options.json)
    return customer_reviews.run("resolve", item_id=options.item, take=options.take, value=options.value, by=options.by)


def _doctor(options: argparse.Namespace) -> int:
    from m3bridge import doctor

    return doctor.run(as_json=options.json, ionapi=options.ionapi)


def _reconcile(options: argparse.Namespace) -> int:
    from m3bridge import reconcile

    return reconcile.run(since_days=options.since, as_json=options.json)


def _trace(options: argparse.Namespace) -> int:
    import json

    from m3bridge.local_run import cli_settings
    from services.order_writer.trace import describe, trace
    from shared.platform.state import db

    async def story() -> dict[str, object]:
        settings = cli_settings()
        await db.migrate(settings.state_dsn())
        engine = db.create_engine(settings.state_dsn())
        try:
            return await trace(engine, options.doc_no)
        finally:
            await engine.dispose()

    found = asyncio.run(story())
    print(json.dumps(found, indent=2, ensure_ascii=False) if options.json else describe(found))
    return 0


def _work(options: argparse.Namespace) -> int:
    from m3bridge import work

    return work.run(options)


def _dry_run(options: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from services.order_writer.app import OrderWriterSettings
    from shared.contracts import QuoteApproved
    from shared.mapping import MappingRulesError, describe, load_rules, plan_customer, plan_order
    from shared.platform.settings import config_path

    try:
        rules = load_rules(options.rules or config_path(OrderWriterSettings().mapping_file))
        quote = QuoteApproved.model_validate_json(options.quote.read_text())
    except (MappingRulesError, ValidationError, OSError) as exc:
        print(f"cannot plan: {exc}", file=sys.stderr)
        return 2
    # Offline: the lengths are the rules' fallbacks; order-writer uses M3's own metadata when it runs.
    customer = None if options.customer else plan_customer(quote, rules, field_lengths={})
    plan = plan_order(quote, rules, customer_number=options.customer or "", field_lengths={}, customer=customer)
    print(describe(plan))
    if plan.held:
        return 1
    if options.offline:
        return 0
    from m3bridge.doctor import local_setting

    ionapi = local_setting("M3B_ION_API_FILE")
    if not ionapi or not Path(ionapi).exists():
        print("items not checked against M3: no tenant (M3B_ION_API_FILE, or a running make run); --offline")
        return 0
    verdict, held = asyncio.run(_items_in_m3(plan, rules, ionapi))
    print(verdict)
    return 1 if held else 0


async def _items_in_m3(plan: object, rules: object, ionapi: str) -> tuple[str, bool]:
    """What M3 says of the quote's items (each exists and is active), with the tenant as the doctor reaches it."""
    import httpx

    from m3bridge.doctor import check_tenant
    from services.order_writer.orders import OrderWriter
    from services.order_writer.refusals import HoldError

    async with httpx.AsyncClient() as http:
        m3 = await check_tenant(ionapi, [], http)
        if m3 is None:
            return "items not checked against M3: no token from the tenant (m3bridge doctor says why)", False
        try:
            await OrderWriter(m3, None, rules).check_items(plan)  # type: ignore[arg-type]
        except HoldError as held:
            lines = "\n".join(f"  {problem.message}" for problem in held.problems)
            return f"M3 would hold it:\n{lines}", True
    return "M3 has every item, active: ready to send", False


def main(argv: list[str] | None = None) -> int:
    from services import SERVICES

    parser = argparse.ArgumentParser(
        prog="m3bridge", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.set_defaults(handler=_serve)

    from m3bridge.run_options import build_parser

    run = build_parser(commands.add_parser("run", help="run the embedded stack"))
    run.set_defaults(handler=_run)

    commands.add_parser("migrate", help="migrate the state store (M3B_STATE_URL)").set_defaults(handler=_migrate)

    topics = commands.add_parser("topics", help="create missing topics (M3B_KAFKA_BOOTSTRAP_SERVERS)")
    topics.add_argument("--partitions", type=int, default=0, help="default: M3B_KAFKA_TOPIC_PARTITIONS")
    topics.add_argument("--replication", type=int, default=0, help="default: M3B_KAFKA_TOPIC_REPLICATION")
    topics.set_defaults(handler=_topics)

    docs = commands.add_parser("docs", help="regenerate docs/asyncapi.json and the README settings table")
    docs.add_argument("--check", action="store_true", help="fail if the committed documents are stale")
    docs.set_defaults(handler=_docs)

    keys = commands.add_parser(
        "keys",
        help="generate the compose secrets (token-service keys, webhook/BOD secrets, PostgreSQL password, operator and "
        "read keys)",
    )
    keys.add_argument("--out", type=Path, default=Path("deploy/secrets"), help="folder to write them to")
    keys.add_argument("--force", action="store_true", help="replace existing keys")
    keys.set_defaults(handler=_keys)

    letters = commands.add_parser("dead-letters", help="list or replay a service's dead letters (and held quotes)")
    letters.add_argument("action", choices=("list", "replay"))
    letters.add_argument("--service", required=True, help="e.g. order-writer, bod-listener")
    letters.add_argument("--key", help="only the messages with this key (e.g. a DocNo)")
    letters.add_argument("--error-class", help="only this class, e.g. held, rejected")
    letters.add_argument("--dry-run", action="store_true", help="replay: show what would be sent")
    letters.add_argument(
        "--again", action="store_true", help="replay: also the letters replayed before (each is remembered)"
    )
    letters.set_defaults(handler=_dead_letters)

    doctor = commands.add_parser(
        "doctor", help="check the tenant, M3 grants, Data Lake, QuoteWerks, Kafka and the state store for go-live"
    )
    doctor.add_argument("--ionapi", help="the tenant's .ionapi file (default: M3B_ION_API_FILE, or make run's)")
    doctor.add_argument("--json", action="store_true", help="as JSON")
    doctor.set_defaults(handler=_doctor)

    reconciling = commands.add_parser(
        "reconcile", help="approved quotes in QuoteWerks vs the ledger vs M3's orders: did anything slip through?"
    )
    reconciling.add_argument("--since", type=float, default=7.0, help="days back (default 7)")
    reconciling.add_argument("--json", action="store_true", help="as JSON")
    reconciling.set_defaults(handler=_reconcile)

    trace = commands.add_parser("trace", help="one quote's story: approval, customer, order, work items, with times")
    trace.add_argument("doc_no", help="the quote's DocNo")
    trace.add_argument("--json", action="store_true", help="as JSON")
    trace.set_defaults(handler=_trace)

    work = commands.add_parser(
        "work", help="the work queue: quotes held or failed, changes not applied, to retry or resolve"
    )
    work_actions = work.add_subparsers(dest="action", required=True)
    listing = work_actions.add_parser("list", help="open work items (newest first)")
    listing.add_argument("--all", action="store_true", help="open and resolved")
    listing.add_argument("--resolved", action="store_true", help="resolved only")
    listing.add_argument("--doc", help="only this DocNo (or item number, customer number of a change)")
    listing.add_argument(
        "--kind", help="only this kind: quote, item, price, stock, m3-customer, qw-customer, new-customer"
    )
    listing.add_argument("--customer", help="only this customer (QuoteWerks account or company)")
    listing.add_argument("--item", help="only quotes with this item")
    listing.add_argument("--class", dest="error_class", help="only this class: business, mapping, authorization, …")
    listing.add_argument("--json", action="store_true", help="as JSON")
    show = work_actions.add_parser(
        "show", help="one item: reason, history, the M3 calls the mapping makes now (a change: the message)"
    )
    show.add_argument("item", help="its number, or a DocNo")
    show.add_argument("--json", action="store_true", help="as JSON")
    retry = work_actions.add_parser("retry", help="send the quote or change again (after fixing the cause)")
    retry.add_argument("item", help="its number, or a DocNo")
    retry.add_argument("--note", default="", help="why, for the history")
    retry.add_argument("--again", action="store_true", help="also a resolved item")
    settle = work_actions.add_parser("resolve", help="close an item settled some other way")
    settle.add_argument("item", help="its number, or a DocNo")
    settle.add_argument("--note", required=True, help="what was done, for the history")
    work.set_defaults(handler=_work)

    customers = commands.add_parser("customers", help="the customer review queue: list conflicts, settle them")
    customer_actions = customers.add_subparsers(dest="action", required=True)
    conflicts = customer_actions.add_parser("conflicts", help="customer fields (and deletes) waiting for a person")
    conflicts.add_argument("--customer", help="only this M3 customer number")
    conflicts.add_argument("--json", action="store_true", help="as JSON")
    resolve = customer_actions.add_parser("resolve", help="decide one review item; catalog-sync applies it")
    resolve.add_argument("item", type=int, help="the item's number (from `customers conflicts`)")
    resolve.add_argument(
        "--take", required=True,
        choices=("m3", "quotewerks", "value", "recreate", "unlink", "link", "create", "keep"),
        help="a conflict: m3 | quotewerks | value (with --value); a deleted record: recreate | unlink; several "
        "QuoteWerks customers alike: link (with --value QUOTEWERKS_ID) | create; blocked in M3: keep",
    )  # fmt: skip
    resolve.add_argument("--value", help="with --take value: the value both systems get; with link: the customer")
    resolve.add_argument("--by", help="who decides (default: the login name)")
    match = customer_actions.add_parser(
        "match", help="which M3 customer each QuoteWerks customer already is (go-live; catalog-sync's settings)"
    )
    match.add_argument("--dry-run", action="store_true", help="report only; without it the single matches are linked")
    match.add_argument("--json", action="store_true", help="as JSON")
    link = customer_actions.add_parser("link", help="link a QuoteWerks customer to an M3 customer by hand")
    link.add_argument("quotewerks_customer")
    link.add_argument("m3_customer")
    links = customer_actions.add_parser("links", help="list the customer links (QuoteWerks ↔ M3), or search them")
    links.add_argument("search", nargs="?", help="part of an account, customer number, company or e-mail")
    links.add_argument("--json", action="store_true", help="as JSON")
    unlink = customer_actions.add_parser("unlink", help="forget a QuoteWerks customer's link")
    unlink.add_argument("quotewerks_customer")
    customers.set_defaults(handler=_customers)
    # Short for `customers links`: "which M3 customer is this account?" is asked often.
    top_links = commands.add_parser("links", help="list or search the customer links (= customers links)")
    top_links.add_argument("search", nargs="?", help="part of an account, customer number, company or e-mail")
    top_links.add_argument("--json", action="store_true", help="as JSON")
    top_links.set_defaults(handler=_customers, action="links")

    dry_run = commands.add_parser("dry-run", help="show the M3 calls the order mapping makes of a quote (JSON)")
    dry_run.add_argument("quote", type=Path, help="a quotewerks.quote.approved.v1 payload")
    dry_run.add_argument("--customer", help="the M3 customer number; without it the customer is created first")
    dry_run.add_argument("--rules", type=Path, help="mapping rules (default: M3B_MAPPING_FILE)")
    dry_run.add_argument("--offline", action="store_true", help="do not ask M3 about the items")
    dry_run.set_defaults(handler=_dry_run)

    options = parser.parse_args(argv)
    result: int = options.handler(options)
    return result


if __name__ == "__main__":
    sys.exit(main())
