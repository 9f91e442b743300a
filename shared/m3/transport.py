"""The Gateway side of the M3 client: one request under a token-service lease, its retries within the call's deadline,
what a 429 or 401 tells token-service, the request's metrics and audit event. `M3Client` builds the MI calls on it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
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
from shared.m3.metadata import TransactionMetadata
from shared.m3.retries import DeadlinePassedError, call_retrying, lost_answer, time_left
from shared.platform.audit import Audit, business_keys, no_audit

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


class GatewayTransport:
    """HTTP to the ION API Gateway under leases: retries, deadlines, circuit breakers, reports, metrics, audit."""

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
