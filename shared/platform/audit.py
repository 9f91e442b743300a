"""The audit trail: every write to M3 or QuoteWerks as an `m3bridge.audit.v1` event.

The clients call an `Audit` (`audit(system, operation, keys, outcome, detail)`) after each write; the service runtime
gives them one that queues the event and publishes it in the background (`AuditTrail`). The trail is a record, not a
step of the work: a full queue or an unreachable broker drops events with a count and a warning
(`m3bridge_audit_events_total{outcome="dropped"}`), it never holds up an order.

Keys are business keys only (`business_keys`): customer, order, item and document numbers, never names, addresses,
e-mails or phone numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from prometheus_client import Counter

from shared.contracts import AuditEvent
from shared.platform.correlation import current_correlation_id

log = logging.getLogger(__name__)

audit_events = Counter("m3bridge_audit_events_total", "Audit events of writes, published or dropped.", ["outcome"])
Outcome = Literal["ok", "refused", "unknown", "failed"]
#: The MI fields that identify what a write is about; everything else (names, addresses, e-mails) stays out.
BUSINESS_KEYS = ("CUNO", "ORNO", "CUOR", "ITNO", "WHLO", "PRRF", "PONR", "ORTP", "FACI")
QUEUE_SIZE = 10_000


class Audit(Protocol):
    def __call__(
        self, system: Literal["m3", "quotewerks"], operation: str, keys: Mapping[str, str], outcome: Outcome,
        detail: str = "",
    ) -> None: ...  # fmt: skip


def no_audit(
    system: Literal["m3", "quotewerks"], operation: str, keys: Mapping[str, str], outcome: Outcome, detail: str = ""
) -> None:
    """For clients used outside a service (tools, tests): nothing is recorded."""


def business_keys(fields: Mapping[str, Any] | None) -> dict[str, str]:
    return {name: str(fields[name])[:64] for name in BUSINESS_KEYS if fields and fields.get(name) not in (None, "")}


class AuditTrail:
    """A service's audit trail: `record` queues (never blocks), `run` publishes with `send(event)`."""

    def __init__(self, service: str, send: Callable[[AuditEvent], Awaitable[None]]) -> None:
        self.service = service
        self._send = send
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._dropped_said = False

    def record(
        self, system: Literal["m3", "quotewerks"], operation: str, keys: Mapping[str, str], outcome: Outcome,
        detail: str = "",
    ) -> None:  # fmt: skip
        event = AuditEvent(
            at=datetime.now(UTC), service=self.service, system=system, operation=operation[:80],
            keys={str(k)[:32]: str(v)[:64] for k, v in keys.items()}, outcome=outcome, detail=detail[:500],
            correlation_id=(current_correlation_id() or "")[:64],
        )  # fmt: skip
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._drop("the queue is full")

    def _drop(self, why: str) -> None:
        audit_events.labels("dropped").inc()
        if not self._dropped_said:
            log.warning("audit events dropped (%s); counted in m3bridge_audit_events_total", why)
            self._dropped_said = True

    async def run(self) -> None:
        """Publish queued events until cancelled (the runtime stops it after the consumers drained)."""
        while True:
            event = await self._queue.get()
            try:
                await self._send(event)
                audit_events.labels("published").inc()
            except Exception as exc:  # the record must not stop the work
                self._drop(f"{type(exc).__name__}")
            finally:
                self._queue.task_done()

    async def drain(self, timeout_s: float) -> None:
        """At shutdown: publish what is queued, for at most `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
