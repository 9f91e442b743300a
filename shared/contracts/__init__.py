"""Event contracts: the payloads on the bridge's topics.

These models are the contract: the AsyncAPI document in `docs/` is generated from them. Inside the bridge the
fields have readable names; on the wire, QuoteWerks-side payloads use QuoteWerks' own column names
(`DocNo`, `SoldToCompany` → `SoldTo.Company`, `ManufacturerPartNumber`, ...) so that another system
producing approved quotes can map from QuoteWerks directly. M3 field codes (CUNO, ITNO, ORNO) never appear
here: they belong to the M3 edge. Amounts and quantities are decimals, sent as JSON strings so nothing is
lost to floating point.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import Decimal
from enum import IntEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_pascal

from shared.contracts.availability import (
    AVAILABILITY_MAX_LINES as AVAILABILITY_MAX_LINES,
    AvailabilityAnswer as AvailabilityAnswer,
    AvailabilityQuery as AvailabilityQuery,
    AvailabilityReply as AvailabilityReply,
    AvailabilityRequest as AvailabilityRequest,
    ItemNumber as ItemNumber,
    LineProblem as LineProblem,
    LineResult as LineResult,
    Quantity as Quantity,
    Source as Source,
    Warehouse as Warehouse,
)
from shared.contracts.base import Contract, QuoteWerksContract
from shared.contracts.operations import AuditEvent as AuditEvent, DeadLetter as DeadLetter, Heartbeat as Heartbeat

# --- QuoteWerks side ------------------------------------------------------------------------------------


class LineType(IntEnum):
    """QuoteWerks `DocumentItems.LineType` values."""

    PRODUCT = 1
    COMMENT = 2
    SUBTOTAL = 4
    GROUP_HEADER = 8
    RUNNING_SUBTOTAL = 16
    PERCENT_DISCOUNT = 64
    PERCENT_CHARGE = 128
    HEADING = 256
    SUMMARY = 512


class LineAttribute(IntEnum):
    """Bits of QuoteWerks `DocumentItems.LineAttributes`."""

    EXCLUDE = 1
    HIDE_PRICE = 2
    DONT_PRINT = 4
    GROUP_MEMBER = 8
    OPTION = 16
    PRINT_PICTURE = 64
    RECURRING = 128
    OPTION_SELECTED = 256
    HIDE_QTY = 512


class Party(QuoteWerksContract):
    """A sold-to, ship-to or bill-to block of a QuoteWerks document (`SoldToCompany` → `SoldTo.Company`)."""

    company: str = Field("", max_length=255, description="Company name.")
    contact: str = Field("", max_length=255, description="Contact person.")
    title: str = Field("", max_length=255)
    address1: str = Field("", max_length=255)
    address2: str = Field("", max_length=255)
    address3: str = Field("", max_length=255)
    city: str = Field("", max_length=255)
    state: str = Field("", max_length=255)
    postal_code: str = Field("", max_length=64)
    country: str = Field("", max_length=255)
    phone_number: str = Field("", max_length=64)
    email: str = Field("", max_length=255)
    cm_account_no: str = Field(
        "",
        alias="CMAccountNo",
        max_length=64,
        description="Customer's account number in the contact manager/CRM.",
    )


class QuoteLine(QuoteWerksContract):
    """One `DocumentItems` row."""

    line_type: LineType = Field(LineType.PRODUCT, description="1 product/service, 2 comment, 4 subtotal, ...")
    line_attributes: int = Field(0, ge=0, description="Bit set of `LineAttribute` (option, group member, ...).")
    manufacturer_part_number: str = Field("", max_length=255, description="Part number; the M3 item for products.")
    description: str = Field("", max_length=4000)
    qty_total: Decimal = Field(Decimal(0), ge=0, description="Total quantity (base quantity times multipliers).")
    unit_price: Decimal = Field(Decimal(0), description="Selling price per unit after line discount.")
    unit_list: Decimal | None = Field(None, description="List price per unit.")
    unit_cost: Decimal | None = Field(None, description="Cost per unit.")
    discount_percent: Decimal | None = Field(
        None,
        ge=0,
        le=100,
        description="Line discount as a percentage of list, when the quote priced from list.",
    )
    unit_of_measure: str = Field("", max_length=32)
    vendor: str = Field("", max_length=255)
    manufacturer: str = Field("", max_length=255)


# What another system producing approved quotes sends (key: the DocNo; headers `correlation-id`, `source`).
QUOTE_APPROVED_EXAMPLE: dict[str, Any] = {
    "DocNo": "AAAQ1001",
    "Revision": 0,
    "DocType": "QUOTE",
    "DocStatus": "Accepted",
    "DocName": "Pump station spares",
    "DocDate": "2026-11-20",
    "CustomerPONumber": "PO-7781",
    "SalesRep": "Jane Miller",
    "ShipVia": "UPS Ground",
    "Terms": "Net 30",
    "Currency": "EUR",
    "SoldTo": {
        "Company": "Acme Industrial Ltd",
        "Contact": "Sam Buyer",
        "Address1": "1 Harbour Road",
        "City": "Springfield",
        "PostalCode": "12345",
        "Country": "US",
        "PhoneNumber": "+1 555 0100",
        "Email": "buyer@acme.example",
        "CMAccountNo": "C000001",
    },
    "ShipTo": {"Company": "Acme Industrial Ltd", "Address1": "Dock 4, 1 Harbour Road", "City": "Springfield"},
    "Lines": [
        {"LineType": 1, "ManufacturerPartNumber": "ITM000002", "Description": "Impeller", "QtyTotal": "2",
         "UnitPrice": "19.80", "UnitList": "22.00", "DiscountPercent": "10", "UnitOfMeasure": "PCS"},
        {"LineType": 2, "Description": "Deliver to dock 4"},
        {"LineType": 1, "ManufacturerPartNumber": "ITM000005", "Description": "Seal kit", "QtyTotal": "5",
         "UnitPrice": "4.50", "UnitOfMeasure": "PCS"},
    ],
    "SubTotal": "62.10",
    "GrandTotal": "62.10",
    "ApprovedAt": "2026-11-23T10:00:00Z",
    "ApprovalEvent": "QuoteValet.Accepted",
}  # fmt: skip


class QuoteApproved(QuoteWerksContract):
    """`quotewerks.quote.approved.v1`: a complete approved quote, header and lines. Any system may produce it."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        serialize_by_alias=True,
        alias_generator=to_pascal,
        json_schema_extra={"examples": [QUOTE_APPROVED_EXAMPLE]},
    )

    doc_no: str = Field(min_length=1, max_length=50, description="QuoteWerks document number (the message key).")
    revision: int = Field(0, ge=0, description="Revision of the document; a newer revision supersedes older ones.")
    id: int | None = Field(None, alias="ID", description="`DocumentHeaders.ID`, when known.")
    doc_type: Literal["QUOTE", "ORDER", "INVOICE"] = "QUOTE"
    doc_status: str = Field("", max_length=64, description="Free-text status as configured in QuoteWerks.")
    doc_name: str = Field("", max_length=255)
    doc_date: date | None = None
    customer_po_number: str = Field("", alias="CustomerPONumber", max_length=64)
    sales_rep: str = Field("", max_length=255)
    ship_via: str = Field("", max_length=255, description="Shipping method text; mapped to an M3 delivery method.")
    terms: str = Field("", max_length=255)
    currency: str = Field("", max_length=3, description="ISO currency code; empty means the customer's currency.")
    sold_to: Party = Field(default_factory=Party)
    ship_to: Party = Field(default_factory=Party)
    bill_to: Party = Field(default_factory=Party)
    sub_total: Decimal | None = None
    total_tax: Decimal | None = None
    shipping_amount: Decimal | None = None
    grand_total: Decimal | None = None
    lines: list[QuoteLine] = Field(min_length=1, description="The document's items in order.")
    approved_at: datetime = Field(description="When the approval happened (UTC).")
    approval_event: str = Field(
        "", max_length=128, description="What signalled the approval, e.g. `QuoteValet.Accepted` or `poller`."
    )

    def content_fingerprint(self) -> str:
        """What would be ordered (customer, lines, totals, terms, ...), not when or how it was approved nor its
        free-text status (the bridge's own write-back may set that): two approvals of a document are one approval
        when this is the same."""
        content = self.model_dump_json(exclude={"approved_at", "approval_event", "doc_status"})
        return hashlib.sha256(content.encode()).hexdigest()


