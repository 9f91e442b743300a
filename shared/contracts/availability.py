"""inventory-query's Kafka request/reply: a rep's question and its answer."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

AVAILABILITY_MAX_LINES = 100

Source = Literal["m3", "cache", "stale"]

ItemNumber = Annotated[str, Field(min_length=1, max_length=15, description="M3 item number (ITNO).")]
Warehouse = Annotated[str, Field(min_length=1, max_length=3, description="M3 warehouse (WHLO).")]
Quantity = Annotated[Decimal, Field(gt=0, description="Quantity the rep wants to sell.")]


class AvailabilityQuery(BaseModel):
    """One line a rep asks about."""

    model_config = ConfigDict(extra="forbid")

    item: ItemNumber
    warehouse: Warehouse
    quantity: Quantity = Decimal(1)


class AvailabilityAnswer(BaseModel):
    """Stock and price of one item in one warehouse, and how fresh the figures are."""

    outcome: Literal["answered"] = "answered"
    item: str
    warehouse: str
    on_hand: Decimal = Field(description="On-hand balance, approved (M3 STQT).")
    allocatable: Decimal = Field(description="Allocatable on-hand balance (M3 AV01).")
    quantity: Decimal = Field(description="The requested quantity.")
    available: bool = Field(description="allocatable >= quantity.")
    price: Decimal | None = Field(description="Base sales price of the item; null when M3 has none for it.")
    currency: str | None = Field(description="Currency of the price.")
    price_note: str | None = Field(None, description="Why there is no price, when there is none.")
    source: Source = Field(
        description="Of the stock figures (what `available` rests on): `m3`: read just now; `cache`: read within the "
        "cache TTL (or pushed by an inventory event); `stale`: M3 could not answer, this is the last figure known. "
        "`stale` too when the price is."
    )
    as_of: datetime = Field(description="When the stock figures were read from M3 (or changed, by an event).")
    age_s: float = Field(description="Seconds since `as_of`.")
    price_as_of: datetime | None = Field(
        None, description="When the price was read from M3 (with the whole price list, or alone), or changed."
    )


class LineProblem(BaseModel):
    """A batch line that has no answer."""

    outcome: Literal["not_found", "unavailable", "invalid"]
    item: str
    warehouse: str
    quantity: Decimal
    detail: str = Field(description="M3's message for an unknown item, or why M3 could not be asked.")


LineResult = Annotated[AvailabilityAnswer | LineProblem, Field(discriminator="outcome")]


class AvailabilityRequest(BaseModel):
    """`inventory.availability.request.v1`: availability lines; set the `reply_to` and `correlation_id`
    headers, the reply goes to `reply_to` with the same `correlation_id`."""

    lines: list[AvailabilityQuery] = Field(min_length=1, max_length=AVAILABILITY_MAX_LINES)


class AvailabilityReply(BaseModel):
    """The reply to an `AvailabilityRequest`: one result per line, in order, or `error` for a bad request."""

    correlation_id: str | None = Field(None, description="The request's correlation id, echoed.")
    lines: list[LineResult] = Field(default_factory=list)
    error: str | None = Field(None, description="Why the request could not be read (then `lines` is empty).")
    answered_at: datetime
