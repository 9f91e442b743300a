"""`make run`'s demo: approve one quote in QuoteWerks (the simulator, or the local database of its schema) and follow
it to the M3 order number written back on it, as log lines of the supervisor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from m3bridge import local_quotewerks

Say = Callable[[str], None]


async def via_simulator(
    quotewerks_url: str, api_key: str, doc_no: str = "AAAQ1001", *, say: Say, stopping: asyncio.Event
) -> None:
    """Approve a demo quote in QuoteWerks and follow it to the M3 order number written back on it."""
    api = f"{quotewerks_url}/api/v1"
    headers = {"X-API-Key": api_key}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        try:
            started = time.monotonic()
            say(f"approving quote {doc_no} in QuoteWerks (a QuoteValet.Accepted webhook goes to quote-ingest)")
            (await http.post(f"{api}/documents/{doc_no}/approve")).raise_for_status()
            hooks = (await http.get(f"{api}/webhooks")).json().get("webhooks") or []
            hook_id = hooks[0].get("ID") if hooks else None
            delivered = False
            deadline = started + 60
            while time.monotonic() < deadline and not stopping.is_set():
                if not delivered and hook_id is not None:
                    entries = (await http.get(f"{api}/webhooks/{hook_id}/deliveries")).json()["deliveries"]
                    if entries:
                        delivered = True
                        status = entries[-1].get("StatusCode") or entries[-1].get("Error")
                        elapsed = time.monotonic() - started
                        say(f"+{elapsed:5.2f}s  webhook delivered: quote-ingest answered {status} after "
                            "publishing to quotewerks.quote.approved.v1")  # fmt: skip
                header = (await http.get(f"{api}/documents/{doc_no}")).json()["DocumentHeader"]
                if header.get("CustomText02"):
                    say(f"+{time.monotonic() - started:5.2f}s  order-writer: customer, items, batch order, "
                        f"Confirm through token-service and the ION Gateway")  # fmt: skip
                    say(
                        f"+{time.monotonic() - started:5.2f}s  written back on the quote: "
                        f"CustomText01={header.get('CustomText01')!r} CustomText02={header['CustomText02']!r}"
                    )
                    return
                await asyncio.sleep(0.1)
            say("the demo quote did not come back within 60 s: see the log lines above")
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            say(f"demo could not run: {type(exc).__name__}: {exc}")


async def via_database(
    path: Path, view: local_quotewerks.IngestView, demo_quotes: list[str], *, say: Say, stopping: asyncio.Event
) -> None:
    """Approve a demo quote in the QuoteWerks database as a save in QuoteWerks would (DocStatus and the change
    stamp) and follow it to the M3 order number written back on it."""
    database = local_quotewerks.LocalQuoteWerks(path, view)
    try:
        doc_no = await database.first_open(demo_quotes)
        if doc_no is None:
            say("every demo quote is approved or ordered already (--keep-state): nothing to approve")
            return
        started = time.monotonic()
        say(f"approving quote {doc_no} in the QuoteWerks database: DocStatus={view.approved_status!r} and a new "
            "LastModified (no webhook: quote-ingest's poll finds it)")  # fmt: skip
        await database.approve(doc_no)
        deadline = started + 60
        while time.monotonic() < deadline and not stopping.is_set():
            header = await database.header(doc_no) or {}
            if header.get(view.status_field):
                elapsed = time.monotonic() - started
                say(f"+{elapsed:5.2f}s  polled, published, ordered in M3 through token-service and the ION Gateway")
                say(
                    f"+{elapsed:5.2f}s  written back on the quote: {view.order_field}="
                    f"{header.get(view.order_field)!r} {view.status_field}={header[view.status_field]!r}"
                )
                return
            await asyncio.sleep(0.2)
        if not stopping.is_set():
            say("the demo quote did not come back within 60 s: see the log lines above")
    except Exception as exc:  # the demo is a show; the stack keeps running
        say(f"demo could not run: {type(exc).__name__}: {exc}")
    finally:
        await database.aclose()
