"""`m3bridge customers match [--dry-run]`: before go-live, which M3 customer each QuoteWerks customer already is.

Runs with catalog-sync's settings (its token-service key, QuoteWerks URL and key, customer-sync.yaml and the
mapping's country table): every M3 customer is read once (CRS610MI/LstByNumber, paged, bulk priority) and every
QuoteWerks customer not linked yet is matched against them by the keys of `matching` in customer-sync.yaml. The
report says, per QuoteWerks customer: linked already, one match (and by which key), several candidates (a person
links one: `m3bridge customers link`), or none (order-writer will create it in M3 with its first quote or change).
Without `--dry-run` the single matches are linked; catalog-sync then merges each pair by the field rules.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from m3bridge import local_run
from shared.customers import clean
from shared.customers.matching import CustomerFacts, Matcher
from shared.m3.lease import Priority
from shared.platform.state import db, ledger


@dataclass
class MatchReport:
    quotewerks_customers: int = 0
    m3_customers: int = 0
    linked_already: int = 0
    matched: dict[str, int] = field(default_factory=dict)
    several: int = 0
    shared: int = 0
    none: int = 0
    linked_now: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def m3_row_facts(row: dict[str, Any]) -> CustomerFacts:
    return CustomerFacts(
        id=clean(row.get("CUNO")), name=clean(row.get("CUNM")), email=clean(row.get("MAIL")),
        postal_code=clean(row.get("PONO")), country=clean(row.get("CSCD")), vat=clean(row.get("VRNO")),
    )  # fmt: skip


async def build_report(
    m3_rows: list[dict[str, Any]], contacts: list[dict[str, Any]], linked: dict[str, str], settings_rules: Any,
    countries: Any,
) -> MatchReport:  # fmt: skip
    from services.catalog_sync.customer_facts import contact_facts

    report = MatchReport(quotewerks_customers=len(contacts), m3_customers=len(m3_rows))
    taken = set(linked.values())
    matcher = Matcher([m3_row_facts(row) for row in m3_rows], settings_rules.matching)
    vat_column = settings_rules.matching.quotewerks_vat_column
    for record in sorted(contacts, key=lambda r: str(r.get("CMAccountNo") or "")):
        facts = contact_facts(record, countries, vat_column)
        if not facts.id:
            continue
        row: dict[str, Any] = {"quotewerks_customer": facts.id, "name": facts.name}
        if facts.id in linked:
            report.linked_already += 1
            row.update(result="linked", m3_customer=linked[facts.id])
        else:
            result = matcher.match(facts, exclude=taken)
            row.update(result=result.status, key=result.key, candidates=list(result.matches[:10]),
                       scores={k: result.scores[k] for k in result.matches[:10]})  # fmt: skip
            if result.status == "one":
                report.matched[str(result.key)] = report.matched.get(str(result.key), 0) + 1
                row["m3_customer"] = result.matches[0]
            elif result.status == "several":
                report.several += 1
            else:
                report.none += 1
        report.rows.append(row)
    # Two QuoteWerks customers found to be one M3 customer: QuoteWerks has a duplicate; a person links one.
    claimed: dict[str, list[dict[str, Any]]] = {}
    for row in report.rows:
        if row["result"] == "one":
            claimed.setdefault(row["m3_customer"], []).append(row)
    for number, rows in claimed.items():
        if len(rows) > 1:
            for row in rows:
                report.matched[str(row["key"])] -= 1
                report.shared += 1
                row.update(result="shared", others=[r["quotewerks_customer"] for r in rows if r is not row])
                row["candidates"] = [number]
    report.matched = {key: count for key, count in report.matched.items() if count}
    return report


def describe(report: MatchReport, dry_run: bool) -> str:
    lines = []
    for row in report.rows:
        if row["result"] == "linked":
            continue
        if row["result"] == "one":
            lines.append(
                f"{row['quotewerks_customer']:<12} {row['name'][:40]:<40} = M3 {row['m3_customer']} (by {row['key']})"
            )
        elif row["result"] == "shared":
            others = ", ".join(row["others"])
            lines.append(f"{row['quotewerks_customer']:<12} {row['name'][:40]:<40} ? M3 {row['candidates'][0]}, as are "
                         f"QuoteWerks {others}: a duplicate in QuoteWerks, link one")  # fmt: skip
        elif row["result"] == "several":
            alike = ", ".join(f"{c} ({row['scores'][c]:g})" for c in row["candidates"])
            lines.append(
                f"{row['quotewerks_customer']:<12} {row['name'][:40]:<40} ? {alike} (by {row['key']}): link one"
            )
        else:
            lines.append(f"{row['quotewerks_customer']:<12} {row['name'][:40]:<40} - no M3 customer alike")
    matched = sum(report.matched.values())
    by_key = ", ".join(f"{count} by {key}" for key, count in sorted(report.matched.items())) or "none"
    lines.append(
        f"\n{report.quotewerks_customers} QuoteWerks customers against {report.m3_customers} M3 customers: "
        f"{report.linked_already} linked already, {matched} found ({by_key}), {report.several} with several "
        f"candidates, {report.shared} found to be an M3 customer another one is too, {report.none} with none"
    )
    if dry_run:
        lines.append(
            "dry run: nothing linked. Without --dry-run the found ones are linked and catalog-sync merges them."
        )
    else:
        lines.append(f"linked {report.linked_now}; catalog-sync merges them by customer-sync.yaml")
    lines.append("several candidates: `m3bridge customers link QUOTEWERKS_ID M3_NUMBER` for the right one")
    return "\n".join(lines)


async def _run(dry_run: bool, as_json: bool) -> int:
    from services.catalog_sync.app import CatalogSyncSettings
    from shared.customers import load_sync_rules
    from shared.m3 import m3_client_for
    from shared.mapping import country_table, load_rules
    from shared.platform.settings import config_path
    from shared.quotewerks.connect import is_database_url, quotewerks_client

    settings = CatalogSyncSettings()
    if is_database_url(settings.quotewerks_url):
        print("the QuoteWerks contact manager is not reachable through the database URL: run it with the HTTP "
              "adapter's M3B_QUOTEWERKS_URL", file=sys.stderr)  # fmt: skip
        return 2
    rules = load_sync_rules(config_path(settings.customer_sync_file))
    countries = country_table(load_rules(config_path(settings.mapping_file)))
    engine = db.create_engine(settings.state_dsn())
    try:
        await db.migrate(settings.state_dsn())
        async with httpx.AsyncClient() as http:
            m3 = m3_client_for(settings, http)
            contacts = quotewerks_client(settings.quotewerks_url, settings.quotewerks_api_key, http=http,
                                         needs=("customers",))  # fmt: skip
            m3_rows = [dict(row) async for row in m3.list_all(
                "CRS610MI", "LstByNumber", {}, key_fields=("CUNO",), priority=Priority.BULK
            )]  # fmt: skip
            quotewerks = await contacts.customers()
        linked = {account: number for number, account in await ledger.customer_links(engine)}
        report = await build_report(m3_rows, quotewerks, linked, rules, countries)
        if not dry_run:
            for row in report.rows:
                if row["result"] == "one" and await ledger.link_customer(
                    engine, row["quotewerks_customer"], row["m3_customer"], email="", company=row["name"], by="match"
                ):
                    report.linked_now += 1
    finally:
        await engine.dispose()
    print(json.dumps(asdict(report), indent=2, ensure_ascii=False) if as_json else describe(report, dry_run))
    return 0


async def _link(account: str, number: str) -> int:
    from shared.platform.settings import BridgeSettings

    settings = BridgeSettings(service_name="m3bridge-cli")
    engine = db.create_engine(settings.state_dsn())
    try:
        await db.migrate(settings.state_dsn())
        other = await ledger.customer_link_for_m3(engine, number)
        if other is not None and other.quotewerks_customer_id != account:
            print(f"M3 customer {number} is linked to QuoteWerks customer {other.quotewerks_customer_id}: unlink "
                  "that first", file=sys.stderr)  # fmt: skip
            return 2
        current = await ledger.customer_link(engine, account)
        if current is not None and current.m3_customer_number != number:
            print(f"QuoteWerks customer {account} is linked to M3 customer {current.m3_customer_number}: unlink "
                  "that first", file=sys.stderr)  # fmt: skip
            return 2
        await ledger.link_customer(engine, account, number, email="", company="", by="person")
    finally:
        await engine.dispose()
    print(f"QuoteWerks customer {account} is M3 customer {number}; catalog-sync merges the two by customer-sync.yaml")
    return 0


async def _unlink(account: str) -> int:
    from shared.platform.settings import BridgeSettings
    from shared.platform.state import customer_snapshots

    settings = BridgeSettings(service_name="m3bridge-cli")
    engine = db.create_engine(settings.state_dsn())
    try:
        await db.migrate(settings.state_dsn())
        current = await ledger.customer_link(engine, account)
        if current is None:
            print(f"QuoteWerks customer {account} is not linked", file=sys.stderr)
            return 2
        await ledger.unlink_customer(engine, account)
        await customer_snapshots.forget(engine, current.m3_customer_number)
    finally:
        await engine.dispose()
    print(f"QuoteWerks customer {account} is no longer linked to M3 customer {current.m3_customer_number}")
    return 0


def run_unlink(account: str) -> int:
    return asyncio.run(_unlink(account))


async def _links(search: str | None, as_json: bool) -> int:
    from shared.platform.state.models import CustomerLink

    settings = local_run.cli_settings()
    engine = db.create_engine(settings.state_dsn())
    try:
        await db.migrate(settings.state_dsn())
        from sqlalchemy import or_, select
        from sqlalchemy.ext.asyncio import async_sessionmaker

        async with async_sessionmaker(engine)() as session:
            query = select(CustomerLink).order_by(CustomerLink.m3_customer_number)
            if search:
                pattern = f"%{search}%"
                query = query.where(or_(
                    CustomerLink.quotewerks_customer_id.ilike(pattern), CustomerLink.m3_customer_number.ilike(pattern),
                    CustomerLink.company.ilike(pattern), CustomerLink.email.ilike(pattern),
                ))  # fmt: skip
            links = list((await session.execute(query.limit(500))).scalars())
    finally:
        await engine.dispose()
    rows = [{"quotewerks_customer": link.quotewerks_customer_id, "m3_customer": link.m3_customer_number,
             "company": link.company or "", "linked_by": link.last_written_by or "",
             "linked_at": link.linked_at.isoformat(timespec="seconds")} for link in links]  # fmt: skip
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for row in rows:
        print(f"{row['quotewerks_customer']:<24} = M3 {row['m3_customer']:<10} {row['company'][:40]:<40} "
              f"by {row['linked_by']} {row['linked_at']}")  # fmt: skip
    print(f"{len(rows)} link(s)" + (" (the first 500)" if len(rows) == 500 else ""))
    return 0


def run_links(search: str | None, as_json: bool) -> int:
    return asyncio.run(_links(search, as_json))


def run_match(dry_run: bool, as_json: bool) -> int:
    return asyncio.run(_run(dry_run, as_json))


def run_link(account: str, number: str) -> int:
    return asyncio.run(_link(account, number))
