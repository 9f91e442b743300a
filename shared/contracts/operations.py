"""Payloads about the bridge itself: dead letters, the audit trail, heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from shared.contracts.base import Contract


class DeadLetter(Contract):
    """`dlq.<service>.v1`: a message a service could not process, with everything needed to replay it."""

    service: str = Field(min_length=1, max_length=64)
    origin_topic: str
    origin_partition: int = Field(ge=0)
    origin_offset: int = Field(ge=0)
    original_key: str | None = None
    original_headers: dict[str, str] = Field(default_factory=dict)
    original_payload: str = Field(
        description="The original message body, as received: the text itself, or its base64 when it was not UTF-8 "
        "(see `original_payload_encoding`)."
    )
    original_payload_encoding: Literal["utf-8", "base64"] = Field(
        "utf-8", description="How `original_payload` holds the body: `utf-8` text, or `base64` of the raw bytes."
    )
    error_class: str = Field(max_length=64)
    error_message: str = Field(max_length=4000)
    details: dict[str, Any] = Field(default_factory=dict, description="M3 code/field/program, mapping rule, ...")
    attempts: int = Field(ge=1)
    failed_at: datetime


class AuditEvent(Contract):
    """`m3bridge.audit.v1`: one write the bridge made to M3 or QuoteWerks, with its outcome: what was changed where,
    by which service, for which business keys, under which correlation id. Never values of personal data."""

    at: datetime
    service: str = Field(min_length=1, max_length=64)
    system: Literal["m3", "quotewerks"]
    operation: str = Field(
        min_length=1, max_length=80, description="`PROGRAM/Transaction` (M3), or `customer`, `document`, `products`."
    )
    keys: dict[str, str] = Field(
        default_factory=dict, description="Business keys of the write (CUNO, ORNO, ITNO, CUOR, DocNo, account, …)."
    )
    outcome: Literal["ok", "refused", "unknown", "failed"] = Field(
        description="`unknown`: the answer was lost after the write was sent (the work reads before writing again)."
    )
    detail: str = Field("", max_length=500, description="Why it was refused or failed.")
    correlation_id: str = Field("", max_length=64)


class Heartbeat(Contract):
    """`m3bridge.heartbeat.v1`: a service announcing it is alive and whether it is ready."""

    service: str = Field(min_length=1, max_length=64, description="Service name (the message key).")
    instance: str = Field(max_length=128)
    version: str = Field(max_length=32)
    started_at: datetime
    sent_at: datetime
    ready: bool
    checks: dict[str, str] = Field(default_factory=dict)
