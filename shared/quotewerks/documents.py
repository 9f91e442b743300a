"""QuoteWerks rows → the bridge's contracts: a document (`DocumentHeader`, `DocumentItems`) as an approved quote, a
contact as a party or a customer change, QuoteWerks' change stamps as times. Turned here, at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import ValidationError

from shared.contracts import Party, QuoteApproved, QuoteLine, QuoteWerksCustomerChanged

_PARTY_COLUMNS = {
    "company": "Company",
    "contact": "Contact",
    "title": "Title",
    "address1": "Address1",
    "address2": "Address2",
    "address3": "Address3",
    "city": "City",
    "state": "State",
    "postal_code": "PostalCode",
    "country": "Country",
    "phone_number": "PhoneNumber",
    "email": "Email",
    "cm_account_no": "CMAccountNo",
}


class DocumentError(ValueError):
    """The document cannot become a valid approved quote; the message says what is wrong."""


def _text(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value).strip()


def _decimal(row: Mapping[str, Any], column: str) -> Decimal | None:
    value = row.get(column)
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise DocumentError(f"{column} is not a number: {value!r}") from None


def _whole(row: Mapping[str, Any], column: str, default: int) -> int:
    value = row.get(column) or default
    text = str(value).strip().removeprefix("-") if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise DocumentError(f"{column} is not a whole number: {str(value)[:50]!r}")
    return int(value)


def _order(row: Mapping[str, Any], column: str) -> tuple[int, float | str]:
    """A sort key for SortOrder / ID whatever their type: numbers first, in order, then anything else as text."""
    value = row.get(column) or 0
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:  # not NaN
        return (0, value)  # int and float compare exactly, however large
    return (1, str(value))


def _party(header: Mapping[str, Any], prefix: str) -> Party:
    return Party.model_validate({field: _text(header, prefix + column) for field, column in _PARTY_COLUMNS.items()})


def parse_last_modified(value: Any) -> datetime | None:
    """A QuoteWerks `LastModified` (ISO 8601, `Z` or an offset; none = UTC) as an aware datetime, None if absent."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date(value: Any) -> date | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value)).date()
    except ValueError:
        return None


def quote_from_document(document: Mapping[str, Any], *, approval_event: str, approved_at: datetime) -> QuoteApproved:
    """A QuoteWerks document (header + items) as the `quotewerks.quote.approved.v1` contract."""
    header = document.get("DocumentHeader") or {}
    items = document.get("DocumentItems") or []
    if not isinstance(header, dict) or not isinstance(items, list):
        raise DocumentError("document without DocumentHeader / DocumentItems")
    rows = sorted((i for i in items if isinstance(i, dict)), key=lambda i: (_order(i, "SortOrder"), _order(i, "ID")))
    try:
        lines = [
            QuoteLine(
                line_type=_whole(row, "LineType", 1),
                line_attributes=_whole(row, "LineAttributes", 0),
                manufacturer_part_number=_text(row, "ManufacturerPartNumber"),
                description=_text(row, "Description"),
                qty_total=_decimal(row, "QtyTotal") or Decimal(0),
                unit_price=_decimal(row, "UnitPrice") or Decimal(0),
                unit_list=_decimal(row, "UnitList"),
                unit_cost=_decimal(row, "UnitCost"),
                discount_percent=_decimal(row, "DiscountPercent"),
                unit_of_measure=_text(row, "UnitOfMeasure"),
                vendor=_text(row, "Vendor"),
                manufacturer=_text(row, "Manufacturer"),
            )
            for row in rows
        ]
        return QuoteApproved(
            doc_no=_text(header, "DocNo"),
            id=header.get("ID"),
            doc_type=_text(header, "DocType") or "QUOTE",
            doc_status=_text(header, "DocStatus"),
            doc_name=_text(header, "DocName"),
            doc_date=_date(header.get("DocDate")),
            customer_po_number=_text(header, "CustomerPONumber"),
            sales_rep=_text(header, "SalesRep"),
            ship_via=_text(header, "ShipVia"),
            terms=_text(header, "Terms"),
            currency=_text(header, "AlternateCurrencyIdentifier")[:3],
            sold_to=_party(header, "SoldTo"),
            ship_to=_party(header, "ShipTo"),
            bill_to=_party(header, "BillTo"),
            sub_total=_decimal(header, "SubTotal"),
            total_tax=_decimal(header, "TotalTax"),
            shipping_amount=_decimal(header, "ShippingAmount"),
            grand_total=_decimal(header, "GrandTotal"),
            lines=lines,
            approved_at=approved_at.astimezone(UTC),
            approval_event=approval_event,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise DocumentError(f"document {_text(header, 'DocNo') or '?'} is not a valid quote: {problems}") from None


def party_from_contact(contact: Mapping[str, Any]) -> Party:
    """A contact-manager record (CMAccountNo, Company, Address1, …) as the contract's party."""
    return Party.model_validate({field: _text(contact, column) for field, column in _PARTY_COLUMNS.items()})


def customer_from_contact(
    contact: Mapping[str, Any],
    *,
    change: Literal["created", "updated"],
    changed_at: datetime,
    origin: str = "quotewerks",
) -> QuoteWerksCustomerChanged:
    try:
        return QuoteWerksCustomerChanged(
            customer_id=_text(contact, "CMAccountNo"),
            change=change,
            customer=party_from_contact(contact),
            changed_at=changed_at,
            origin=origin,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise DocumentError(f"customer is not valid: {problems}") from None
