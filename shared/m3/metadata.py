"""M3 API metadata: the type, length and mandatory flag of each field of a transaction, from the API
repository (MRS001MI/LstFields), used to check inputs before calling and to type the outputs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal

from shared.m3.errors import M3InputError

FieldType = Literal["A", "N", "D"]
Value = str | Decimal | date | None
Record = dict[str, Value]

_NUMBER = re.compile(r"^-?\d*(\.\d+)?$")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: FieldType
    length: int
    mandatory: bool = False
    description: str = ""


@dataclass(frozen=True)
class TransactionMetadata:
    program: str
    transaction: str
    inputs: dict[str, FieldSpec] = field(default_factory=dict)
    outputs: dict[str, FieldSpec] = field(default_factory=dict)

    def encode_inputs(self, values: Mapping[str, object]) -> dict[str, str]:
        """The wire form of `values`, or M3InputError naming the first field that M3 would refuse."""
        where = {"program": self.program, "transaction": self.transaction}
        encoded: dict[str, str] = {}
        for name, value in values.items():
            spec = self.inputs.get(name)
            if spec is None:
                raise M3InputError(f"is not an input of {self.program}/{self.transaction}", field=name, **where)
            text = to_wire(value)
            check_value(spec, text, **where)
            encoded[name] = text
        for spec in self.inputs.values():
            if spec.mandatory and not encoded.get(spec.name):
                raise M3InputError("is mandatory", field=spec.name, **where)
        return encoded

    def decode_record(self, raw: Mapping[str, str]) -> Record:
        return {name: from_wire(self.outputs.get(name), text) for name, text in raw.items()}


def to_wire(value: object) -> str:
    """Python value → M3 wire string: dates yyyyMMdd, plain decimals (never exponents), text as is."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int | float):
        return format(Decimal(str(value)), "f")
    return str(value)


def check_value(spec: FieldSpec, text: str, *, program: str = "", transaction: str = "") -> None:
    where = {"program": program, "transaction": transaction}
    if spec.type == "N" and text:
        if not _NUMBER.match(text) or text in ("-", "."):
            raise M3InputError(f"{text!r} is not a number", field=spec.name, **where)
        digits = len(text.lstrip("-").replace(".", ""))
        if digits > spec.length:
            raise M3InputError(f"{digits} digits exceed the {spec.length} allowed", field=spec.name, **where)
        return
    if spec.type == "D" and text:
        try:
            datetime.strptime(text, "%Y%m%d")
        except ValueError:
            raise M3InputError(f"{text!r} is not a date (yyyyMMdd)", field=spec.name, **where) from None
        return
    if len(text) > spec.length:
        raise M3InputError(f"{len(text)} characters exceed the {spec.length} allowed", field=spec.name, **where)


def from_wire(spec: FieldSpec | None, text: str) -> Value:
    """M3 wire string → Python value by the field's type; unknown fields stay (trimmed) text."""
    text = text.rstrip()
    if spec is None or spec.type == "A":
        return text
    if spec.type == "N":
        if not text.strip():
            return None
        try:
            return Decimal(text.strip())
        except InvalidOperation:
            return text.strip()
    if not text.strip() or text.strip("0") == "":
        return None
    try:
        return datetime.strptime(text.strip(), "%Y%m%d").date()
    except ValueError:
        return text.strip()


def from_api_repository(
    program: str, transaction: str, inputs: list[Record], outputs: list[Record]
) -> TransactionMetadata:
    """Build metadata from MRS001MI/LstFields rows (FLNM, FLDS, LENG, TYPE, MAND) for TRTP I and O."""

    def specs(rows: list[Record]) -> dict[str, FieldSpec]:
        found: dict[str, FieldSpec] = {}
        for row in rows:
            name = str(row.get("FLNM") or "").strip()
            if not name:
                continue
            kind = str(row.get("TYPE") or "A").strip().upper()
            found[name] = FieldSpec(
                name=name,
                type=kind if kind in ("A", "N", "D") else "A",  # type: ignore[arg-type]
                length=int(Decimal(str(row.get("LENG") or 0))),
                mandatory=str(row.get("MAND") or "").strip() in ("1", "Y", "true"),
                description=str(row.get("FLDS") or "").strip(),
            )
        return found

    return TransactionMetadata(program, transaction, specs(inputs), specs(outputs))
