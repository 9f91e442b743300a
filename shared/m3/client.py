"""`M3Client`: execute MI transactions through the Gateway, each request under a token-service lease.

One object per process owns the HTTP connections, the metadata cache and the circuit breakers; each call runs under
the retry policy of `shared.m3.retries`, and every service catches the same error classes (`shared.m3.errors`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import Counter, Histogram

from shared.m3 import wire
from shared.m3.breaker import CircuitBreakers
from shared.m3.errors import (
    M3AuthorizationDeniedError,
    M3BusinessError,
    M3Error,
    M3OutcomeUnknownError,
    M3ThrottledError,
    M3TransientError,
    M3UnauthorizedError,
)
from shared.m3.lease import Lease, LeaseClient, LeaseError, Priority, Report
from shared.m3.metadata import Record, TransactionMetadata, from_api_repository, from_wire, to_wire
from shared.m3.retries import DeadlinePassedError, call_retrying, lost_answer, time_left
from shared.m3.transactions import PROGRAMS_BY_SERVICE, changes_m3
from shared.platform.audit import Audit, business_keys, no_audit
from shared.platform.settings import M3CallerSettings

log = logging.getLogger(__name__)

m3_requests = Counter(
    "m3bridge_m3_requests_total", "Gateway requests to M3 by program, transaction and outcome.",
    ["program", "transaction", "outcome"],
)  # fmt: skip
m3_duration = Histogram(
    "m3bridge_m3_request_duration_seconds", "Gateway request latency by program and transaction.",
    ["program", "transaction"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)  # fmt: skip

REPOSITORY = ("MRS001MI", "LstFields")
BULK = ("bulk", "execute")


@dataclass(frozen=True)
class BulkOutcome:
    """One transaction of a bulk request: its records, or the error M3 gave for it."""

    transaction: str
    records: list[Record]
    error: M3Error | None


class M3Client:
    def __init__(
        self,
        leases: LeaseClient,
        http: httpx.AsyncClient,
        *,
        company: int | None = None,
        division: str | None = None,
        timeout_s: float = 60.0,
        deadline_s: float = 120.0,
        max_attempts: int = 6,
        validate: bool = True,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        breakers: CircuitBreakers | None = None,
        source: str = "",
        audit: Audit = no_audit,
    ) -> None:
        self._leases = leases
        self._audit = audit
        # Sent as Infor's own client does, so the Gateway can log and throttle per caller (`x-infor-ionapi-source`).
        self._caller = {"x-infor-ionapi-source": f"m3bridge-{source}"} if source else {}
        self._http = http
        self._company = company
        self._division = division
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s
        self._max_attempts = max_attempts
        self._validate = validate
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self.breakers = breakers or CircuitBreakers()
        self._metadata: dict[tuple[str, str], asyncio.Task[TransactionMetadata | None]] = {}

    @property
    def lease_client(self) -> LeaseClient:
        """Where this client's leases come from (token-service, or a tool's own token)."""
        return self._leases

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

    async def gateway(
        self,
        method: str,
        path: str,
        *,
        priority: Priority,
        label: tuple[str, str],
        changes: bool = False,
        **request: Any,
    ) -> httpx.Response:
        """A request to another API of the tenant behind the same Gateway (the Data Lake, say): `path` is relative
        to `{iu}/{ti}`. Same lease, retries, 429/401 reports and error classes as an MI call; `label` names it in
        metrics and errors; `changes` says whether a lost answer leaves the outcome unknown (a write). Returns
        the 2xx answer."""
        response: httpx.Response = await self._with_retries(
            *label, priority, method, path, changes=changes, raw=True, under_tenant=True, **request
        )
        return response

    async def _with_retries(
        self,
        program: str,
        transaction: str,
        priority: Priority,
        method: str,
        path: str,
        *,
        changes: bool,
        raw: bool = False,
        under_tenant: bool = False,
        **request: Any,
    ) -> Any:
        """`_retrying`, with every write recorded on the audit trail (its business keys and outcome)."""
        call = self._retrying(program, transaction, priority, method, path, changes=changes, raw=raw,
                              under_tenant=under_tenant, **request)  # fmt: skip
        if not changes:
            return await call
        operation, keys = _audited(program, transaction, request)
        try:
            result = await call
        except M3OutcomeUnknownError as lost:
            self._audit("m3", operation, keys, "unknown", str(lost))
            raise
        except (M3BusinessError, M3AuthorizationDeniedError) as refused:
            self._audit("m3", operation, keys, "refused", str(refused))
            raise
        except M3Error as failed:
            self._audit("m3", operation, keys, "failed", str(failed))
            raise
        self._audit("m3", operation, keys, "ok")
        return result

    async def _retrying(
        self,
        program: str,
        transaction: str,
        priority: Priority,
        method: str,
        path: str,
        *,
        changes: bool,
        raw: bool = False,
        under_tenant: bool = False,
        **request: Any,
    ) -> Any:
        """One call with the retry policy for M3 (`shared.m3.retries`): a write whose answer was lost raises
        `M3OutcomeUnknownError` at once."""
        # The deadline is the whole call's: the lease wait and every attempt's HTTP timeout come out of it.
        deadline_at = time.monotonic() + self._deadline_s
        retrying = call_retrying(
            deadline_s=self._deadline_s,
            max_attempts=self._max_attempts,
            backoff_initial_s=self._backoff_initial_s,
            backoff_max_s=self._backoff_max_s,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(
                    program,
                    transaction,
                    priority,
                    method,
                    path,
                    changes=changes,
                    raw=raw,
                    under_tenant=under_tenant,
                    deadline_at=deadline_at,
                    **request,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, program: str, transaction: str, *args: Any, **kwargs: Any) -> Any:
        """`_request` under the program's circuit breaker: transient failures count against the program, any
        answer from M3 (a NOK too) for it; 429, 401 and lease problems say nothing about the program."""
        self.breakers.before_call(program, transaction)
        try:
            result = await self._request(program, transaction, *args, **kwargs)
        except DeadlinePassedError:
            self.breakers.released(program)
            raise
        except M3TransientError:
            self.breakers.failed(program)
            raise
        except (M3ThrottledError, M3UnauthorizedError, LeaseError):
            self.breakers.released(program)
            raise
        except M3Error:
            self.breakers.succeeded(program)
            raise
        except BaseException:
            self.breakers.released(program)
            raise
        self.breakers.succeeded(program)
        return result

    async def _request(
        self,
        program: str,
        transaction: str,
        priority: Priority,
        method: str,
        path: str,
        *,
        changes: bool,
        raw: bool,
        under_tenant: bool,
        deadline_at: float,
        **request: Any,
    ) -> Any:
        lease = await self._leases.lease(priority, max_wait_s=self._time_left(deadline_at, program, transaction))
        timeout_s = min(self._timeout_s, self._time_left(deadline_at, program, transaction))
        base = tenant_base(lease.m3_base_url) if under_tenant else lease.m3_base_url.rstrip("/")
        url = base + path
        request = dict(request)  # the same request is sent again on a retry
        headers = {
            "Accept": "application/json",
            **self._caller,
            **request.pop("headers", {}),
            "Authorization": f"Bearer {lease.access_token.get_secret_value()}",
        }
        started = time.monotonic()
        try:
            response = await self._http.request(method, url, headers=headers, timeout=timeout_s, **request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing was sent: safe to send again, write or not.
            self._observe(program, transaction, "connection", started)
            raise M3TransientError(
                f"could not connect: {type(exc).__name__}", program=program, transaction=transaction
            ) from exc
        except httpx.TimeoutException as exc:
            self._observe(program, transaction, "timeout", started)
            raise lost_answer(
                changes, f"no answer within {timeout_s:.3g}s", program=program, transaction=transaction
            ) from exc
        except httpx.TransportError as exc:
            self._observe(program, transaction, "connection", started)
            raise lost_answer(
                changes,
                f"connection lost after sending: {type(exc).__name__}",
                program=program,
                transaction=transaction,
            ) from exc
        if raw and 200 <= response.status_code < 300:
            self._observe(program, transaction, "ok", started)
            return response
        try:
            return await self._read(response, lease, program, transaction, started, raw=raw)
        except M3TransientError as exc:
            if not changes:
                raise
            # A 5xx (502/504 above all) or an unreadable answer after a write reached the Gateway: M3 may have acted.
            raise M3OutcomeUnknownError(
                exc.message, status=exc.status, program=program, transaction=transaction
            ) from exc

    def _time_left(self, deadline_at: float, program: str, transaction: str) -> float:
        return time_left(deadline_at, self._deadline_s, program=program, transaction=transaction)

    async def _read(
        self, response: httpx.Response, lease: Lease, program: str, transaction: str, started: float, *, raw: bool
    ) -> Any:
        """An MI answer as JSON, or the error it is; `raw` answers (not MI) only go through the error mapping."""
        status = response.status_code
        body: Any = None
        if response.headers.get("content-type", "").startswith("application/json") or response.content[:1] in (
            b"{",
            b"[",
        ):
            try:
                body = response.json()
            except (ValueError, RecursionError):
                body = None
        # Whether a bulk request with failed transactions answers 200 or 400 is not documented: read both.
        bulk_answer = transaction == "bulk" and isinstance(body, dict) and isinstance(body.get("results"), list)
        if raw:
            body = None
        if (status == 200 and body is not None) or (status == 400 and bulk_answer and not raw):
            try:
                if transaction != "bulk":
                    wire.parse_v1(body, program, transaction)  # raises on NOK
            except M3Error as exc:
                self._observe(
                    program, transaction, "denied" if isinstance(exc, M3AuthorizationDeniedError) else "nok", started
                )
                raise
            self._observe(program, transaction, "ok", started)
            return body
        if status == 400 and isinstance(body, dict):
            results = body.get("results")
            result = results[0] if isinstance(results, list) and results else body
            error = wire.v2_result_error(result, program, transaction) if isinstance(result, dict) else None
            if error is not None:
                self._observe(program, transaction, "nok", started)
                raise error
        error = wire.http_error(status, response.headers, response.text, program, transaction)
        self._observe(program, transaction, _outcome(status), started)
        if isinstance(error, M3ThrottledError):
            await self._report(
                Report(kind="throttled", retry_after_s=error.retry_after_s, program=program, transaction=transaction)
            )
        elif isinstance(error, M3UnauthorizedError):
            await self._report(
                Report(
                    kind="unauthorized", token_fingerprint=lease.fingerprint, program=program, transaction=transaction
                )
            )
        raise error

    async def _report(self, report: Report) -> None:
        try:
            await self._leases.report(report)
        except LeaseError as exc:
            log.warning("could not tell token-service about a %s answer: %s", report.kind, exc)

    @staticmethod
    def _observe(program: str, transaction: str, outcome: str, started: float) -> None:
        m3_requests.labels(program, transaction, outcome).inc()
        m3_duration.labels(program, transaction).observe(time.monotonic() - started)


def _bulk_result_shaped(result: Any) -> bool:
    """One result of a v2 bulk answer: an object whose `records`, if any, are a list of objects."""
    records = result.get("records") or [] if isinstance(result, dict) else None
    return isinstance(records, list) and all(isinstance(record, dict) for record in records)


def _audited(program: str, transaction: str, request: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The audit name and business keys of a write: its inputs (a single call), or the first record's (bulk)."""
    if transaction != "bulk":
        return f"{program}/{transaction}", business_keys(request.get("params"))
    parts = (request.get("json") or {}).get("transactions") or []
    names = sorted({str(part.get("transaction")) for part in parts if isinstance(part, dict)})
    first = parts[0].get("record") if parts and isinstance(parts[0], dict) else None
    keys = business_keys(first if isinstance(first, Mapping) else None)
    return f"{program}/{'+'.join(names) or 'bulk'} ({len(parts)} records)", keys


def tenant_base(m3_base_url: str) -> str:
    """`{iu}/{ti}/M3` → `{iu}/{ti}`: where the tenant's other APIs are reached through the Gateway."""
    base = m3_base_url.rstrip("/")
    return base[: -len("/M3")] if base.endswith("/M3") else base


def _outcome(status: int) -> str:
    if status == 401:
        return "http_401"
    if status == 429:
        return "http_429"
    if status >= 500:
        return "http_5xx"
    return f"http_{status // 100}xx"


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
