"""Declarative mapping of an approved QuoteWerks quote to the M3 calls that create the customer order.

The rules live in YAML (`deploy/config/order-mapping.yaml`) so integration teams can change them without code:
constants, lookup tables (ShipVia → MODL, Terms → TEPY, ...), and per-field rules for `CRS610MI/Add` (customer),
`OIS100MI/AddBatchHead` (order head) and `OIS100MI/AddBatchLine` (each order line). Everything here is a plain
function of (quote, rules, field lengths): no M3 calls, no I/O except reading the YAML file in `load_rules`.

A plan never raises for a bad quote: what cannot be mapped becomes a `Refusal`, and an order with refusals is held.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared import rules_files
from shared.contracts import LineAttribute, LineType, Party, QuoteApproved, QuoteLine
from shared.m3.metadata import to_wire

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
_MAX_FORMULA_DEPTH = 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")  # line breaks and tabs in QuoteWerks text become one space


#: The batch order line field the bridge fills with the quote line number: how it tells, after a lost answer, which
#: lines a batch order already holds (OIS100MI/LstBatchLine returns it).
LINE_KEY = "CUPO"


class MappingRulesError(ValueError):
    """The mapping YAML is not valid; the message names each rule path at fault."""


# --- Formulas: + - * / ( ), decimal numbers and source paths. Parsed, never eval'd. --------------------------


@dataclass(frozen=True)
class _Num:
    value: Decimal


@dataclass(frozen=True)
class _Ref:
    path: str


@dataclass(frozen=True)
class _Neg:
    operand: _Expr


@dataclass(frozen=True)
class _Bin:
    op: str
    left: _Expr
    right: _Expr


_Expr = _Num | _Ref | _Neg | _Bin

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)"
    r"|(?P<path>[a-z_][a-z0-9_]*(?:\[\])?(?:\.[A-Za-z_][A-Za-z0-9_]*(?:\[\])?)*)"
    r"|(?P<op>[-+*/()]))"
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            bad = text[pos:].lstrip()[:1]
            raise ValueError(f"unexpected character {bad!r} at position {pos}; only + - * / ( ), numbers and paths")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def parse(self) -> _Expr:
        if not self.tokens:
            raise ValueError("empty formula")
        expr = self._expr()
        if self.pos < len(self.tokens):
            raise ValueError(
                f"unexpected {self.tokens[self.pos][1]!r} (function calls and other syntax are not allowed)"
            )
        return expr

    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def _expr(self) -> _Expr:
        left = self._term()
        while self._peek() in ("+", "-"):
            op = self.tokens[self.pos][1]
            self.pos += 1
            left = _Bin(op, left, self._term())
        return left

    def _term(self) -> _Expr:
        left = self._unary()
        while self._peek() in ("*", "/"):
            op = self.tokens[self.pos][1]
            self.pos += 1
            left = _Bin(op, left, self._unary())
        return left

    def _unary(self) -> _Expr:
        if self._peek() in ("-", "+"):
            op = self.tokens[self.pos][1]
            self.pos += 1
            operand = self._unary()
            return _Neg(operand) if op == "-" else operand
        return self._atom()

    def _atom(self) -> _Expr:
        if self.pos >= len(self.tokens):
            raise ValueError("formula ends too early")
        kind, text = self.tokens[self.pos]
        self.pos += 1
        if kind == "num":
            return _Num(Decimal(text))
        if kind == "path":
            return _Ref(text)
        if text == "(":
            self.depth += 1
            if self.depth > _MAX_FORMULA_DEPTH:
                raise ValueError(f"more than {_MAX_FORMULA_DEPTH} nested parentheses")
            inner = self._expr()
            if self._peek() != ")":
                raise ValueError("missing ')'")
            self.pos += 1
            self.depth -= 1
            return inner
        raise ValueError(f"unexpected {text!r}")


@lru_cache(maxsize=512)
def parse_formula(text: str) -> _Expr:
    """Parse a formula; ValueError says what is wrong. Only arithmetic on numbers and source paths."""
    return _Parser(text).parse()


def _formula_paths(expr: _Expr) -> list[str]:
    if isinstance(expr, _Ref):
        return [expr.path]
    if isinstance(expr, _Neg):
        return _formula_paths(expr.operand)
    if isinstance(expr, _Bin):
        return _formula_paths(expr.left) + _formula_paths(expr.right)
    return []


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


# --- Plans ------------------------------------------------------------------------------------------------


class Refusal(BaseModel):
    """Something the mapping cannot do faithfully; the order must be held, not sent."""

    field: str
    value: str = ""
    rule: str = ""
    reason: str


class SkippedLine(BaseModel):
    source_line: int
    line_type: str
    reason: str


class PlannedLine(BaseModel):
    source_line: int = Field(description="Index in quote.lines.")
    fields: dict[str, str] = Field(description="OIS100MI/AddBatchLine inputs, without ORNO.")


class CustomerPlan(BaseModel):
    party: str = Field("", description="Which quote address block was used: sold_to, bill_to or ship_to.")
    fields: dict[str, str] = Field(default_factory=dict, description="CRS610MI/Add inputs.")
    notes: list[str] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)


class OrderPlan(BaseModel):
    doc_no: str
    revision: int = 0
    customer: CustomerPlan | None = Field(None, description="Set when the customer is to be created first.")
    head: dict[str, str] = Field(default_factory=dict, description="OIS100MI/AddBatchHead inputs.")
    lines: list[PlannedLine] = Field(default_factory=list)
    skipped: list[SkippedLine] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)

    @property
    def held(self) -> bool:
        """True if anything (order or customer) was refused: hold the order, do not call M3."""
        return bool(self.refusals or (self.customer is not None and self.customer.refusals))


# --- Evaluation -------------------------------------------------------------------------------------------


@dataclass
class _Context:
    quote: QuoteApproved
    defaults: Mapping[str, str]
    line: QuoteLine | None = None
    party: Party | None = None

    def raw(self, path: str) -> object:
        parts = path.split(".")
        root = parts[0]
        if root == "defaults":
            return self.defaults.get(parts[1])
        if root == "party":
            return getattr(self.party, parts[1]) if self.party is not None else None
        if root == "lines[]":
            return getattr(self.line, parts[1]) if self.line is not None else None
        if root in _PARTIES:
            return getattr(getattr(self.quote, root), parts[1])
        return getattr(self.quote, root)

    def text(self, path: str) -> str:
        value = self.raw(path)
        return "" if value is None else _CONTROL.sub(" ", _wire(value)).strip()

    def number(self, path: str) -> Decimal | None:
        value = self.raw(path)
        if value is None or value == "":
            return None
        if isinstance(value, Decimal):
            return value
        try:
            return Decimal(_wire(value).strip())
        except InvalidOperation:
            raise _NotANumberError(path, _wire(value)) from None


class _NotANumberError(Exception):
    def __init__(self, path: str, value: str) -> None:
        super().__init__(path, value)
        self.path = path
        self.value = value


def _wire(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))  # IntEnum (LineType) as its number
    text = to_wire(value)
    return "0" if text == "-0" else text


def _decimal_text(value: Decimal) -> str:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _evaluate(expr: _Expr, context: _Context) -> Decimal | None:
    """The formula's value, or None when a path has no value or a division by zero happens."""
    if isinstance(expr, _Num):
        return expr.value
    if isinstance(expr, _Ref):
        return context.number(expr.path)
    if isinstance(expr, _Neg):
        inner = _evaluate(expr.operand, context)
        return None if inner is None else -inner
    left = _evaluate(expr.left, context)
    right = _evaluate(expr.right, context)
    if left is None or right is None:
        return None
    if expr.op == "+":
        return left + right
    if expr.op == "-":
        return left - right
    if expr.op == "*":
        return left * right
    if right == 0:
        return None
    return left / right


