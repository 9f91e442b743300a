"""Leases of the shared ION token plus rate permits: the token-service protocol and its client.

Every M3 call goes: lease (token + permit under the central budget) → call the Gateway → report a 429 or 401
back. The protocol models live here so the service and its callers share one definition.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Literal

import httpx
from pydantic import BaseModel, Field, SecretStr, model_validator


class Priority(StrEnum):
    """Who is waiting: a sales rep (interactive) before orders (transactional) before catalog loads (bulk)."""

    INTERACTIVE = "interactive"
    TRANSACTIONAL = "transactional"
    BULK = "bulk"


class LeaseRequest(BaseModel):
    priority: Priority
    permits: int = Field(1, ge=1, le=100, description="Gateway requests the caller is about to make.")
    max_wait_ms: int = Field(30_000, ge=0, le=600_000, description="Give up (HTTP 429) rather than wait longer.")


class Lease(BaseModel):
    access_token: SecretStr
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_at: datetime
    permits: int
    waited_ms: float
    m3_base_url: str = Field(description="`{iu}/{ti}/M3` of the tenant, so callers need no .ionapi file.")

    @property
    def fingerprint(self) -> str:
        return token_fingerprint(self.access_token.get_secret_value())


class Report(BaseModel):
    kind: Literal["throttled", "unauthorized"]
    retry_after_s: float | None = Field(None, ge=0, le=3600)
    token_fingerprint: str | None = Field(
        None, pattern="^[0-9a-f]{64}$", description="sha256 (hex) of the token a 401 came with; required for a 401."
    )
    program: str = Field("", max_length=16)
    transaction: str = Field("", max_length=32)

    @model_validator(mode="after")
    def _a_401_names_its_token(self) -> Report:
        # Without it token-service cannot tell a stale token from the current one, and every such report would
        # throw the shared token away.
        if self.kind == "unauthorized" and self.token_fingerprint is None:
            raise ValueError("a 401 report names the token it came with (token_fingerprint)")
        return self


class LeaseError(Exception):
    """token-service refused or could not be reached; `retryable` says whether trying later can help."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def token_fingerprint(access_token: str) -> str:
    """Identifies a token in reports and logs without revealing it."""
    return hashlib.sha256(access_token.encode()).hexdigest()


class LeaseClient:
    """What services use to talk to token-service. One per process; it shares the given HTTP client."""

    def __init__(self, base_url: str, service: str, key: SecretStr, *, http: httpx.AsyncClient) -> None:
        # Several token-service replicas may be listed (comma-separated): a request that cannot reach one goes to the
        # next, and the one that answered stays first. Behind a Kubernetes Service one URL is enough.
        self._urls = [url.strip().rstrip("/") for url in base_url.split(",") if url.strip()]
        if not self._urls:
            raise ValueError("no token-service URL")
        self._service = service
        self._key = key
        self._http = http

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key.get_secret_value()}", "X-M3Bridge-Service": self._service}

    async def lease(self, priority: Priority, *, permits: int = 1, max_wait_s: float = 30.0) -> Lease:
        request = LeaseRequest(priority=priority, permits=permits, max_wait_ms=int(max_wait_s * 1000))
        try:
            response = await self._post("/v1/leases", request.model_dump(mode="json"), deadline_s=max_wait_s + 10)
        except httpx.HTTPError as exc:
            raise LeaseError(f"token-service unreachable: {type(exc).__name__}", retryable=True) from exc
        if response.status_code == 200:
            return Lease.model_validate(response.json())
        detail = _detail(response)
        if response.status_code == 429:
            retry_after = _float(response.headers.get("Retry-After"))
            raise LeaseError(f"rate budget exhausted: {detail}", retryable=True, retry_after_s=retry_after)
        if response.status_code in (401, 403):
            raise LeaseError(f"token-service refused this service's key: {detail}", retryable=False)
        raise LeaseError(f"token-service answered {response.status_code}: {detail}", retryable=True)

    async def report(self, report: Report) -> None:
        try:
            await self._post("/v1/reports", report.model_dump(mode="json"), deadline_s=5)
        except httpx.HTTPError as exc:  # a lost report only delays adaptation; the call itself still retries
            raise LeaseError(f"report not delivered: {type(exc).__name__}", retryable=True) from exc

    async def _post(self, path: str, body: object, *, deadline_s: float) -> httpx.Response:
        """POST to the first replica that can be reached (a connection refused or reset moves on to the next)."""
        last: httpx.TransportError | None = None
        for _ in range(len(self._urls)):
            url = self._urls[0]
            try:
                return await self._http.post(f"{url}{path}", json=body, headers=self._headers(), timeout=deadline_s)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                last = exc
                if len(self._urls) > 1:
                    self._urls.append(self._urls.pop(0))
        assert last is not None
        raise last


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail") or body.get("error") or body)[:200] if isinstance(body, dict) else str(body)[:200]


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
