"""`M3Client`: execute MI transactions through the Gateway, each request under a token-service lease.

One object per process owns the HTTP connections, the metadata cache and the circuit breakers; each call runs under
the retry policy of `shared.m3.retries`, and every service catches the same error classes (`shared.m3.errors`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from shared.m3 import wire
from shared.m3.breaker import CircuitBreakers
from shared.m3.errors import (
    M3AuthorizationDeniedError,
    M3Error,
)
from shared.m3.lease import LeaseClient, Priority
from shared.m3.metadata import Record, TransactionMetadata, from_api_repository, from_wire, to_wire
from shared.m3.retries import lost_answer
from shared.m3.transactions import PROGRAMS_BY_SERVICE, changes_m3
from shared.m3.transport import REPOSITORY, GatewayTransport
from shared.platform.audit import Audit, no_audit
from shared.platform.settings import M3CallerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BulkOutcome:
    """One transaction of a bulk request: its records, or the error M3 gave for it."""

    transaction: str
    records: list[Record]
    error: M3Error | None


class M3Client(GatewayTransport):
    # --- public API ---------------------------------------------------------------------------------

    async def execute(
        self,
        program: str,
        transaction: str,
        fields: Mapping[str, object] | None = None,
        *,
        priority: Priority,
        maxrecs: int = 100,
        returncols: Sequence[str] | None = None,
    ) -> list[Record]:
        """Run one transaction; returns its records typed by the metadata (trimmed text, Decimal, date)."""
        metadata = await self.metadata(program, transaction, priority=priority) if self._validate else None
        inputs = (
            metadata.encode_inputs(fields or {})
            if metadata is not None
            else {k: to_wire(v) for k, v in (fields or {}).items()}
        )
        path = wire.v1_path(
            program, transaction, maxrecs=maxrecs, returncols=returncols, company=self._company, division=self._division
        )
        body = await self._with_retries(
            program, transaction, priority, "GET", path, changes=changes_m3(program, transaction), params=inputs
        )
        rows, specs = wire.parse_v1(body, program, transaction)
        outputs = {**(metadata.outputs if metadata else {}), **specs}
        return [{name: from_wire(outputs.get(name), text) for name, text in row.items()} for row in rows]

    async def execute_one(
        self, program: str, transaction: str, fields: Mapping[str, object] | None = None, *, priority: Priority
    ) -> Record | None:
        records = await self.execute(program, transaction, fields, priority=priority, maxrecs=1)
        return records[0] if records else None

    async def list_all(
        self,
        program: str,
        transaction: str,
        fields: Mapping[str, object] | None = None,
        *,
        key_fields: Sequence[str],
        priority: Priority,
        page_size: int = 100,
    ) -> AsyncIterator[Record]:
        """Page through a list transaction: each next page starts at the last key returned (M3 includes the
        start key itself, so the first row of each next page is dropped)."""
        start: dict[str, object] = dict(fields or {})
        last_key: tuple[object, ...] | None = None
        while True:
            page = await self.execute(program, transaction, start, priority=priority, maxrecs=page_size)
            fresh = [r for r in page if last_key is None or tuple(r.get(k) for k in key_fields) != last_key]
            for record in fresh:
                yield record
            if len(page) < page_size or not fresh:
                return
            last_key = tuple(page[-1].get(k) for k in key_fields)
            start.update({k: page[-1].get(k) for k in key_fields})

    async def bulk(
        self,
        program: str,
        transactions: Sequence[tuple[str, Mapping[str, object]]],
        *,
        priority: Priority,
        chunk: int = 80,
    ) -> list[BulkOutcome]:
        """Run many transactions of one program, in order, in as few Gateway requests as possible (v2 bulk,
        `chunk` per request). A failed transaction is reported in its outcome; the others still run."""
        outcomes: list[BulkOutcome] = []
        encoded: list[tuple[str, dict[str, str]]] = []
        for transaction, fields in transactions:
            metadata = await self.metadata(program, transaction, priority=priority) if self._validate else None
            values = (
                metadata.encode_inputs(fields) if metadata is not None else {k: to_wire(v) for k, v in fields.items()}
            )
            encoded.append((transaction, values))
        changes = any(changes_m3(program, transaction) for transaction, _ in encoded)
        for start in range(0, len(encoded), chunk):
            part = encoded[start : start + chunk]
            payload: dict[str, Any] = {
                "program": program,
                "transactions": [{"transaction": t, "record": record} for t, record in part],
            }
            if self._company is not None:
                payload["cono"] = self._company
            if self._division is not None:
                payload["divi"] = self._division
            body = await self._with_retries(
                program, "bulk", priority, "POST", wire.v2_bulk_path(), changes=changes, json=payload
            )
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list) or len(results) != len(part) or not all(map(_bulk_result_shaped, results)):
                raise lost_answer(
                    changes, "bulk answer does not match the request", program=program, transaction="bulk"
                )
            for (transaction, _), result in zip(part, results, strict=True):
                error = wire.v2_result_error(result, program, transaction)
                records = [{k: from_wire(None, str(v)) for k, v in r.items()} for r in result.get("records") or []]
                outcomes.append(BulkOutcome(transaction, records, error))
        return outcomes

    async def metadata(self, program: str, transaction: str, *, priority: Priority) -> TransactionMetadata | None:
        """The transaction's fields from the API repository, fetched once per process. None when the
        repository cannot be read (then M3 alone validates)."""
        key = (program, transaction)
        task = self._metadata.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.ensure_future(self._load_metadata(program, transaction, priority))
            self._metadata[key] = task
        return await asyncio.shield(task)

    # --- internals ----------------------------------------------------------------------------------

    async def _load_metadata(self, program: str, transaction: str, priority: Priority) -> TransactionMetadata | None:
        rows: dict[str, list[Record]] = {}
        for direction in ("I", "O"):
            path = wire.v1_path(*REPOSITORY, maxrecs=0, returncols=None, company=self._company, division=self._division)
            params = {"MINM": program, "TRNM": transaction, "TRTP": direction}
            try:
                body = await self._with_retries(*REPOSITORY, priority, "GET", path, changes=False, params=params)
            except M3AuthorizationDeniedError:
                log.warning(
                    "no access to the API repository (MRS001MI): %s/%s is not pre-checked", program, transaction
                )
                return None
            raw, specs = wire.parse_v1(body, *REPOSITORY)
            rows[direction] = [{k: from_wire(specs.get(k), v) for k, v in r.items()} for r in raw]
        if not rows["I"] and not rows["O"]:
            # The repository knows nothing of it: let M3 answer (it will say "not found" if so).
            return None
        return from_api_repository(program, transaction, rows["I"], rows["O"])


def _bulk_result_shaped(result: Any) -> bool:
    """One result of a v2 bulk answer: an object whose `records`, if any, are a list of objects."""
    records = result.get("records") or [] if isinstance(result, dict) else None
    return isinstance(records, list) and all(isinstance(record, dict) for record in records)


def m3_client_for(
    settings: M3CallerSettings, http: httpx.AsyncClient, *, deadline_s: float | None = None, audit: Audit = no_audit
) -> M3Client:
    """The M3 client of a service, leasing from token-service with the service's own key. `deadline_s` caps
    how long one call may take (interactive callers keep it short)."""
    leases = LeaseClient(settings.token_service_url, settings.service_name, settings.token_service_key, http=http)
    deadline = settings.m3_deadline_s if deadline_s is None else min(deadline_s, settings.m3_deadline_s)
    return M3Client(
        leases,
        http,
        company=settings.m3_company,
        division=settings.m3_division or None,
        timeout_s=min(settings.m3_timeout_s, deadline),
        deadline_s=deadline,
        max_attempts=settings.m3_max_attempts,
        breakers=CircuitBreakers(
            failures=settings.m3_breaker_failures,
            reset_after_s=settings.m3_breaker_reset_s,
            programs=PROGRAMS_BY_SERVICE.get(settings.service_name, ()),
        ),
        source=settings.service_name,
        audit=audit,
    )
