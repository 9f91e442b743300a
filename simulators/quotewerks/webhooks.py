"""Webhook registry and delivery, modelled on QuoteWerks Webhooks.

A webhook is (Name, Event, Method, URL, Headers, BodyContentType, Body, Enabled). When an event fires, every enabled
webhook whose Event is the event's full name or its context's `.ANY` wildcard gets one request: `{{Macro}}`
placeholders in the URL, headers and body are replaced (URL-encoded in the URL, JSON- or XML-escaped in the body
when the content type says so; unknown macros become ""). No signature is added: QuoteWerks has none, the custom
headers are the only authentication. Delivery runs in a background task and retries on connection errors and
non-2xx responses with exponential backoff (the simulator's policy; QuoteWerks documents none). Every attempt is
logged per webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape as xml_escape

import httpx

from simulators.quotewerks.config import QwSimConfig, RetryPolicy, WebhookSpec
from simulators.quotewerks.data import iso

log = logging.getLogger("simulators.quotewerks.webhooks")

_MACRO_RE = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*\}\}")
_CONTENT_TYPES = {"json": "application/json", "xml": "application/xml", "text": "text/plain"}


def macros_for(
    event: str,
    tenant: str,
    document: Mapping[str, Any] | None = None,
    customer: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The macro values of one event: System.* always, Document.<column> and Customer.<column> when present."""
    context, _, name = event.partition(".")
    values = {
        "System.EventFullName": event,
        "System.EventContext": context,
        "System.EventName": name,
        "System.TenantAccountNumber": tenant,
    }
    if document is not None:
        values.update({f"Document.{column}": _text(value) for column, value in document.items()})
        if customer is None:
            customer = {
                column.removeprefix("SoldTo"): value
                for column, value in document.items()
                if column.startswith("SoldTo")
            }
    if customer is not None:
        values.update({f"Customer.{column}": _text(value) for column, value in customer.items()})
    return values


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(template: str, values: Mapping[str, str], *, escape: str = "none") -> str:
    """Replace `{{Macro}}` placeholders.

    escape: "json" (inside a JSON string), "xml", "url", "header" (no CR/LF) or "none".
    """

    def substitute(match: re.Match[str]) -> str:
        value = values.get(match.group(1), "")
        if escape == "json":
            return json.dumps(value, ensure_ascii=False)[1:-1]
        if escape == "xml":
            return xml_escape(value, {'"': "&quot;", "'": "&apos;"})
        if escape == "url":
            return quote(value, safe="")
        if escape == "header":
            return value.replace("\r", " ").replace("\n", " ")
        return value

    return _MACRO_RE.sub(substitute, template)


def body_escape(content_type: str) -> str:
    lowered = content_type.lower()
    if "json" in lowered:
        return "json"
    if "xml" in lowered:
        return "xml"
    return "none"


def content_type_header(content_type: str) -> str:
    """`JSON` / `XML` (as the QuoteWerks UI names them) become media types; a media type is sent as it is."""
    return _CONTENT_TYPES.get(content_type.strip().lower(), content_type.strip())


@dataclass
class Webhook:
    id: int
    spec: WebhookSpec
    created: str
    deliveries: deque[dict[str, Any]] = field(default_factory=deque)

    def view(self) -> dict[str, Any]:
        return {"ID": self.id, **self.spec.model_dump(), "Created": self.created}


@dataclass
class DeliveryStats:
    ok: int = 0  # attempts answered 2xx
    failed: int = 0  # attempts that failed (error or non-2xx)
    gave_up: int = 0  # events not delivered after all attempts
    retried: int = 0

    def snapshot(self) -> dict[str, int]:
        return {"ok": self.ok, "failed": self.failed, "gave_up": self.gave_up, "retried": self.retried}


