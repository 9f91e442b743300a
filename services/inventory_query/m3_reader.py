"""The M3 edge of inventory-query: stock from MMS200MI/GetItmWhsBal, base price from OIS017MI/GetBasePrice,
at interactive priority (a rep is waiting), and the whole price list from OIS017MI/LstBasePrice at bulk priority;
M3 errors mapped to what the answer logic acts on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from services.inventory_query.availability import (
    InvalidQueryError,
    NotFoundError,
    PriceReading,
    StockReading,
    UnreachableError,
)
from shared.m3 import M3Client
from shared.m3.errors import M3BusinessError, M3Error, M3InputError
from shared.m3.lease import LeaseError, Priority

log = logging.getLogger(__name__)

STOCK = ("MMS200MI", "GetItmWhsBal")
PRICE = ("OIS017MI", "GetBasePrice")
PRICE_LIST = ("OIS017MI", "LstBasePrice")


def _today() -> date:
    return datetime.now(UTC).date()


class M3Reader:
    def __init__(
        self,
        m3: M3Client,
        *,
        price_list: str,
        currency: str,
        price_valid_from: date | None = None,
        today: Callable[[], date] = _today,
    ) -> None:
        self._m3 = m3
        self._price_list = price_list
        self._currency = currency
        self._price_valid_from = price_valid_from
        self._today = today

    async def stock(self, item: str, warehouse: str) -> StockReading:
        try:
            record = await self._m3.execute_one(
                *STOCK, {"WHLO": warehouse, "ITNO": item}, priority=Priority.INTERACTIVE
            )
        except M3BusinessError as exc:  # a Get answers NOK when the item (or warehouse) does not exist
            raise NotFoundError(exc.m3_message) from exc
        except M3InputError as exc:
            raise InvalidQueryError(str(exc)) from exc
        except (M3Error, LeaseError) as exc:
            raise UnreachableError(_reason(exc)) from exc
        if record is None:
            raise NotFoundError(f"Item {item} has no balance in warehouse {warehouse}")
        return StockReading(on_hand=_decimal(record.get("STQT")), allocatable=_decimal(record.get("AV01")))

    async def price_list(self) -> dict[str, PriceReading]:
        """Every item's base price in the configured list, in one call at bulk priority (nobody waits for it):
        what the cache answers prices from between two reads of the list."""
        fields = {"PRRF": self._price_list, "CUCD": self._currency, "FVDT": self._price_valid_from or self._today()}
        try:
            rows = await self._m3.execute(*PRICE_LIST, fields, priority=Priority.BULK, maxrecs=0)
        except (M3Error, LeaseError) as exc:
            raise UnreachableError(_reason(exc)) from exc
        prices: dict[str, PriceReading] = {}
        for row in rows:
            item = str(row.get("ITNO") or "").strip()
            if item and not str(row.get("CUNO") or "").strip() and row.get("SAPR") not in (None, ""):
                prices[item] = PriceReading(_decimal(row.get("SAPR")), str(row.get("CUCD") or self._currency))
        return prices

    async def price(self, item: str) -> PriceReading:
        # GetBasePrice wants the price list's from-date (FVDT); M3 takes the list valid on that date, so
        # "today" finds the current one unless a fixed from-date is configured.
        fields = {
            "PRRF": self._price_list,
            "CUCD": self._currency,
            "FVDT": self._price_valid_from or self._today(),
            "ITNO": item,
        }
        try:
            record = await self._m3.execute_one(*PRICE, fields, priority=Priority.INTERACTIVE)
        except M3BusinessError as exc:  # no price for this item in the list: an answer, not a failure
            return PriceReading(None, None, f"no price in list {self._price_list}: {exc.m3_message}")
        except M3InputError as exc:
            raise InvalidQueryError(str(exc)) from exc
        except (M3Error, LeaseError) as exc:
            raise UnreachableError(_reason(exc)) from exc
        if record is None or record.get("SAPR") in (None, ""):
            return PriceReading(None, None, f"no price in list {self._price_list}")
        return PriceReading(_decimal(record.get("SAPR")), str(record.get("CUCD") or self._currency))


def _reason(exc: Exception) -> str:
    kind = getattr(exc, "error_class", "lease") if isinstance(exc, M3Error) else "lease"
    return f"{kind}: {exc}"


def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value).strip() or "0")
    except InvalidOperation:
        log.warning("M3 sent a non-numeric quantity %r; read as 0", value)
        return Decimal(0)