def _matches(condition: Condition, context: _Context) -> bool:
    value = context.text(condition.source)
    if condition.not_empty:
        return value != ""
    if condition.empty:
        return value == ""
    folded = value.casefold()
    if condition.equals is not None:
        return folded == condition.equals.casefold()
    if condition.not_equals is not None:
        return folded != condition.not_equals.casefold()
    return folded in {option.casefold() for option in condition.in_ or []}


def _wrap(text: str, width: int) -> list[str]:
    """Cut text into pieces of at most `width`, at a space when there is one."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > width:
        cut = rest.rfind(" ", 0, width + 1)
        if cut <= 0:
            cut = width
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def _digits(text: str) -> int:
    return len(text.lstrip("-").replace(".", ""))


class _Builder:
    """Applies one section's rules to one context, collecting fields, notes and refusals."""

    def __init__(
        self,
        section: SectionName,
        rules: MappingRules,
        lengths: Mapping[str, int],
        context: _Context,
        label: str,
    ) -> None:
        self.section = section
        self.rules = rules
        self.lengths = lengths
        self.context = context
        self.label = label
        self.fields: dict[str, str] = {}
        self.notes: list[str] = []
        self.refusals: list[Refusal] = []

    def refuse(self, field: str, value: str, rule: str, reason: str) -> None:
        self.refusals.append(Refusal(field=field, value=value[:200], rule=rule, reason=f"{self.label}: {reason}"))

    def note(self, text: str) -> None:
        self.notes.append(f"{self.label}: {text}")

    def length(self, code: str) -> int:
        return self.lengths[code]

    def apply_all(self) -> None:
        section: Section = getattr(self.rules, self.section)
        for index, rule in enumerate(section.fields):
            self.apply(rule, f"{self.section}.fields[{index}]")

    def apply(self, rule: FieldRule, where: str) -> None:
        if rule.target in self.fields:
            return  # first match wins
        context = self.context
        try:
            if not all(_matches(condition, context) for condition in rule.conditions):
                return
            numeric = False
            if rule.lines is not None:
                texts = [context.text(path) for path in rule.lines]
                if any(texts):
                    self._place_lines(rule, where, texts)
                    return
                value = ""
            elif rule.value is not None:
                value = rule.value
            elif rule.source is not None:
                paths = [rule.source] if isinstance(rule.source, str) else rule.source
                value = next((text for text in map(context.text, paths) if text), "")
                numeric = any(isinstance(context.raw(path), Decimal) for path in paths)
            elif rule.join is not None:
                value = rule.separator.join(text for text in map(context.text, rule.join) if text)
            else:
                value = self._formula(rule, where)
                numeric = True
        except _NotANumberError as exc:
            self.refuse(rule.target, exc.value, where, f"{exc.path} is not a number")
            return
        if value and rule.lookup is not None:
            looked_up = self._lookup(rule, where, value)
            if looked_up is None:
                return
            value, numeric = looked_up, False
        if not value and rule.default is not None:
            value, numeric = rule.default, False
        if not value:
            if rule.required:
                self.refuse(rule.target, "", where, f"{rule.target} is required but the quote gives no value")
            return
        self._place(rule, where, value, numeric=numeric)

    def _formula(self, rule: FieldRule, where: str) -> str:
        assert rule.formula is not None
        result = _evaluate(parse_formula(rule.formula), self.context)
        if result is None:
            return ""
        if rule.decimals is not None:
            result = result.quantize(Decimal(1).scaleb(-rule.decimals), rounding=ROUND_HALF_UP)
            return _wire(result)
        return _decimal_text(result)

    def _lookup(self, rule: FieldRule, where: str, value: str) -> str | None:
        assert rule.lookup is not None
        table = self.rules.lookups[rule.lookup]
        mapped = table.resolve(value)
        if mapped is not None:
            return mapped
        if table.on_unknown == "default":
            assert table.default is not None
            self.note(f"{rule.target}: {value!r} is not in lookup {rule.lookup!r}; used its default {table.default!r}")
            return table.default
        if table.on_unknown == "keep":
            self.note(f"{rule.target}: {value!r} is not in lookup {rule.lookup!r}; sent as is")
            return value
        if table.on_unknown == "omit":
            self.note(f"{rule.target}: {value!r} is not in lookup {rule.lookup!r}; left out (M3 default applies)")
            return None
        self.refuse(rule.target, value, where, f"{value!r} is not in lookup table {rule.lookup!r}")
        return None

    def _place(self, rule: FieldRule, where: str, value: str, *, numeric: bool) -> None:
        target = rule.target
        limit = self.length(target)
        if numeric:
            if _digits(value) > limit:
                self.refuse(target, value, where, f"{_digits(value)} digits exceed the {limit} of {target}")
            else:
                self.fields[target] = value
            return
        if len(value) <= limit:
            self.fields[target] = value
            return
        if rule.on_too_long == "refuse":
            self.refuse(target, value, where, f"{len(value)} characters exceed the {limit} of {target}")
        elif rule.on_too_long == "truncate":
            self.fields[target] = value[:limit].rstrip()
            self.note(f"{target} truncated to {limit} characters: {value!r} → {self.fields[target]!r}")
        else:
            self._place_lines(rule, where, [value])

    def _place_lines(self, rule: FieldRule, where: str, texts: Sequence[str]) -> None:
        """Put texts one per field over target + continue_in; a too-long text continues in the next field."""
        slots = [code for code in [rule.target, *rule.continue_in] if code not in self.fields]
        names = "/".join([rule.target, *rule.continue_in])
        placed: dict[str, str] = {}
        for text in (t for t in texts if t):
            if not slots:
                if rule.on_too_long == "truncate":
                    self.note(f"{names}: no field left for {text!r}; left out")
                    continue
                self.refuse(rule.target, text, where, f"{text!r} does not fit: {names} are all used")
                return
            code = slots[0]
            limit = self.length(code)
            if len(text) <= limit:
                placed[code] = text
                slots.pop(0)
                continue
            if rule.on_too_long == "refuse":
                self.refuse(code, text, where, f"{len(text)} characters exceed the {limit} of {code}")
                return
            if rule.on_too_long == "truncate":
                placed[code] = text[:limit].rstrip()
                slots.pop(0)
                self.note(f"{code} truncated to {limit} characters: {text!r} → {placed[code]!r}")
                continue
            rest = text
            while rest:
                if not slots:
                    self.refuse(rule.target, text, where, f"{text!r} does not fit: {names} are all used")
                    return
                code = slots.pop(0)
                piece = _wrap(rest, self.length(code))[0]
                placed[code] = piece
                rest = rest.strip()[len(piece) :].strip()
            self.note(f"{names}: {text!r} was too long for one field and continues in the next")
        self.fields.update(placed)


