"""The product as pushed to QuoteWerks, the sync's options, its ports (Protocols) and the stored fingerprints."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.m3.lease import Priority
from shared.platform.state import fingerprints

KIND = "product"
MARKER_KIND = "catalog-marker"
POLL_MARKER = "item-poll-since"  # the first change date (yyyy-mm-dd) the next LstItmByChgDate poll reads
RETIRED = "retired:"  # fingerprint prefix of a product deactivated because M3 no longer has the item
ACTIVE_STATUS = "20"
MAX_PROBLEMS = 20
FINGERPRINT_BATCH = 500  # fingerprints stored per transaction during a full load
PUSH_BATCH = 500  # products written to QuoteWerks per request (or transaction) during a full load
Path = Literal["data_lake", "mi"]


@dataclass
class SyncOptions:
    threshold: int = 2000
    warehouse: str = "100"
    price_list: str = "STD"
    currency: str = "EUR"
    push_concurrency: int = 8
    # Items per MMS200MI/LstItmByItm page when a full load pages MI (M3 answers 100 unless maxrecs says more).
    mi_page_size: int = 1000
    # A full load deactivates products whose item M3 no longer has, but never more than this share of the catalog
    # in one run: a wrong query or an emptied table must not switch off the whole QuoteWerks catalog.
    retire_limit: float = 0.1


# --- the product as pushed ---------------------------------------------------------------------------------------


def _decimal(value: object) -> Decimal:
    if value in (None, ""):
        return Decimal(0)
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        return Decimal(0)


@dataclass(frozen=True)
class Product:
    """A product is pushed when the sha256 of its pushed fields differs from the fingerprint stored for it (kind
    "product"); the fingerprint is stored only after QuoteWerks accepted the PUT, so a failed push is retried."""

    part: str
    description: str
    unit: str
    price: Decimal
    active: bool
    availability: int

    def fields(self) -> dict[str, object]:
        """The QuoteWerks PUT body: exactly the pushed fields."""
        return {
            "Description": self.description or self.part,
            "UnitOfMeasure": self.unit,
            "Price": float(self.price),
            "Active": self.active,
            "Availability": self.availability,
        }

    def fingerprint(self) -> str:
        canonical = {**self.fields(), "Price": str(self.price.quantize(Decimal("0.0001")))}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def product_from(item: Mapping[str, object], price: object, available: object, *, deleted: bool = False) -> Product:
    """M3 values (MITMAS/MMS200MI item, SAPR, AV01) → the product QuoteWerks gets. Active only when STAT is 20."""
    status = str(item.get("STAT") or "").strip()
    return Product(
        part=str(item.get("ITNO") or "").strip(),
        description=str(item.get("ITDS") or "").strip(),
        unit=str(item.get("UNMS") or "").strip(),
        price=_decimal(price),
        active=status == ACTIVE_STATUS and not deleted,
        availability=max(int(_decimal(available)), 0),
    )


def products_from(
    items: Iterable[Mapping[str, object]], price_of: Mapping[str, object], stock_of: Mapping[str, object]
) -> list[Product]:
    """One product per item number (the last row of a repeated one), with its price and stock looked up."""
    seen: dict[str, Product] = {}
    for item in items:
        part = str(item.get("ITNO") or "").strip()
        if part:
            seen[part] = product_from(item, price_of.get(part), stock_of.get(part))
    return list(seen.values())


# --- ports -------------------------------------------------------------------------------------------------------


class Catalog(Protocol):
    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool: ...
    async def put_products(self, products: Mapping[str, Mapping[str, object]]) -> set[str]: ...
    async def find_product(self, part: str) -> dict[str, Any] | None: ...
    async def all_products(self) -> list[dict[str, Any]]: ...


class M3(Protocol):
    async def execute(
        self, program: str, transaction: str, fields: Mapping[str, object] | None = None, *, priority: Priority,
        maxrecs: int = 100, returncols: Any = None,
    ) -> list[dict[str, Any]]: ...  # fmt: skip

    def list_all(
        self, program: str, transaction: str, fields: Mapping[str, object] | None = None, *, key_fields: Any,
        priority: Priority, page_size: int = 100,
    ) -> Any: ...  # fmt: skip

    async def bulk(self, program: str, transactions: Any, *, priority: Priority, chunk: int = 80) -> list[Any]: ...


class Lake(Protocol):
    async def query(self, sql: str) -> list[dict[str, Any]]: ...


class Fingerprints(Protocol):
    async def all(self) -> dict[str, str]: ...
    async def get(self, key: str) -> str | None: ...
    async def put(self, key: str, value: str) -> None: ...
    async def put_many(self, values: Mapping[str, str]) -> None: ...
    async def marker(self, name: str) -> str | None: ...
    async def set_marker(self, name: str, value: str) -> None: ...


class StoredFingerprints:
    """`shared.platform.state.fingerprints`, kind "product", plus reading them all at once for full loads, and the
    markers of the sync itself (kind "catalog-marker", e.g. the date the change poll has reached)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def all(self) -> dict[str, str]:
        return await fingerprints.all_of(self._engine, KIND)

    async def get(self, key: str) -> str | None:
        return await fingerprints.get(self._engine, KIND, key)

    async def put(self, key: str, value: str) -> None:
        await fingerprints.put(self._engine, KIND, key, value)

    async def put_many(self, values: Mapping[str, str]) -> None:
        await fingerprints.put_many(self._engine, KIND, values)

    async def marker(self, name: str) -> str | None:
        return await fingerprints.get(self._engine, MARKER_KIND, name)

    async def set_marker(self, name: str, value: str) -> None:
        await fingerprints.put(self._engine, MARKER_KIND, name, value)
