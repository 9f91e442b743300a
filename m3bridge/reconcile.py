"""`m3bridge reconcile [--since DAYS]`: after an incident, did anything slip through? Quotes, ledger and M3 compared.

Three sources, each read directly (QuoteWerks as quote-ingest reads it; M3 with the tenant's own token, as
`m3bridge doctor`; the state store): every quote approved in QuoteWerks in the window must have a ledger entry
(confirmed, or held / failed and so on the work queue), and every confirmed entry must be an order M3 still has,
with the quote's DocNo as its CUOR, the same customer and the quote's subtotal as its net value. Differences are
listed with what to do; exit 1 when there is one. Under `make run` it finds the simulator, QuoteWerks and the store
itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from pydantic import SecretStr

from m3bridge import local_run
from m3bridge.doctor import Check, check_tenant, local_setting
from services.order_writer.reconcile import ReconcileReport, ledger_since, never_ordered, orders_in_m3
from shared.platform.state import db
from shared.quotewerks import parse_last_modified


async def _approved(since: datetime, http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """DocNo → header of the quotes QuoteWerks has as approved, changed since `since`."""
    from shared.quotewerks.connect import quotewerks_client

    url = local_setting("M3B_QUOTEWERKS_URL")
    if not url:
        raise RuntimeError("M3B_QUOTEWERKS_URL is not set")
    client = quotewerks_client(url, SecretStr(local_setting("M3B_QUOTEWERKS_API_KEY")), http=http,
                               sql_password=SecretStr(os.environ.get("M3B_QUOTEWERKS_SQL_PASSWORD", "")))  # fmt: skip
    found: dict[str, dict[str, Any]] = {}
    try:
        for status in json.loads(os.environ.get("M3B_APPROVED_STATUSES", '["Accepted"]')):
            for header in await client.documents(doc_type="QUOTE", status=status, modified_since=since):
                doc_no = str(header.get("DocNo") or "")
                if doc_no:
                    found[doc_no] = header
    finally:
        await client.aclose()
    return found


async def reconcile(since_days: float) -> ReconcileReport:
    since = datetime.now(UTC) - timedelta(days=since_days)
    report = ReconcileReport(since=since.isoformat(timespec="seconds"))
    settings = local_run.cli_settings()
    await db.migrate(settings.state_dsn())
    engine = db.create_engine(settings.state_dsn())
    try:
        entries = await ledger_since(engine, since)
    finally:
        await engine.dispose()
    async with httpx.AsyncClient() as http:
        try:
            approved = await _approved(since, http)
        except Exception as failed:
            report.problems.append(f"QuoteWerks: {type(failed).__name__}: {failed}"[:300])
            approved = {}
        report.approved = len(approved)
        changed = {doc_no: parse_last_modified(header.get("LastModified")) for doc_no, header in approved.items()}
        report.differences += never_ordered(changed, entries, source="approved in QuoteWerks")
        totals = {doc_no: total for doc_no, header in approved.items()
                  if (total := _subtotal(header.get("SubTotal"))) is not None}  # fmt: skip
        checks: list[Check] = []
        m3 = await check_tenant(local_setting("M3B_ION_API_FILE", "/run/secrets/ionapi"), checks, http)
        if m3 is None:
            report.problems += [f"M3: {c.detail}" for c in checks if c.status == "fail"]
            return report
        await orders_in_m3(m3, [entry for revisions in entries.values() for entry in revisions], report,
                           quote_totals=totals)  # fmt: skip
    return report


def _subtotal(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def describe(report: ReconcileReport) -> str:
    lines = [f"{d.doc_no:<14} {d.kind:<24} {d.detail}\n{'':<14} {'':<24} → {d.action}" for d in report.differences]
    lines += [f"not checked: {problem}" for problem in report.problems]
    lines.append(
        f"\nsince {report.since}: {report.approved} quotes approved in QuoteWerks, "
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
