"""The two sides of a linked customer as the merge meets them: the QuoteWerks contacts and the M3 customer it reads
and writes, how an M3 value is spelled in a QuoteWerks column (countries through the mapping's lookup), which
spellings are the same value, CRS610MI's field lengths, and a QuoteWerks party as the quote the mapping plans a new
M3 customer from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.contracts import (
    LineType,
    Party,
    QuoteApproved,
    QuoteLine,
)
from shared.customers import (
    FieldName,
    State,
    clean,
)
from shared.m3.lease import Priority
from shared.mapping import LookupTable

PRIORITY = Priority.BULK  # catalog-sync's bound (M3B_CALLER_PRIORITIES); customer edits can wait for orders and reps
QUOTEWERKS_COLUMNS: dict[FieldName, tuple[str, ...]] = {
    "name": ("Company",),
    "address": ("Address1", "Address2", "Address3"),
    "city": ("City",),
    "postal_code": ("PostalCode",),
    "country": ("Country",),
    "phone": ("PhoneNumber",),
    "email": ("Email",),
}

WRITABLE_COLUMNS = (
    "Company", "Contact", "Address1", "Address2", "Address3", "City", "State", "PostalCode", "Country",
    "PhoneNumber", "Email",
)  # fmt: skip
# CRS610MI/GetBasicData lengths: a QuoteWerks value longer than M3 holds is the same value cut to M3's length.
M3_LENGTHS: dict[FieldName, int] = {"name": 36, "city": 20, "postal_code": 10, "phone": 16, "email": 50}


class Contacts(Protocol):
    """The QuoteWerks side (`shared.quotewerks.QuoteWerksClient`)."""

    async def find_customer(self, account: str) -> dict[str, Any] | None: ...
    async def customers(self) -> list[dict[str, Any]]: ...
    async def put_customer(
        self, account: str, fields: Mapping[str, str], *, read_as: str | None = None, new: bool = False
    ) -> bool: ...


class CustomerM3(Protocol):
    """The M3 client (`shared.m3.M3Client`), as far as customers need it."""

    async def metadata(self, program: str, transaction: str, *, priority: Priority) -> Any: ...
    async def execute(
        self, program: str, transaction: str, fields: Mapping[str, object] | None = None, *, priority: Priority
    ) -> Any: ...
    async def execute_one(
        self, program: str, transaction: str, fields: Mapping[str, object] | None = None, *, priority: Priority
    ) -> Mapping[str, Any] | None: ...


def quotewerks_country(code: str, current: str, table: LookupTable | None) -> str:
    """M3's country code as QuoteWerks text: the current text when it already means that code (so "Sverige" stays
    "Sverige" for SE), else the first name the table gives the code, else the code itself."""
    if not code:
        return ""
    if current and (current.casefold() == code.casefold() or (table is not None and table.resolve(current) == code)):
        return current
    if table is not None:
        for name, mapped in table.entries.items():
            if mapped == code:
                return name
    return code


def quotewerks_columns(m3: State, current: Mapping[str, object], table: LookupTable | None) -> dict[
    FieldName, dict[str, str]
]:  # fmt: skip
    """Each synced field of an M3 customer (`m3_state` form) as the QuoteWerks columns it becomes. M3 has four
    address lines, QuoteWerks three: the fourth continues the third."""
    lines = [line for line in m3["address"].split("\n") if line]
    address = [*lines[:2], ", ".join(lines[2:])] if len(lines) > 3 else list(lines)
    address += [""] * (3 - len(address))
    return {
        "name": {"Company": m3["name"]},
        "address": dict(zip(QUOTEWERKS_COLUMNS["address"], address, strict=True)),
        "city": {"City": m3["city"]},
        "postal_code": {"PostalCode": m3["postal_code"]},
        "country": {"Country": quotewerks_country(m3["country"], clean(current.get("Country")), table)},
        "phone": {"PhoneNumber": m3["phone"]},
        "email": {"Email": m3["email"]},
    }


def equivalent(table: LookupTable | None) -> Callable[[FieldName, str, str], bool]:
    """Whether an M3 value and a QuoteWerks value of one field mean the same: case and blanks aside, a country text
    that the lookup resolves to the code, address lines however they are split, a QuoteWerks value M3 holds cut to
    its field length."""

    def same(name: FieldName, m3: str, quotewerks: str) -> bool:
        if name == "country":
            resolved = table.resolve(quotewerks) if table is not None and quotewerks else None
            return m3.casefold() == (resolved or quotewerks).casefold()
        if name == "address":
            m3, quotewerks = ", ".join(m3.split("\n")), ", ".join(quotewerks.split("\n"))
        a, b = m3.casefold(), quotewerks.casefold()
        length = M3_LENGTHS.get(name)
        return a == b or (length is not None and len(a) == length and b[:length].rstrip() == a.rstrip())

    return same


def crs610_lengths(m3: CustomerM3) -> Callable[[], Awaitable[Mapping[str, Mapping[str, int]]]]:
    """CRS610MI input lengths from M3's API repository for the mapping's length rules, read once when first needed."""
    known: dict[str, dict[str, int]] = {}

    async def lengths() -> Mapping[str, Mapping[str, int]]:
        if not known:
            for transaction in ("Add", "ChgBasicData"):
                metadata = await m3.metadata("CRS610MI", transaction, priority=PRIORITY)
                if metadata is not None:
                    known[f"CRS610MI/{transaction}"] = {name: spec.length for name, spec in metadata.inputs.items()}
        return known

    return lengths


def party_quote(account: str, party: Party) -> QuoteApproved:
    """A QuoteWerks customer as the quote `plan_customer` maps (the customer as sold-to)."""
    return QuoteApproved(
        doc_no=f"customer {account}"[:50],
        sold_to=party.model_copy(update={"cm_account_no": account}),
        lines=[QuoteLine(line_type=LineType.COMMENT)],
        approved_at=datetime.now(UTC),
    )
