"""The quotes a chaos run sends: 1, 10 and 50 lines, existing and new customers, some with items M3 cannot sell.

Each quote is created in the QuoteWerks simulator (POST /__admin/documents) and later approved there (POST
/api/v1/documents/{DocNo}/approve), which fires the webhook to quote-ingest like a QuoteValet acceptance.
Deterministic for a seed.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from simulators.ion.m3.data import item_number, item_status
from tests.chaos.stack import qw_headers

#: Line counts, in the order they are dealt (half 1-line, 40 % 10-line, 10 % 50-line quotes).
SIZES = (1, 10, 1, 10, 50, 1, 10, 1, 10, 1)
EXISTING_CUSTOMERS = 200  # C000001 … C000200 in both simulators
M3_ITEMS = 1000
CENT = Decimal("0.01")


@dataclass(frozen=True)
class PlannedLine:
    item: str
    qty: int
    discount: int = 0
    list_price: float | None = None  # only for parts not in the catalog

    def body(self) -> dict[str, Any]:
        line: dict[str, Any] = {"ManufacturerPartNumber": self.item, "QtyTotal": self.qty,
                                "DiscountPercent": self.discount}  # fmt: skip
        if self.list_price is not None:
            line.update(UnitList=self.list_price, Description="A part M3 does not know")
        return line


@dataclass
class PlannedQuote:
    number: str  # without the install prefix
    lines: list[PlannedLine]
    customer: str | None = None  # an existing contact (CMAccountNo = M3 customer number)
    sold_to: dict[str, str] = field(default_factory=dict)  # a new customer's party
    bad_items: list[str] = field(default_factory=list)  # unknown in M3 or not sellable: the quote must end held
    doc_no: str = ""  # set once created
    expected: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)  # (item, qty, net unit price)

    @property
    def must_hold(self) -> bool:
        return bool(self.bad_items)

    @property
    def new_customer_email(self) -> str:
        return self.sold_to.get("SoldToEmail", "").casefold()

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"Number": self.number, "DocName": f"Chaos quote {self.number}",
                                "Lines": [line.body() for line in self.lines]}  # fmt: skip
        if self.customer is not None:
            body["CMAccountNo"] = self.customer
        else:
            body["SoldTo"] = self.sold_to
        return body


def _sellable(n: int) -> bool:
    return item_status(n) == "20"


def new_customer(seed: int, k: int) -> dict[str, str]:
    return {
        "SoldToCompany": f"Chaos Buyer {seed % 1000:03d}-{k:04d} GmbH",
        "SoldToContact": f"Buyer {k}",
        "SoldToAddress1": f"{k % 200 + 1} Teststrasse",
        "SoldToCity": "Hamburg",
        "SoldToPostalCode": "20095",
        "SoldToCountry": "DE",
        "SoldToPhoneNumber": f"+49 40 555 {k:04d}",
        "SoldToEmail": f"buyer{k:04d}@chaos{seed % 1000:03d}.example.com",
    }


def plan_quotes(count: int, seed: int, *, first_number: int = 50001) -> list[PlannedQuote]:
    """`count` quotes: sizes from SIZES, ~60 % existing customers, ~40 % new ones (some of them on a second quote
    later, when they already exist in M3), ~7 % with an unknown or inactive item."""
    rnd = random.Random(f"chaos:{seed}")
    sellable = [item_number(n) for n in range(1, M3_ITEMS + 1) if _sellable(n)]
    inactive = [item_number(n) for n in range(33, M3_ITEMS + 1, 33)]
    new_customers: list[dict[str, str]] = []
    quotes: list[PlannedQuote] = []
    for i in range(count):
        size = SIZES[i % len(SIZES)]
        items = rnd.sample(sellable, size)
        lines = [PlannedLine(item, rnd.randint(1, 20), rnd.choice((0, 0, 0, 5, 10))) for item in items]
        quote = PlannedQuote(number=f"Q{first_number + i}", lines=lines)
        roll = rnd.random()
        if roll < 0.6:
            quote.customer = f"C{rnd.randint(1, EXISTING_CUSTOMERS):06d}"
        elif roll < 0.75 and new_customers:
            quote.sold_to = dict(rnd.choice(new_customers))  # a new customer's next quote
        else:
            new_customers.append(new_customer(seed, len(new_customers) + 1))
            quote.sold_to = dict(new_customers[-1])
        if rnd.random() < 0.07:
            if rnd.random() < 0.5:
                bad = PlannedLine(f"NOPE-{first_number + i}", rnd.randint(1, 5), list_price=99.5)
            else:
                bad = PlannedLine(rnd.choice(inactive), rnd.randint(1, 5))
            quote.lines.insert(rnd.randint(0, len(quote.lines)), bad)
            quote.bad_items.append(bad.item)
        quotes.append(quote)
    return quotes


def net_price(unit_price: Decimal) -> Decimal:
    return unit_price.quantize(CENT, ROUND_HALF_UP)


async def create_documents(http: httpx.AsyncClient, qw_url: str, quotes: list[PlannedQuote]) -> None:
    """Create every quote in the QuoteWerks simulator; records its DocNo and its product lines as QuoteWerks
    holds them (what the order must contain)."""
    semaphore = asyncio.Semaphore(8)

    async def create(quote: PlannedQuote) -> None:
        async with semaphore:
            response = await http.post(f"{qw_url}/__admin/documents", json=quote.body(), timeout=30)
        response.raise_for_status()
        document = response.json()
        quote.doc_no = str(document["DocumentHeader"]["DocNo"])
        rows = [row for row in document["DocumentItems"] if int(row["LineType"]) == 1]
        quote.expected = [
            (str(row["ManufacturerPartNumber"]), qty, net_price(Decimal(str(row["UnitPrice"]))))
            for row in rows
            if (qty := Decimal(str(row["QtyTotal"]))) > 0
        ]

    await asyncio.gather(*(create(quote) for quote in quotes))


async def approve(http: httpx.AsyncClient, qw_url: str, quote: PlannedQuote) -> None:
    response = await http.post(f"{qw_url}/api/v1/documents/{quote.doc_no}/approve", headers=qw_headers(), timeout=30)
    response.raise_for_status()