class QuoteWerksCustomerChanged(QuoteWerksContract):
    """`quotewerks.customer.changed.v1`: a customer created or changed in QuoteWerks."""

    customer_id: str = Field(min_length=1, max_length=64, description="QuoteWerks customer id (the message key).")
    change: Literal["created", "updated"]
    customer: Party
    changed_at: datetime
    origin: str = Field(
        "quotewerks",
        max_length=64,
        description="Who made the change; `m3bridge` marks the bridge's own writes.",
    )


# --- M3 side --------------------------------------------------------------------------------------------


class Problem(Contract):
    """Why something did not go through, in words a person can act on."""

    error_class: Literal[
        "authorization",
        "business",
        "validation",
        "throttled",
        "unauthorized",
        "transient",
        "not_found",
        "mapping",
    ]
    message: str = Field(max_length=2000)
    code: str = Field("", max_length=32, description="M3 message id, e.g. `WCU0203`, when M3 gave one.")
    field: str = Field("", max_length=32, description="The M3 field at fault, when known.")
    program: str = Field("", max_length=16)
    transaction: str = Field("", max_length=32)


class OrderResult(Contract):
    """`m3.order.result.v1`: what became of an approved quote in M3."""

    doc_no: str = Field(min_length=1, max_length=50, description="QuoteWerks document number (the message key).")
    revision: int = Field(0, ge=0)
    outcome: Literal["created", "held", "failed"]
    order_number: str = Field("", max_length=10, description="M3 customer order number when created.")
    order_status: str = Field("", max_length=2, description="M3 order status code when created.")
    customer_number: str = Field("", max_length=10, description="M3 customer the order was written for.")
    lines_written: int = Field(0, ge=0)
    problems: list[Problem] = Field(default_factory=list, description="Why it was held or failed.")
    decided_at: datetime