class WebhookHub:
    """Registered webhooks, event dispatch and delivery. Use from one event loop."""

    def __init__(self, config: QwSimConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.retry: RetryPolicy = config.retry
        self.transport = transport
        self.webhooks: dict[int, Webhook] = {}
        self.stats = DeliveryStats()
        self._next_id = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        for spec in config.webhooks:
            self.add(spec)

    # --- registry --------------------------------------------------------------------------------------------------
    def add(self, spec: WebhookSpec) -> Webhook:
        webhook = Webhook(
            id=self._next_id,
            spec=spec,
            created=iso(_utcnow()),
            deliveries=deque(maxlen=self.config.delivery_log_size),
        )
        self.webhooks[webhook.id] = webhook
        self._next_id += 1
        return webhook

    def replace(self, webhook_id: int, spec: WebhookSpec) -> Webhook | None:
        webhook = self.webhooks.get(webhook_id)
        if webhook is not None:
            webhook.spec = spec
        return webhook

    def remove(self, webhook_id: int) -> bool:
        return self.webhooks.pop(webhook_id, None) is not None

    # --- dispatch --------------------------------------------------------------------------------------------------
    def fire(
        self,
        event: str,
        *,
        document: Mapping[str, Any] | None = None,
        customer: Mapping[str, Any] | None = None,
    ) -> int:
        """Schedule one delivery per matching enabled webhook; returns how many were scheduled."""
        values = macros_for(event, self.config.tenant_account_number, document, customer)
        scheduled = 0
        for webhook in list(self.webhooks.values()):
            if not webhook.spec.Enabled or not webhook.spec.matches(event):
                continue
            task = asyncio.get_running_loop().create_task(self._deliver(webhook, event, values))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            scheduled += 1
        return scheduled

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until every scheduled delivery has finished (tests; wrap in asyncio.timeout to bound it)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_pending(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def aclose(self) -> None:
        await self.cancel_pending()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.transport, timeout=self.retry.timeout_s, follow_redirects=False
            )
        return self._client

    def build_request(self, spec: WebhookSpec, values: Mapping[str, str]) -> tuple[str, dict[str, str], bytes | None]:
        url = render(spec.URL, values, escape="url")
        headers = {name: render(value, values, escape="header") for name, value in spec.Headers.items()}
        body: bytes | None = None
        if spec.Method != "GET" and spec.Body:
            body = render(spec.Body, values, escape=body_escape(spec.BodyContentType)).encode()
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = content_type_header(spec.BodyContentType)
        headers.setdefault("User-Agent", "QuoteWerks-Webhooks-Simulator/1.0")
        return url, headers, body

    async def _deliver(self, webhook: Webhook, event: str, values: Mapping[str, str]) -> None:
        spec = webhook.spec  # the configuration at the time of the event
        url, headers, body = self.build_request(spec, values)
        doc_no = values.get("Document.DocNo", "")
        for attempt in range(1, self.retry.attempts + 1):
            started = time.perf_counter()
            entry: dict[str, Any] = {
                "Time": iso(_utcnow()), "Event": event, "DocNo": doc_no, "Method": spec.Method, "URL": url,
                "Attempt": attempt, "StatusCode": None, "Error": "", "Ok": False,
            }  # fmt: skip
            try:
                response = await self._http().request(spec.Method, url, headers=headers, content=body)
                entry["StatusCode"] = response.status_code
                entry["Ok"] = 200 <= response.status_code < 300
                if not entry["Ok"]:
                    entry["Error"] = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                entry["Error"] = f"{type(exc).__name__}: {exc}"[:500]
            entry["DurationMs"] = round((time.perf_counter() - started) * 1000, 1)
            webhook.deliveries.append(entry)
            if entry["Ok"]:
                self.stats.ok += 1
                return
            self.stats.failed += 1
            if attempt < self.retry.attempts:
                self.stats.retried += 1
                await asyncio.sleep(self.retry.delay(attempt))
        self.stats.gave_up += 1
        log.warning("webhook %s gave up on %s %s after %s attempts", webhook.id, event, doc_no, self.retry.attempts)


def _utcnow() -> datetime:
    return datetime.now(UTC)