def _merge_lengths(
    rules: MappingRules, given: Mapping[str, Mapping[str, int]], transaction: Transaction
) -> dict[str, int]:
    return {**rules.field_lengths.get(transaction, {}), **given.get(transaction, {})}


def select_lines(
    quote: QuoteApproved, selection: LineSelection
) -> tuple[list[int], list[SkippedLine], list[Refusal], list[str]]:
    """Which quote lines become order lines: (ordered indexes, skipped, refusals, notes)."""
    ordered: list[int] = []
    skipped: list[SkippedLine] = []
    refusals: list[Refusal] = []
    notes: list[str] = []
    group_unselected_by: int | None = None  # index of the unselected option group's header, while in it

    def skip(index: int, line: QuoteLine, reason: str) -> None:
        skipped.append(SkippedLine(source_line=index, line_type=line.line_type.name.lower(), reason=reason))

    for index, line in enumerate(quote.lines):
        attributes = line.line_attributes
        is_member = bool(attributes & LineAttribute.GROUP_MEMBER)
        unselected_option = bool(attributes & LineAttribute.OPTION) and not attributes & LineAttribute.OPTION_SELECTED
        kind = line.line_type
        if kind is LineType.GROUP_HEADER:
            group_unselected_by = index if unselected_option else None
            reason = (
                "unselected option group (header)" if unselected_option else "group header; its members are ordered"
            )
            skip(index, line, reason)
            continue
        if not is_member:
            group_unselected_by = None
        elif group_unselected_by is not None:
            skip(index, line, f"member of the unselected option group headed by line {group_unselected_by}")
            continue
        if kind is LineType.COMMENT:
            skip(index, line, "comment line")
        elif kind in (LineType.SUBTOTAL, LineType.RUNNING_SUBTOTAL):
            skip(index, line, "subtotal line")
        elif kind is LineType.HEADING:
            skip(index, line, "heading line")
        elif kind is LineType.SUMMARY:
            skip(index, line, "summary line")
        elif kind in (LineType.PERCENT_DISCOUNT, LineType.PERCENT_CHARGE):
            name = "percent discount" if kind is LineType.PERCENT_DISCOUNT else "percent charge"
            policy = selection.percent_discount if kind is LineType.PERCENT_DISCOUNT else selection.percent_charge
            if policy == "skip":
                skip(index, line, f"{name} line (line_selection says skip; the M3 order total will differ)")
                notes.append(f"line {index}: {name} line not ordered; the M3 order value differs from the quote")
            else:
                refusals.append(
                    Refusal(
                        field="",
                        value=line.description[:200],
                        rule=f"line_selection.{kind.name.lower()}",
                        reason=f"line {index}: a {name} line has no M3 order-line equivalent; price it by hand",
                    )
                )
        elif unselected_option:
            skip(index, line, "unselected option")
        elif line.qty_total == 0 and selection.zero_quantity != "order":
            if selection.zero_quantity == "skip":
                skip(index, line, "quantity 0")
            else:
                refusals.append(
                    Refusal(
                        field="ORQT",
                        value="0",
                        rule="line_selection.zero_quantity",
                        reason=f"line {index}: quantity 0",
                    )
                )
        else:
            ordered.append(index)
    return ordered, skipped, refusals, notes


