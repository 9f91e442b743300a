"""What a mapping produces: `OrderPlan`, `CustomerPlan`, planned and skipped lines, and `Refusal` (data only)."""

from __future__ import annotations

from pydantic import BaseModel, Field

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
