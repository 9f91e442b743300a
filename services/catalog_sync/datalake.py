"""Infor Data Lake (Data Fabric Compass v2) queries: submit SQL, poll the status, page the result.

Each request goes under a token-service lease (bulk priority), like an MI call. The tenant's Gateway base is derived
from the lease's `m3_base_url` (`{iu}/{ti}/M3` → `{iu}/{ti}`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from typing import Any

import httpx

from shared.lease import LeaseClient, Priority, Report


class DataLakeError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def tenant_base(m3_base_url: str) -> str:
    base = m3_base_url.rstrip("/")
    return base[: -len("/M3")] if base.endswith("/M3") else base


class DataLakeClient:
    def __init__(
        self,
        leases: LeaseClient,
        http: httpx.AsyncClient,
        *,
        poll_s: float = 0.2,
        timeout_s: float = 600.0,
        page_size: int = 100_000,
        request_timeout_s: float = 60.0,
    ) -> None:
        self._leases = leases
        self._http = http
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._page_size = min(page_size, 100_000)
        self._request_timeout_s = request_timeout_s

    async def _call(self, method: str, path: str, **request: Any) -> httpx.Response:
        for attempt in range(2):
            lease = await self._leases.lease(Priority.BULK, max_wait_s=min(self._timeout_s, 120.0))
            url = f"{tenant_base(lease.m3_base_url)}/DATAFABRIC/compass/v2/{path}"
            headers = {"Authorization": f"Bearer {lease.access_token.get_secret_value()}", **request.pop("headers", {})}
            try:
                response = await self._http.request(
                    method, url, headers=headers, timeout=self._request_timeout_s, **request
                )
            except httpx.HTTPError as exc:
                raise DataLakeError(f"Data Lake unreachable: {type(exc).__name__}", retryable=True) from exc
            if response.status_code == 401 and attempt == 0:
                await self._leases.report(Report(kind="unauthorized", token_fingerprint=lease.fingerprint))
                request["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                continue
            if response.status_code == 429:
                retry_after = response.headers.get("retry-after")
                await self._leases.report(
                    Report(kind="throttled", retry_after_s=float(retry_after) if retry_after else None)
                )
                raise DataLakeError("Data Lake throttled (429)", retryable=True)
            if response.status_code >= 400:
                raise DataLakeError(
                    f"Data Lake answered {response.status_code}: {response.text[:300]}",
                    retryable=response.status_code >= 500,
                )
            return response
        raise DataLakeError("Data Lake refused the token twice (401)", retryable=False)

    async def query(self, sql: str) -> list[dict[str, Any]]:
        """Run one query to the end and return every row."""
        submitted = await self._call("POST", "jobs/", content=sql.encode(), headers={"Content-Type": "text/plain"})
        query_id = str(submitted.json()["queryId"])
        deadline = time.monotonic() + self._timeout_s
        while True:
            status = str((await self._call("GET", f"jobs/{query_id}/status/")).json().get("status", ""))
            if status == "FINISHED":
                break
            if status == "FAILED":
                raise DataLakeError(f"Data Lake query {query_id} FAILED", retryable=True)
            if time.monotonic() > deadline:
                raise DataLakeError(
                    f"Data Lake query {query_id} still {status} after {self._timeout_s:g}s", retryable=True
                )
            await asyncio.sleep(self._poll_s)
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = await self._call(
                "GET", f"jobs/{query_id}/result/", params={"offset": offset, "limit": self._page_size}
            )
            found = _rows(page)
            rows.extend(found)
            if len(found) < self._page_size:
                return rows
            offset += len(found)


def _rows(response: httpx.Response) -> list[dict[str, Any]]:
    """JSON rows (the simulator) or CSV text with a header line (what a public client reads from the real lake)."""
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        return [r for r in body if isinstance(r, dict)] if isinstance(body, list) else []
    return [dict(row) for row in csv.DictReader(io.StringIO(response.text))]
