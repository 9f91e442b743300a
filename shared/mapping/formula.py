"""The formula language of mapping rules: tokenizer, parser (`parse_formula`) and evaluator; never eval'd."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Protocol

_MAX_FORMULA_DEPTH = 20
_MAX_FORMULA_TOKENS = 200  # numbers, paths and operators: parsing and evaluating stay far from the recursion limit


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
        if len(self.tokens) > _MAX_FORMULA_TOKENS:
            raise ValueError(f"more than {_MAX_FORMULA_TOKENS} numbers, paths and operators")
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
        # A run of signs is read in a loop (not one call per sign) and becomes at most one negation.
        signs = negative = 0
        while self._peek() in ("-", "+"):
            negative ^= self.tokens[self.pos][1] == "-"
            signs += 1
            if signs > _MAX_FORMULA_DEPTH:
                raise ValueError(f"more than {_MAX_FORMULA_DEPTH} signs in a row")
            self.pos += 1
        operand = self._atom()
        return _Neg(operand) if negative else operand

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


class _Numbers(Protocol):
    """Where a formula's source paths get their values: the plan's context for one quote (and line or party)."""

    def number(self, path: str) -> Decimal | None: ...


def _evaluate(expr: _Expr, context: _Numbers) -> Decimal | None:
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
