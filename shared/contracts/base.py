"""The bases of every payload."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_pascal


class Contract(BaseModel):
    """Base of every payload: readers ignore fields they do not know (producers may be newer)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, serialize_by_alias=True)


class QuoteWerksContract(Contract):
    """QuoteWerks-side payloads: on the wire each field is named as QuoteWerks names its column."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, serialize_by_alias=True, alias_generator=to_pascal)