def plan_customer(
    quote: QuoteApproved, rules: MappingRules, *, field_lengths: Mapping[str, Mapping[str, int]]
) -> CustomerPlan:
    """CRS610MI/Add inputs for the quote's customer, from the first address block the rules choose."""
    choice = rules.customer.party
    party_name = next((name for name in choice.use_first_of if getattr(getattr(quote, name), choice.chosen_by)), "")
    if not party_name:
        blocks = ", ".join(choice.use_first_of)
        return CustomerPlan(
            refusals=[
                Refusal(
                    field="",
                    rule="customer.party",
                    reason=f"customer: none of {blocks} has a {choice.chosen_by}; cannot create the customer",
                )
            ]
        )
    context = _Context(quote=quote, defaults=rules.defaults, party=getattr(quote, party_name))
    lengths = _merge_lengths(rules, field_lengths, CUSTOMER_ADD)
    builder = _Builder("customer", rules, lengths, context, "customer")
    builder.apply_all()
    notes = list(builder.notes)
    if party_name != choice.use_first_of[0]:
        notes.insert(0, f"customer: taken from {party_name} ({choice.use_first_of[0]} has no {choice.chosen_by})")
    return CustomerPlan(party=party_name, fields=builder.fields, notes=notes, refusals=builder.refusals)


