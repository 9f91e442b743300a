"""Shared value types of the M3 simulator: field definitions, results, NOKs, and the message codes we chose.

Where the real M3 message id is unknown (research §1.3/§3 only confirm `XAU0008` and the shape of a NOK) the codes
below are our own plausible picks, kept in one place so the bridge's tests can refer to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

# --- message codes ------------------------------------------------------------------------------------------------
# Confirmed (research §1.3 / §3): company denial.
CODE_COMPANY = "XAU0008"
# Confirmed as an example of "does not exist" in m3-mi-rest.md (`WCU0203` "Customer number C9 does not exist").
CODE_CUSTOMER_MISSING = "WCU0203"
# Our picks (the real ids are not documented in any source we have):
CODE_CUSTOMER_EXISTS = "WCU0205"  # Add with a CUNO that already exists
CODE_ITEM_MISSING = "WIT0203"  # item number does not exist
CODE_ITEM_STATUS = "WIT0205"  # item status does not allow sales (STAT 10 / 90)
CODE_WAREHOUSE_MISSING = "WWH0203"  # warehouse does not exist
CODE_ORDER_MISSING = "WOR0203"  # (temporary or final) order number does not exist
CODE_ORDER_STATE = "WOR0210"  # order is in a state that does not allow the transaction
CODE_LINE_MISSING = "WPO0203"  # order line does not exist
CODE_NO_LINES = "WOR0220"  # batch order has no lines (Confirm)
CODE_QUANTITY = "WOQ0201"  # ordered quantity must be greater than zero
CODE_PRICE_MISSING = "WPR0203"  # price list / price line does not exist
CODE_VALUE_INVALID = "WVA0001"  # a value outside its allowed set (e.g. TRTP not I/O)
CODE_PROGRAM_MISSING = "WMI0203"  # MRS001MI: program / transaction does not exist
# Input validation from metadata (our picks; the harness in research §1.3 names these situations only by @type):
CODE_UNKNOWN_FIELD = "WIN0001"  # input field is not an input of the transaction
CODE_TOO_LONG = "WIN0002"  # value longer than the field length
CODE_NOT_NUMERIC = "WIN0003"  # non-numeric value in an N field
CODE_BAD_DATE = "WIN0004"  # a D field that is not a valid yyyyMMdd date
CODE_MANDATORY = "WIN0005"  # a mandatory input field is missing or blank

NOK = "ServerReturnedNOK"
NOT_FOUND = "TransactionNotFound"


@dataclass(frozen=True)
class FieldDef:
    """One input or output field of a transaction, as MRS001MI/LstFields describes it."""

    name: str
    type: str  # "A" alphanumeric, "N" numeric, "D" date (yyyyMMdd)
    length: int
    description: str
    mandatory: bool = False


@dataclass(frozen=True)
class TransactionDef:
    program: str
    name: str
    description: str
    inputs: tuple[FieldDef, ...]
    outputs: tuple[FieldDef, ...]
    is_list: bool = False

    def input(self, name: str) -> FieldDef | None:
        return next((f for f in self.inputs if f.name == name), None)


@dataclass(frozen=True)
class ProgramDef:
    name: str
    description: str
    transactions: dict[str, TransactionDef]


@dataclass(frozen=True)
class MiError:
    """A NOK (or, with `type` = TransactionNotFound, an unknown program/transaction)."""

    message: str
    code: str | None = None
    field: str | None = None
    type: str = NOK


@dataclass
class MiResult:
    """What one MI transaction answered: output field metadata and records (values are unpadded strings), or a NOK."""

    program: str
    transaction: str
    metadata: list[FieldDef] = field(default_factory=list)
    records: list[dict[str, str]] = field(default_factory=list)
    error: MiError | None = None
    # v2 paging (`positionkey` header): set when a list stopped at maxrecs with more rows to come (opaque offset).
    next_position: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def not_found(self) -> bool:
        return self.error is not None and self.error.type == NOT_FOUND


class Nok(Exception):  # noqa: N818 - named after M3's own term
    """Raised by a handler to answer a NOK."""

    def __init__(self, message: str, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.error = MiError(message=message, code=code, field=field)


def fmt(value: object) -> str:
    """A wire string for a handler value: numbers as plain decimals, dates as yyyyMMdd, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        value = Decimal(str(value))
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return str(value.quantize(Decimal(1)))
        return format(value.normalize(), "f")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    return str(value)


def parse_date(text: str) -> date | None:
    """A yyyyMMdd date, or None when the text is not one."""
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
