"""Which customer of the other system a customer already is: keys tried in order, on normalised values.

The keys (`matching.keys` in customer-sync.yaml, in order; the first that finds anyone decides):
- `vat`: the VAT / organisation number (M3 VRNO; the QuoteWerks column named by `quotewerks_vat_column`), letters
  and digits only;
- `email`: the e-mail address, case aside;
- `name_and_place`: the normalised name, postal code and country all the same;
- `similar_name`: names alike by at least `similar_name_score` (rapidfuzz token_sort_ratio of the normalised names)
  in the same country and, where both have one, the same postal code.
A name is normalised: accents, case, punctuation and legal forms (AB, GmbH, Ltd, Inc., …) dropped, blanks folded.
Exactly one customer found by a key is the match; more than one is a candidate list for a person, never a guess.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MatchKey = Literal["vat", "email", "name_and_place", "similar_name"]
# Legal forms as they end (or start) company names; compared after normalisation (no dots, lower case).
LEGAL_FORMS = frozenset({
    "ab", "ag", "aps", "as", "asa", "bv", "co", "company", "corp", "corporation", "cv", "gmbh", "inc", "incorporated",
    "kft", "kg", "kk", "limited", "llc", "llp", "ltd", "nv", "oy", "oyj", "plc", "pty", "sa", "sarl", "sas", "se",
    "spa", "sro", "srl",
})  # fmt: skip


class MatchingRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: tuple[MatchKey, ...] = ("vat", "email", "name_and_place", "similar_name")
    similar_name_score: float = Field(90.0, ge=50, le=100)
    quotewerks_vat_column: str = Field("", max_length=64)
    legal_forms: tuple[str, ...] = Field((), description="More legal forms to drop from names, beyond the built-in.")


@dataclass(frozen=True)
class CustomerFacts:
    """What matching looks at, of one customer on either side (country as an ISO code)."""

    id: str
    name: str = ""
    email: str = ""
    postal_code: str = ""
    country: str = ""
    vat: str = ""


@dataclass(frozen=True)
class MatchResult:
    """`one`: `matches[0]` is the customer; `several`: candidates for a person; `none`: nobody alike."""

    status: Literal["one", "several", "none"]
    key: MatchKey | None = None
    matches: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def normalise_name(name: str, extra_legal_forms: Iterable[str] = ()) -> str:
    """ "Nordic Pump A.B." → "nordic pump"; "Müller & Söhne GmbH" → "muller sohne"."""
    forms = LEGAL_FORMS | {form.replace(".", "").casefold() for form in extra_legal_forms}
    words = re.sub(r"[^\w\s]", " ", _fold(name).replace(".", "")).split()
    kept = [word for word in words if word not in forms and word != "_"]
    return " ".join(kept or words)


def normalise_code(value: str) -> str:
    """Postal codes and VAT numbers: letters and digits only, upper case ("411 01" → "41101")."""
    return "".join(ch for ch in _fold(value) if ch.isalnum()).upper()


@dataclass
class _Prepared:
    facts: CustomerFacts
    name: str
    email: str
    postal: str
    country: str
    vat: str


def _prepare(facts: CustomerFacts, rules: MatchingRules) -> _Prepared:
    return _Prepared(
        facts,
        normalise_name(facts.name, rules.legal_forms),
        facts.email.strip().casefold(),
        normalise_code(facts.postal_code),
        facts.country.strip().upper(),
        normalise_code(facts.vat),
    )


def _compatible(a: str, b: str) -> bool:
    return not a or not b or a == b


class Matcher:
    """Matches customers against one side's customers (`pool`), prepared once."""

    def __init__(self, pool: Sequence[CustomerFacts], rules: MatchingRules) -> None:
        self.rules = rules
        self.pool = [_prepare(facts, rules) for facts in pool]

    def match(self, customer: CustomerFacts, *, exclude: Iterable[str] = ()) -> MatchResult:
        wanted = _prepare(customer, self.rules)
        skipped = set(exclude)
        pool = [entry for entry in self.pool if entry.facts.id not in skipped]
        for key in self.rules.keys:
            scores = self._by(key, wanted, pool)
            if len(scores) == 1:
                return MatchResult("one", key, tuple(scores), scores)
            if scores:
                ranked = tuple(sorted(scores, key=lambda found: (-scores[found], found)))
                return MatchResult("several", key, ranked, scores)
        return MatchResult("none")

    def _by(self, key: MatchKey, wanted: _Prepared, pool: list[_Prepared]) -> dict[str, float]:
        if key == "vat":
            return {e.facts.id: 100.0 for e in pool if wanted.vat and e.vat == wanted.vat}
        if key == "email":
            return {e.facts.id: 100.0 for e in pool if wanted.email and e.email == wanted.email}
        if key == "name_and_place":
            return {
                e.facts.id: 100.0
                for e in pool
                if wanted.name and e.name == wanted.name and e.postal == wanted.postal and e.country == wanted.country
            }
        found: dict[str, float] = {}
        if not wanted.name:
            return found
        # Imported here: only a similar-name search needs it, and a service process that never searches stays smaller.
        from rapidfuzz import fuzz

        for e in pool:
            if not e.name or not _compatible(e.country, wanted.country) or not _compatible(e.postal, wanted.postal):
                continue
            score = fuzz.token_sort_ratio(wanted.name, e.name)
            if score >= self.rules.similar_name_score:
                found[e.facts.id] = round(score, 1)
        return found
