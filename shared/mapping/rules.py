"""The mapping rules model (pydantic): transactions, field rules, lookups, their validation and `load_rules`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.contracts import Party, QuoteApproved, QuoteLine
from shared.mapping.formula import _formula_paths, parse_formula
from shared.platform import rules_files

Transaction = Literal["CRS610MI/Add", "OIS100MI/AddBatchHead", "OIS100MI/AddBatchLine"]
CUSTOMER_ADD: Transaction = "CRS610MI/Add"
ORDER_HEAD: Transaction = "OIS100MI/AddBatchHead"
ORDER_LINE: Transaction = "OIS100MI/AddBatchLine"
ORDER_CONFIRM = "OIS100MI/Confirm"
TRANSACTIONS: tuple[Transaction, ...] = (CUSTOMER_ADD, ORDER_HEAD, ORDER_LINE)
SectionName = Literal["customer", "order_head", "order_line"]
_SECTION_TRANSACTION: dict[SectionName, Transaction] = {
    "customer": CUSTOMER_ADD,
    "order_head": ORDER_HEAD,
    "order_line": ORDER_LINE,
}
# Fields the code fills itself; rules may not target them.
_PROTECTED: dict[SectionName, frozenset[str]] = {
    "customer": frozenset(),
    "order_head": frozenset({"CUNO"}),
    "order_line": frozenset({"ORNO"}),
}

_PARTIES = ("sold_to", "ship_to", "bill_to")
_PARTY_FIELDS = frozenset(Party.model_fields)
_LINE_FIELDS = frozenset(QuoteLine.model_fields)
_QUOTE_SCALARS = frozenset(QuoteApproved.model_fields) - set(_PARTIES) - {"lines"}

_FIELD_CODE = r"^[A-Z][A-Z0-9]{3}$"


#: The batch order line field the bridge fills with the quote line number: how it tells, after a lost answer, which
#: lines a batch order already holds (OIS100MI/LstBatchLine returns it).
LINE_KEY = "CUPO"


class MappingRulesError(ValueError):
    """The mapping YAML is not valid; the message names each rule path at fault."""


# --- Rule models ------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, populate_by_name=True)


class Condition(_Strict):
    """`when:` — the rule applies only if the source value (as M3 wire text, case-insensitive) matches."""

    source: str
    equals: str | None = None
    not_equals: str | None = None
    in_: list[str] | None = Field(None, alias="in")
    not_empty: Literal[True] | None = None
    empty: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [
            name for name in ("equals", "not_equals", "in_", "not_empty", "empty") if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError("a condition needs exactly one of equals, not_equals, in, not_empty, empty")
        return self


class LookupTable(_Strict):
    """A value table, e.g. QuoteWerks ShipVia text → M3 delivery method (MODL)."""

    entries: dict[str, str]
    case_sensitive: bool = False
    on_unknown: Literal["default", "refuse", "keep", "omit"] = "refuse"
    default: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LookupTable:
        if self.on_unknown == "default" and self.default is None:
            raise ValueError("on_unknown: default needs a `default:` value")
        if not self.case_sensitive:
            seen: dict[str, str] = {}
            for key in self.entries:
                folded = key.casefold()
                if folded in seen:
                    raise ValueError(f"entries {seen[folded]!r} and {key!r} differ only in case")
                seen[folded] = key
        return self

    def resolve(self, value: str) -> str | None:
        if self.case_sensitive:
            return self.entries.get(value)
        folded = value.casefold()
        for key, mapped in self.entries.items():
            if key.casefold() == folded:
                return mapped
        return None


class FieldRule(_Strict):
    """How one M3 field gets its value. Exactly one of source, value, join, lines, formula."""

    target: str = Field(pattern=_FIELD_CODE)
    description: str = ""
    source: str | list[str] | None = None
    value: str | None = None
    join: list[str] | None = None
    separator: str = " "
    lines: list[str] | None = None
    formula: str | None = None
    decimals: int | None = Field(None, ge=0, le=6)
    lookup: str | None = None
    when: Condition | list[Condition] | None = None
    default: str | None = None
    required: bool = False
    on_too_long: Literal["truncate", "refuse", "split"] = "truncate"
    continue_in: list[str] = Field(default_factory=list)

    @field_validator("continue_in")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not re.match(_FIELD_CODE, code):
                raise ValueError(f"{code!r} is not an M3 field code")
        return value

    @field_validator("formula")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_formula(value)
            except ValueError as exc:
                raise ValueError(f"formula {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FieldRule:
        kinds = [k for k in ("source", "value", "join", "lines", "formula") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"needs exactly one of source, value, join, lines, formula (got {kinds or 'none'})")
        if self.on_too_long == "split" and not self.continue_in:
            raise ValueError("on_too_long: split needs `continue_in:` (the fields the text continues in)")
        if self.continue_in and self.on_too_long != "split" and self.lines is None:
            raise ValueError("continue_in is only used with on_too_long: split or with lines:")
        if self.formula is not None and (self.lookup or self.on_too_long == "split"):
            raise ValueError("a formula gives a number: no lookup, no split")
        if self.decimals is not None and self.formula is None:
            raise ValueError("decimals applies to formula results only")
        if self.lines is not None and self.lookup:
            raise ValueError("lines: cannot be combined with lookup")
        return self

    @property
    def conditions(self) -> list[Condition]:
        if self.when is None:
            return []
        return self.when if isinstance(self.when, list) else [self.when]

    def paths(self) -> list[str]:
        found: list[str] = []
        if isinstance(self.source, str):
            found.append(self.source)
        elif self.source is not None:
            found.extend(self.source)
        found.extend(self.join or [])
        found.extend(self.lines or [])
        if self.formula is not None:
            found.extend(_formula_paths(parse_formula(self.formula)))
        found.extend(condition.source for condition in self.conditions)
        return found


PartyName = Literal["sold_to", "bill_to", "ship_to"]
_DEFAULT_PARTY_ORDER: tuple[PartyName, ...] = ("sold_to", "bill_to", "ship_to")


class PartyChoice(_Strict):
    """Which QuoteWerks address block becomes the M3 customer: the first whose `chosen_by` field is not empty."""

    use_first_of: list[PartyName] = Field(default_factory=lambda: list(_DEFAULT_PARTY_ORDER), min_length=1)
    chosen_by: str = "company"

    @field_validator("chosen_by")
    @classmethod
    def _party_field(cls, value: str) -> str:
        if value not in _PARTY_FIELDS:
            raise ValueError(f"{value!r} is not a party field ({', '.join(sorted(_PARTY_FIELDS))})")
        return value


class LineSelection(_Strict):
    """What to do with quote lines that are neither plainly ordered nor plainly skipped."""

    percent_discount: Literal["refuse", "skip"] = "refuse"
    percent_charge: Literal["refuse", "skip"] = "refuse"
    zero_quantity: Literal["skip", "refuse", "order"] = "skip"


class Section(_Strict):
    fields: list[FieldRule] = Field(min_length=1)


class CustomerSection(Section):
    party: PartyChoice = Field(default_factory=PartyChoice)


class MappingRules(_Strict):
    """The whole mapping, validated when loaded (see `load_rules`)."""

    version: Literal[1]
    defaults: dict[str, str] = Field(default_factory=dict)
    lookups: dict[str, LookupTable] = Field(default_factory=dict)
    field_lengths: dict[Transaction, dict[str, int]] = Field(default_factory=dict)
    line_selection: LineSelection = Field(default_factory=LineSelection)
    customer: CustomerSection
    order_head: Section
    order_line: Section

    @model_validator(mode="after")
    def _cross_checks(self) -> MappingRules:
        problems: list[str] = []
        for section_name in _SECTION_TRANSACTION:
            section: Section = getattr(self, section_name)
            problems.extend(self._check_section(section_name, section))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _check_section(self, name: SectionName, section: Section) -> list[str]:
        transaction = _SECTION_TRANSACTION[name]
        lengths = self.field_lengths.get(transaction, {})
        problems: list[str] = []
        unconditional: set[str] = set()
        for index, rule in enumerate(section.fields):
            where = f"{name}.fields[{index}] ({rule.target})"
            if rule.target in _PROTECTED[name]:
                problems.append(f"{where}: {rule.target} is set by the order-writer itself, not by a rule")
            if rule.target in unconditional:
                problems.append(f"{where}: never applied, an earlier rule without `when:` already sets {rule.target}")
            if not rule.conditions:
                unconditional.add(rule.target)
            for code in [rule.target, *rule.continue_in]:
                if code not in lengths:
                    problems.append(f"{where}: no fallback length for {code} under field_lengths.{transaction}")
            if rule.lookup is not None and rule.lookup not in self.lookups:
                problems.append(f"{where}: lookup table {rule.lookup!r} is not defined under lookups")
            for path in rule.paths():
                error = _check_path(path, name, self.defaults)
                if error:
                    problems.append(f"{where}: {error}")
        if name in ("order_head", "order_line"):
            cuor = [rule for rule in section.fields if rule.target == "CUOR"]
            if not cuor or cuor[0].source != "doc_no" or cuor[0].conditions or cuor[0].on_too_long != "refuse":
                problems.append(
                    f"{name}: needs a rule `target: CUOR, source: doc_no, on_too_long: refuse` without `when:` "
                    "(the DocNo in CUOR is the bridge's idempotency key in M3)"
                )
        if name == "order_line" and any(rule.target == LINE_KEY for rule in section.fields):
            problems.append(
                f"order_line: {LINE_KEY} is set by the bridge (the quote line number, its key for each batch order "
                "line in M3); remove the rule"
            )
        return problems


def _check_path(path: str, section: SectionName, defaults: Mapping[str, str]) -> str | None:
    """None if `path` names a value available in this section, else why not."""
    parts = path.split(".")
    root = parts[0]
    if root == "defaults":
        if len(parts) != 2 or parts[1] not in defaults:
            return f"path {path!r}: no such constant under defaults"
        return None
    if root == "party":
        if section != "customer":
            return f"path {path!r}: `party.` is only available in the customer section"
        if len(parts) != 2 or parts[1] not in _PARTY_FIELDS:
            return f"path {path!r}: not a party field"
        return None
    if root == "lines[]":
        if section != "order_line":
            return f"path {path!r}: `lines[].` is only available in order_line rules"
        if len(parts) != 2 or parts[1] not in _LINE_FIELDS:
            return f"path {path!r}: not a quote line field ({', '.join(sorted(_LINE_FIELDS))})"
        return None
    if root in _PARTIES:
        if len(parts) != 2 or parts[1] not in _PARTY_FIELDS:
            return f"path {path!r}: not a party field ({', '.join(sorted(_PARTY_FIELDS))})"
        return None
    if len(parts) == 1 and root in _QUOTE_SCALARS:
        return None
    return f"path {path!r}: not a quote field"


def rules_from_data(data: object, *, origin: str = "<rules>") -> MappingRules:
    """Validate already-parsed YAML data; MappingRulesError names each rule path at fault."""
    return rules_files.validated(MappingRules, data, error=MappingRulesError, what="order mapping", origin=origin)


def load_rules(path: str | Path) -> MappingRules:
    """Read and validate the mapping YAML. Call at start-up: a bad file stops the service with a clear message."""
    return rules_files.load(MappingRules, path, error=MappingRulesError, what="order mapping")


def country_table(rules: MappingRules) -> LookupTable | None:
    """The lookup the order mapping uses for CSCD (QuoteWerks country text → M3 country code), if any."""
    section = rules.customer
    for rule in section.fields if section is not None else []:
        if rule.target == "CSCD" and rule.lookup is not None:
            return rules.lookups.get(rule.lookup)
    return None
