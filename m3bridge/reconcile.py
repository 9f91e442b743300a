"""`m3bridge reconcile [--since DAYS]`: after an incident, did anything slip through? Quotes, ledger and M3 compared.

Three sources, each read directly (QuoteWerks as quote-ingest reads it; M3 with the tenant's own token, as
`m3bridge doctor`; the state store): every quote approved in QuoteWerks in the window must have a ledger entry
(confirmed, or held / failed and so on the work queue), and every confirmed entry must be an order M3 still has,
with the quote's DocNo as its CUOR and the same customer. Differences are listed with what to do; exit 1 when
there is one. Under `make run` it finds the simulator, QuoteWerks and the store itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from m3bridge import local_run
from m3bridge.doctor import Check, check_tenant, local_setting
from shared.lease import Priority
from shared.m3 import M3BusinessError, M3Client, M3Error, M3NotFoundError
from shared.state import db, ledger
from shared.state.ledger import OrderState
from shared.state.models import OrderLedgerEntry

#: An approval younger than this may still be on its way (webhook, outbox, lanes): not yet a difference.
SETTLING = timedelta(minutes=10)


@dataclass
class Difference:
    doc_no: str
    kind: str
    detail: str
    action: str


@dataclass
class ReconcileReport:
    since: str
    approved_in_quotewerks: int = 0
    confirmed_in_ledger: int = 0
    checked_in_m3: int = 0
    differences: list[Difference] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def _approved(since: datetime, http: httpx.AsyncClient) -> dict[str, datetime | None]:
    """DocNo → LastModified of the quotes QuoteWerks has as approved, changed since `since`."""
    from shared.quotewerks import parse_last_modified
    from shared.quotewerks_sql import quotewerks_client

    url = local_setting("M3B_QUOTEWERKS_URL")
    if not url:
        raise RuntimeError("M3B_QUOTEWERKS_URL is not set")
    client = quotewerks_client(url, SecretStr(local_setting("M3B_QUOTEWERKS_API_KEY")), http=http,
                               sql_password=SecretStr(os.environ.get("M3B_QUOTEWERKS_SQL_PASSWORD", "")))  # fmt: skip
    found: dict[str, datetime | None] = {}
    try:
        for status in json.loads(os.environ.get("M3B_APPROVED_STATUSES", '["Accepted"]')):
            for header in await client.documents(doc_type="QUOTE", status=status, modified_since=since):
                doc_no = str(header.get("DocNo") or "")
                if doc_no:
                    found[doc_no] = parse_last_modified(header.get("LastModified"))
    finally:
        await client.aclose()
    return found


async def _m3_order(m3: M3Client, order_number: str) -> dict[str, Any] | None:
    try:
        return await m3.execute_one("OIS100MI", "GetHead", {"ORNO": order_number}, priority=Priority.BULK)
    except (M3NotFoundError, M3BusinessError):
        return None


async def reconcile(since_days: float) -> ReconcileReport:
    since = datetime.now(UTC) - timedelta(days=since_days)
    report = ReconcileReport(since=since.isoformat(timespec="seconds"))
    settings = local_run.cli_settings()
    await db.migrate(settings.state_dsn())
    engine = db.create_engine(settings.state_dsn())
    try:
        entries: dict[str, list[OrderLedgerEntry]] = {}
        for entry in await ledger.entries(engine):
            updated = entry.updated_at if entry.updated_at.tzinfo else entry.updated_at.replace(tzinfo=UTC)
            if updated >= since - SETTLING:
                entries.setdefault(entry.doc_no, []).append(entry)
    finally:
        await engine.dispose()
    async with httpx.AsyncClient() as http:
        try:
            approved = await _approved(since, http)
        except Exception as failed:
            report.problems.append(f"QuoteWerks: {type(failed).__name__}: {failed}"[:300])
            approved = {}
        report.approved_in_quotewerks = len(approved)
        now = datetime.now(UTC)
        for doc_no, changed in sorted(approved.items()):
            if doc_no in entries or (changed is not None and now - changed < SETTLING):
                continue
            report.differences.append(Difference(
                doc_no, "approved, never ordered",
                f"approved in QuoteWerks{f' at {changed:%Y-%m-%d %H:%M}' if changed else ''}; the bridge has no record",
                "m3bridge trace DOCNO; approve it again in QuoteWerks (or wait for quote-ingest's poll)",
            ))  # fmt: skip
        checks: list[Check] = []
        m3 = await check_tenant(local_setting("M3B_ION_API_FILE", "/run/secrets/ionapi"), checks, http)
        if m3 is None:
            report.problems += [f"M3: {c.detail}" for c in checks if c.status == "fail"]
            return report
        for doc_no, revisions in sorted(entries.items()):
            for entry in revisions:
                if entry.state != OrderState.CONFIRMED or not entry.order_number:
                    continue
                report.confirmed_in_ledger += 1
                try:
                    head = await _m3_order(m3, entry.order_number)
                except M3Error as failed:
                    report.problems.append(f"M3 order {entry.order_number}: {failed}"[:300])
                    continue
                report.checked_in_m3 += 1
                if head is None:
                    report.differences.append(Difference(
                        doc_no, "order missing in M3",
                        f"the ledger has M3 order {entry.order_number} (customer {entry.customer_number}); M3 does not",
                        "find out who deleted it (OIS300); to order the quote again: m3bridge work / replay after "
                        "clearing its ledger entry",
                    ))  # fmt: skip
                    continue
                cuor, customer = str(head.get("CUOR") or "").strip(), str(head.get("CUNO") or "").strip()
                if cuor != doc_no or (entry.customer_number and customer != entry.customer_number):
                    report.differences.append(Difference(
                        doc_no, "order differs in M3",
                        f"M3 order {entry.order_number} has CUOR {cuor!r} and customer {customer!r}; the ledger says "
                        f"{doc_no!r} and {entry.customer_number!r}",
                        "check the order in OIS300: it was changed by hand",
                    ))  # fmt: skip
    return report


def describe(report: ReconcileReport) -> str:
    lines = [f"{d.doc_no:<14} {d.kind:<24} {d.detail}\n{'':<14} {'':<24} → {d.action}" for d in report.differences]
    lines += [f"not checked: {problem}" for problem in report.problems]
    lines.append(
        f"\nsince {report.since}: {report.approved_in_quotewerks} quotes approved in QuoteWerks, "
        f"{report.confirmed_in_ledger} orders in the ledger, {report.checked_in_m3} found in M3 — "
        f"{len(report.differences)} difference(s)"
    )
    return "\n".join(lines)


def run(*, since_days: float, as_json: bool) -> int:
    report = asyncio.run(reconcile(since_days))
    print(json.dumps(asdict(report), indent=2) if as_json else describe(report))
    return 1 if report.differences or report.problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(since_days=7, as_json=False))