def plan_order(
    quote: QuoteApproved,
    rules: MappingRules,
    *,
    customer_number: str,
    field_lengths: Mapping[str, Mapping[str, int]],
    customer: CustomerPlan | None = None,
) -> OrderPlan:
    """The OIS100MI calls for `quote`. Pass `customer` (from plan_customer) when the customer is created first;
    `customer_number` may then be empty: the number CRS610MI/Add returns goes into CUNO."""
    refusals: list[Refusal] = []
    head_lengths = _merge_lengths(rules, field_lengths, ORDER_HEAD)
    head = _Builder("order_head", rules, head_lengths, _Context(quote=quote, defaults=rules.defaults), "head")
    number = customer_number.strip()
    if number:
        limit = head_lengths.get("CUNO", 10)
        if len(number) > limit:
            head.refuse("CUNO", number, "customer_number", f"{len(number)} characters exceed the {limit} of CUNO")
        head.fields["CUNO"] = number
    elif customer is None:
        head.refuse("CUNO", "", "customer_number", "no M3 customer number and no customer to create")
    else:
        head.fields["CUNO"] = ""
    head.apply_all()

    ordered, skipped, line_refusals, notes = select_lines(quote, rules.line_selection)
    notes = [*head.notes, *notes]
    refusals = [*head.refusals, *line_refusals]
    planned: list[PlannedLine] = []
    line_lengths = _merge_lengths(rules, field_lengths, ORDER_LINE)
    for index in ordered:
        context = _Context(quote=quote, defaults=rules.defaults, line=quote.lines[index])
        builder = _Builder("order_line", rules, line_lengths, context, f"line {index}")
        builder.apply_all()
        builder.fields[LINE_KEY] = str(index + 1)
        planned.append(PlannedLine(source_line=index, fields=builder.fields))
        notes.extend(builder.notes)
        refusals.extend(builder.refusals)
    if not ordered:
        refusals.append(Refusal(field="", rule="line_selection", reason="the quote has no line to order"))
    return OrderPlan(
        doc_no=quote.doc_no,
        revision=quote.revision,
        customer=customer,
        head=head.fields,
        lines=planned,
        skipped=skipped,
        notes=notes,
        refusals=refusals,
    )


