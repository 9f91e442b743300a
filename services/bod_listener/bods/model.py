"""What reading a BOD gives: a `ParsedBod` with its `NormalizedEvent`s, or a `BodError` with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from shared.contracts.topics import Topic

Reason = Literal["malformed", "unknown_document", "unsupported_action", "invalid_content"]
Action = Literal["add", "change", "delete"]


class BodError(ValueError):
    """A BOD the bridge cannot read; `reason` is one of `Reason`, the message says what and where."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclass(frozen=True)
class NormalizedEvent:
    """One message for a bridge topic: the contract payload and its Kafka key."""

    topic: Topic
    payload: BaseModel
    key: str


@dataclass(frozen=True)
class ParsedBod:
    """One BOD read: its noun and verb, BODID, first document id and variation, and the events it gives."""

    noun: str
    verb: str
    bod_id: str
    document_id: str
    variation: int
    creation: datetime
    events: list[NormalizedEvent]
