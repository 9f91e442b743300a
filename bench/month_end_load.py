"""The month-end benchmark's load: approved quotes, reps checking stock, a catalog paging the item master; and the
order results collected as they arrive."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from decimal import Decimal

import httpx
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from shared.contracts import OrderResult, Party, QuoteApproved, QuoteLine
from shared.contracts.topics import ORDER_RESULT
from shared.m3 import M3Client, M3Error
from shared.m3.lease import LeaseClient, Priority
from simulators.stack import READ

LINES = 10
REPS = 20
REP_CHECK_EVERY_S = 1.0
HOT_ITEMS = 20
BULK_WORKERS = 2
KEYS = {"order-writer": "bench-orders", "inventory-query": "bench-inventory", "catalog-sync": "bench-catalog"}


def quote(doc_no: str, rng: random.Random) -> QuoteApproved:
    active = [n for n in range(2, 1000) if n % 33 and n % 97 != 50]
    return QuoteApproved(
        doc_no=doc_no,
        sold_to=Party(company="Month End Customer", cm_account_no="C000001"),
        ship_via="UPS Ground",
        lines=[
            QuoteLine(
                manufacturer_part_number=f"ITM{n:06d}", qty_total=Decimal(rng.randint(1, 9)), unit_price=Decimal("9.50")
            )
            for n in rng.sample(active, LINES)
        ],
        approved_at=datetime.now(UTC),
    )


class Results:
    """Every order result, as it arrives."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(ORDER_RESULT.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                         group_id=f"bench-{uuid.uuid4().hex[:8]}")  # fmt: skip
        self.seen: dict[str, tuple[float, OrderResult]] = {}

    async def collect(self, wanted: set[str], deadline: float, halfway: Callable[[], None] | None = None) -> None:
        await self.consumer.start()
        try:
            while not wanted <= set(self.seen) and time.monotonic() < deadline:
                batches = await self.consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        result = OrderResult.model_validate_json(record.value or b"")
                        self.seen.setdefault(result.doc_no, (time.monotonic(), result))
                if halfway is not None and len(wanted & set(self.seen)) >= len(wanted) // 2:
                    halfway()
                    halfway = None
        finally:
            await self.consumer.stop()


async def reps(url: str, stop: asyncio.Event, answers_ms: list[float], failures: list[str]) -> None:
    limits = httpx.Limits(max_connections=REPS * 2)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits, headers=READ) as http:

        async def rep(number: int) -> None:
            rng = random.Random(number)
            while not stop.is_set():
                item = f"ITM{rng.randint(2, HOT_ITEMS + 1):06d}"
                started = time.monotonic()
                try:
                    response = await http.get(f"/v1/availability/{item}", params={"warehouse": "100", "quantity": "1"})
                    response.raise_for_status()
                    answers_ms.append((time.monotonic() - started) * 1000)
                except httpx.HTTPError as exc:
                    failures.append(f"{item}: {exc}")
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rng.uniform(0.5, 1.5) * REP_CHECK_EVERY_S)

        await asyncio.gather(*(rep(n) for n in range(REPS)))


async def catalog_paging(token_service_urls: str, stop: asyncio.Event, pages: list[int]) -> None:
    """Bulk paging of the item master, as catalog-sync's MI full load does, for as long as the run lasts."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=20)) as http:
        lease = LeaseClient(token_service_urls, "catalog-sync", SecretStr(KEYS["catalog-sync"]), http=http)
        m3 = M3Client(lease, http, company=100, source="catalog-sync")

        async def worker(number: int) -> None:
            start = f"ITM{number * 5000 + 1:06d}"
            while not stop.is_set():
                try:
                    rows = await m3.execute("MMS200MI", "LstItmByItm", {"ITNO": start}, priority=Priority.BULK,
                                            maxrecs=100)  # fmt: skip
                except M3Error:
                    continue
                pages.append(1)
                start = str(rows[-1]["ITNO"]) if len(rows) == 100 else f"ITM{number * 5000 + 1:06d}"

        await asyncio.gather(*(worker(n) for n in range(BULK_WORKERS)))
