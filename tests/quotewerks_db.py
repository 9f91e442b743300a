"""A QuoteWerks database for tests: the shipped schema subset created in SQLite or PostgreSQL, and quotes in it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.quotewerks.schema import DOCUMENT_HEADERS, DOCUMENT_ITEMS, metadata


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)


def product_line(part: str, qty: float, price: float, *, sort: int, **more: Any) -> dict[str, Any]:
    return {
        "SortOrder": sort, "LineType": 1, "LineAttributes": 0, "ManufacturerPartNumber": part,
        "Description": f"Part {part}", "QtyTotal": qty, "UnitPrice": price, "UnitList": price, "UnitCost": price / 2,
        "DiscountPercent": 0.0, "UnitOfMeasure": "EA", "Vendor": "", "Manufacturer": "", "ExtendedPrice": qty * price,
        **more,
    }  # fmt: skip


async def insert_quote(
    engine: AsyncEngine,
    doc_no: str,
    *,
    status: str,
    stamp: datetime,
    lines: Sequence[Mapping[str, Any]],
    doc_type: str = "QUOTE",
    **header: Any,
) -> int:
    """A document as QuoteWerks saves it: the header row, then its items; returns the header's ID."""
    sub_total = sum(float(line.get("ExtendedPrice") or 0) for line in lines)
    values = {
        "DocNo": doc_no, "DocType": doc_type, "DocStatus": status, "DocName": f"Quote {doc_no}",
        "DocDate": stamp, "LastModified": stamp, "ShipVia": "UPS Ground", "SoldToCompany": "Acme Corp",
        "SoldToCMAccountNo": "C000001", "SoldToCountry": "US",
        "SubTotal": sub_total, "TotalTax": 0.0, "ShippingAmount": 0.0,
        **header,
    }  # fmt: skip
    async with engine.begin() as connection:
        doc_id = await connection.execute(insert(DOCUMENT_HEADERS).values(values).returning(DOCUMENT_HEADERS.c.ID))
        new_id = int(doc_id.scalar_one())
        if lines:
            blank = dict.fromkeys((c.name for c in DOCUMENT_ITEMS.columns if c.name != "ID"), None)
            rows = [{**blank, "DocID": new_id, **line} for line in lines]
            await connection.execute(insert(DOCUMENT_ITEMS), rows)
    return new_id


async def save(engine: AsyncEngine, doc_no: str, stamp: datetime, **columns: Any) -> None:
    """What a save in QuoteWerks does to the header: new values and a new change stamp."""
    async with engine.begin() as connection:
        await connection.execute(
            update(DOCUMENT_HEADERS).where(DOCUMENT_HEADERS.c.DocNo == doc_no).values(LastModified=stamp, **columns)
        )


async def header(engine: AsyncEngine, doc_no: str) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (await connection.execute(select(DOCUMENT_HEADERS).where(DOCUMENT_HEADERS.c.DocNo == doc_no))).one()
    return dict(row._mapping)