# --- Dry run ----------------------------------------------------------------------------------------------


def _fields_text(fields: Mapping[str, str]) -> str:
    return json.dumps(dict(fields), ensure_ascii=False)


def describe(plan: OrderPlan) -> str:
    """A human-readable dry run: the M3 calls in order, skipped lines, notes and refusals."""
    out: list[str] = []
    state = "HELD (refusals below): nothing would be sent to M3" if plan.held else "ready to send"
    out.append(f"Quote {plan.doc_no} revision {plan.revision}: {state}")
    out.append("M3 calls:")
    step = 0

    def call(name: str, fields: Mapping[str, str], comment: str = "") -> None:
        nonlocal step
        step += 1
        out.append(f"  {step}. {name} {_fields_text(fields)}{comment}")

    head = dict(plan.head)
    if plan.customer is not None:
        call(CUSTOMER_ADD, plan.customer.fields, f"  # from {plan.customer.party}" if plan.customer.party else "")
        if not head.get("CUNO"):
            head["CUNO"] = "<CUNO from CRS610MI/Add>"
    call(ORDER_HEAD, head)
    for line in plan.lines:
        call(ORDER_LINE, {"ORNO": "<ORNO from AddBatchHead>", **line.fields}, f"  # quote line {line.source_line}")
    call(ORDER_CONFIRM, {"ORNO": "<ORNO from AddBatchHead>"})
    if plan.skipped:
        out.append("Skipped quote lines:")
        out.extend(f"  - line {s.source_line} ({s.line_type}): {s.reason}" for s in plan.skipped)
    notes = [*(plan.customer.notes if plan.customer else []), *plan.notes]
    if notes:
        out.append("Notes:")
        out.extend(f"  - {note}" for note in notes)
    refusals = [*(plan.customer.refusals if plan.customer else []), *plan.refusals]
    if refusals:
        out.append("Refusals (the order is held):")
        for refusal in refusals:
            what = f"{refusal.field} " if refusal.field else ""
            value = f" (value {refusal.value!r})" if refusal.value else ""
            out.append(f"  - {what}[{refusal.rule}] {refusal.reason}{value}")
    return "\n".join(out)