class OrderStatusChanged(Contract):
    """`m3.order.status.v1`: an M3 customer order changed status."""

    order_number: str = Field(min_length=1, max_length=10, description="M3 order number (the message key).")
    customer_order_number: str = Field("", max_length=20, description="The customer's reference: our DocNo.")
    customer_number: str = Field("", max_length=10)
    status: str = Field(
        max_length=20,
        description="M3 order status code (lowest line status, e.g. 22, 33) when the BOD carries it, else Infor's "
        "status text (e.g. Open).",
    )
    highest_status: str = Field("", max_length=2)
    changed_at: datetime
    bod_id: str = Field("", max_length=500)


class ItemChanged(Contract):
    """`m3.item.changed.v1`: an item master record changed in M3."""

    item_number: str = Field(min_length=1, max_length=15, description="M3 item number (the message key).")
    action: Literal["add", "change", "delete"]
    description: str = Field("", max_length=60)
    long_description: str = Field("", max_length=120)
    unit_of_measure: str = Field("", max_length=3)
    item_group: str = Field("", max_length=8)
    item_type: str = Field("", max_length=3)
    status: str = Field("", max_length=2, description="M3 item status: 20 = active; others are not sellable.")
    changed_at: datetime
    variation: int = Field(0, ge=0, description="Increases with each change of the same item; older ones are stale.")


class PriceChanged(Contract):
    """`m3.price.changed.v1`: a sales price changed in M3."""

    item_number: str = Field(min_length=1, max_length=15, description="M3 item number (the message key).")
    price_list: str = Field("", max_length=10)
    currency: str = Field("", max_length=3)
    customer_number: str = Field("", max_length=10, description="Set for customer-specific prices.")
    sales_price: Decimal
    valid_from: date | None = None
    changed_at: datetime


class InventoryChanged(Contract):
    """`m3.inventory.changed.v1`: the stock balance of an item in a warehouse changed."""

    item_number: str = Field(min_length=1, max_length=15)
    warehouse: str = Field(min_length=1, max_length=3)
    on_hand: Decimal
    allocatable: Decimal
    allocated: Decimal = Decimal(0)
    changed_at: datetime


class M3CustomerChanged(Contract):
    """`m3.customer.changed.v1`: a customer record changed in M3."""

    customer_number: str = Field(min_length=1, max_length=10, description="M3 customer number (the message key).")
    action: Literal["add", "change", "delete"]
    name: str = Field("", max_length=36)
    address_lines: list[str] = Field(default_factory=list, max_length=4)
    town: str = Field("", max_length=20)
    postal_code: str = Field("", max_length=10)
    country: str = Field("", max_length=3)
    phone: str = Field("", max_length=16)
    email: str = Field("", max_length=50)
    status: str = Field("", max_length=2)
    changed_at: datetime
    origin: str = Field("m3", max_length=64, description="`m3bridge` marks changes the bridge itself wrote.")


class CatalogSyncReport(Contract):
    """`catalog.sync.report.v1`: what one catalog synchronisation run did."""

    run_id: str = Field(min_length=1, max_length=64)
    mode: Literal["full", "delta", "poll", "reconcile"] = Field(
        description="full: the whole catalog, what changed since the last push; delta/poll: changed items; "
        "reconcile: the whole catalog against what QuoteWerks holds now (counts missing, differs, same)."
    )
    path: Literal["data_lake", "mi", "events"]
    path_reason: str = Field("", max_length=500, description="Why this path was chosen.")
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int] = Field(default_factory=dict, description="created/updated/unchanged/failed per kind.")
    problems: list[Problem] = Field(default_factory=list)
