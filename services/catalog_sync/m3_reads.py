"""The M3 reads the catalog runs share: one value per item through bulk calls, and one item's values by MI."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from services.catalog_sync.products import M3, SyncOptions
from shared.m3.errors import M3Error
from shared.m3.lease import Priority


class M3Reads:
    def __init__(self, m3: M3, options: SyncOptions) -> None:
        self.m3 = m3
        self.options = options

    # --- many items ---------------------------------------------------------------------------------------------

    async def per_item(
        self, program: str, transaction: str, items: list[str], fields: Mapping[str, object], column: str
    ) -> dict[str, object]:
        """One value per item through v2 bulk requests (80 items a Gateway call). An item M3 refuses (not stocked,
        no price) is left out and counts as 0; a transient failure of one fails the read, to be tried again."""
        outcomes = await self.m3.bulk(
            program, [(transaction, {**fields, "ITNO": itno}) for itno in items], priority=Priority.BULK
        )
        found: dict[str, object] = {}
        for itno, outcome in zip(items, outcomes, strict=True):
            if outcome.error is not None and outcome.error.retryable:
                raise outcome.error
            if outcome.error is None and outcome.records:
                found[itno] = outcome.records[0].get(column)
        return found

    async def stock_of(self, items: list[str]) -> dict[str, object]:
        return await self.per_item("MMS200MI", "GetItmWhsBal", items, {"WHLO": self.options.warehouse}, "AV01")

    # --- one item -----------------------------------------------------------------------------------------------

    async def item(self, itno: str) -> dict[str, Any]:
        record = await self.m3.execute("MMS200MI", "GetItmBasic", {"ITNO": itno}, priority=Priority.BULK, maxrecs=1)
        return record[0] if record else {"ITNO": itno}

    async def price(self, itno: str) -> object:
        o = self.options
        try:
            rows = await self.m3.execute(
                "OIS017MI", "GetBasePrice",
                {"PRRF": o.price_list, "CUCD": o.currency, "FVDT": date.today(), "ITNO": itno},
                priority=Priority.BULK, maxrecs=1,
            )  # fmt: skip
        except M3Error as exc:
            if exc.retryable:
                raise
            return 0  # no price on the list: pushed as 0 (QuoteWerks needs a number)
        return rows[0].get("SAPR") if rows else 0

    async def stock(self, itno: str) -> object:
        try:
            rows = await self.m3.execute(
                "MMS200MI", "GetItmWhsBal", {"WHLO": self.options.warehouse, "ITNO": itno},
                priority=Priority.BULK, maxrecs=1,
            )  # fmt: skip
        except M3Error as exc:
            if exc.retryable:
                raise
            return 0  # item not stocked in the warehouse
        return rows[0].get("AV01") if rows else 0
