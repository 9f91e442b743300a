"""Applying one section's field rules to one quote context: sources, conditions, formulas, lookups, lengths."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from shared.contracts import Party, QuoteApproved, QuoteLine
from shared.m3.metadata import to_wire
from shared.mapping.formula import _evaluate, parse_formula
from shared.mapping.results import Refusal
from shared.mapping.rules import _PARTIES, Condition, FieldRule, MappingRules, Section, SectionName

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")  # line breaks and tabs in QuoteWerks text become one space


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
