"""Configuration of the QuoteWerks simulator.

Webhook fields follow the real QuoteWerks Webhooks configuration (Name, Event, Method, URL, Headers, Body Content
Type, Body, Enabled); the JSON keys are those names in PascalCase, like the document columns.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

#: The thin body QuoteWerks customers typically configure: who/what happened, not the document itself.
DEFAULT_BODY_TEMPLATE = (
    '{"event": "{{System.EventFullName}}", "tenant": "{{System.TenantAccountNumber}}", '
    '"DocNo": "{{Document.DocNo}}", "DocID": "{{Document.ID}}"}'
)
CUSTOMER_BODY_TEMPLATE = (
    '{"event": "{{System.EventFullName}}", "tenant": "{{System.TenantAccountNumber}}", '
    '"CMAccountNo": "{{Customer.CMAccountNo}}"}'
)

#: Events the simulator can fire. `QuoteValet.*` are real; the `QuoteWerks.*` names are the simulator's own (the
#: real QuoteWerks-context event list is not public).
EVENTS = (
    "QuoteValet.Accepted",
    "QuoteValet.Viewed",
    "QuoteWerks.DocumentStatusChanged",
    "QuoteWerks.CustomerChanged",
)
CONTEXTS = ("QuoteValet", "QuoteWerks")

_EVENT_RE = re.compile(r"^(QuoteValet|QuoteWerks)\.[A-Za-z][A-Za-z0-9]*$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class WebhookSpec(BaseModel):
    """One webhook as configured in QuoteWerks Webhooks (also the body of POST/PUT /api/v1/webhooks)."""

    model_config = ConfigDict(extra="forbid")

    Name: str = Field("", max_length=200)
    Event: str = Field(description="Context.EventName, e.g. QuoteValet.Accepted, or a Context.ANY wildcard")
    Method: HttpMethod = "POST"
    URL: str = Field(min_length=1, max_length=2000)
    Headers: dict[str, str] = Field(default_factory=dict, description="custom headers (the only way to authenticate)")
    BodyContentType: str = Field("application/json", max_length=200)
    Body: str = Field(DEFAULT_BODY_TEMPLATE, max_length=100_000)
    Enabled: bool = True

    @field_validator("Event")
    @classmethod
    def _event(cls, value: str) -> str:
        if not _EVENT_RE.match(value):
            raise ValueError("Event must be Context.EventName with Context QuoteValet or QuoteWerks")
        return value

    @field_validator("URL")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("URL must be http:// or https://")
        return value

    @field_validator("Headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME_RE.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if "\r" in header_value or "\n" in header_value:
                raise ValueError(f"header {name!r}: value must not contain CR or LF")
        return value

    def matches(self, event: str) -> bool:
        context = event.split(".", 1)[0]
        return self.Event in (event, f"{context}.ANY")


class RetryPolicy(BaseModel):
    """Delivery retries (QuoteWerks documents none; this is the simulator's): on a connection error or non-2xx."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(5, ge=1, le=20)
    initial_delay_s: float = Field(0.5, ge=0)
    factor: float = Field(2.0, ge=1)
    max_delay_s: float = Field(30.0, ge=0)
    timeout_s: float = Field(10.0, gt=0)

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1-based)."""
        return float(min(self.initial_delay_s * self.factor ** (attempt - 1), self.max_delay_s))


class QwSimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    api_key: SecretStr = SecretStr("qw-sim-api-key")
    tenant_account_number: str = "QW-100001"
    #: Document-number prefix of the install (QuoteWerks default `AAA`): quotes are AAAQ1001…, orders AAAO1001….
    doc_prefix: str = Field("AAA", pattern=r"^[A-Z0-9]{1,6}$")
    #: DocStatus set by POST /documents/{DocNo}/approve (a QuoteValet acceptance). DocStatus is free text.
    accepted_status: str = "Accepted"
    #: Contacts C000001… and products ITM000001… are copied from the M3 simulator's seeded data (same seed).
    m3_seed: int = 42
    customers: int = Field(200, ge=1, le=10_000)
    products: int = Field(200, ge=40, le=100_000)
    #: Random filler documents after the fixed scenarios.
    extra_documents: int = Field(20, ge=0, le=10_000)
    #: Reference date for seeded dates; None = today.
    today: date | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    delivery_log_size: int = Field(500, ge=1)
    #: Webhooks registered at start (and again after /__admin/reset).
    webhooks: list[WebhookSpec] = Field(default_factory=list)
