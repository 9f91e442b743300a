"""The catalog compared with M3: what QuoteWerks holds now, product by product, against what M3's items say it
should hold.

A full load pushes what changed since the bridge last pushed it (its fingerprints); a product someone edited in
QuoteWerks since, or one whose push was lost, stays different until M3 changes it again. The reconciliation reads
QuoteWerks' products instead of the fingerprints: each M3 item whose product is missing or has other values (by
field) is a difference, and is pushed again unless it is a dry run (then the fingerprints are brought up to date
too). Products QuoteWerks has that M3 no longer has are the full load's to deactivate (`_retire`), as ever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from prometheus_client import Gauge

from services.catalog_sync.products import MAX_PROBLEMS, Product
from shared.contracts import Problem

catalog_differences = Gauge(
    "m3bridge_catalog_differences",
    "Products the last catalog reconciliation found different from M3 (missing in QuoteWerks, or with other "
    "values) and left so: a dry run, or a push that failed.",
)


def _number(value: object) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(-1)  # not a number: never equal to M3's


def as_in_quotewerks(part: str, row: Mapping[str, Any]) -> Product:
    """A QuoteWerks product row as the Product the bridge would have pushed to get it."""
    try:
        availability = int(_number(row.get("Availability")))
    except (ValueError, ArithmeticError):
        availability = -1
    return Product(
        part=part,
        description=str(row.get("Description") or ""),
        unit=str(row.get("UnitOfMeasure") or ""),
        price=_number(row.get("Price")),
        active=bool(row.get("Active")),
        availability=availability,
    )


def differing_fields(ours: Product, theirs: Product) -> list[str]:
    mine, found = ours.fields(), theirs.fields()
    names = [name for name in mine if name != "Price" and mine[name] != found[name]]
    if ours.price.quantize(Decimal("0.0001")) != theirs.price.quantize(Decimal("0.0001")):
        names.append("Price")
    return names


def compare(
    products: Iterable[Product], rows: Iterable[Mapping[str, Any]], counts: dict[str, int], problems: list[Problem]
) -> dict[str, str]:
    """M3's products against QuoteWerks' rows: counts `missing`, `differs` and `same`, a problem per difference
    (up to MAX_PROBLEMS), and the fingerprint of what QuoteWerks holds per part (the `known` a push compares with,
    so exactly the differences are pushed)."""
    by_part = {str(row.get("ManufacturerPartNumber") or ""): row for row in rows}
    known: dict[str, str] = {}
    for product in products:
        row = by_part.get(product.part)
        if row is None:
            counts["missing"] = counts.get("missing", 0) + 1
            message = f"{product.part}: missing in QuoteWerks"
        else:
            theirs = as_in_quotewerks(product.part, row)
            known[product.part] = theirs.fingerprint()
            fields = differing_fields(product, theirs)
            if not fields:
                counts["same"] = counts.get("same", 0) + 1
                continue
            counts["differs"] = counts.get("differs", 0) + 1
            found, wanted = theirs.fields(), product.fields()
            changes = ", ".join(f"{name} {found[name]!r} (M3: {wanted[name]!r})" for name in fields)
            message = f"{product.part}: {changes}"
        if len(problems) < MAX_PROBLEMS:
            problems.append(Problem(error_class="validation", message=message[:2000]))
    return known
