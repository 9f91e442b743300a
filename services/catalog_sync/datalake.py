"""Infor Data Lake (Data Fabric Compass v2) queries: submit SQL, poll the status, page the result.

Each request goes through the M3 client's Gateway path (a token-service lease at bulk priority, retries, 429/401
reports), to `{iu}/{ti}/DATAFABRIC/compass/v2/…`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from typing import Any
from urllib.parse import quote

import httpx

from shared.m3 import M3Client
from shared.m3.lease import Priority

#: What a Data Lake query id looks like (a UUID or another plain identifier).
QUERY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class DataLakeError(Exception):
    """A query the Data Lake ran but did not finish (FAILED, or still running at the deadline)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class DataLakeClient:
    """Requests go through `M3Client.gateway` (lease, retries, 429/401 reports, error classes: `shared.m3`)."""

    def __init__(
        self, m3: M3Client, *, poll_s: float = 0.2, timeout_s: float = 600.0, page_size: int = 100_000
    ) -> None:
        self._m3 = m3
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._page_size = min(page_size, 100_000)

    async def _call(self, method: str, path: str, step: str, **request: Any) -> httpx.Response:
        return await self._m3.gateway(
            method, f"/DATAFABRIC/compass/v2/{path}", priority=Priority.BULK, label=("DATAFABRIC", step), **request
        )

    async def query(self, sql: str) -> list[dict[str, Any]]:
        """Run one query to the end and return every row."""
        submitted = await self._call(
            "POST", "jobs/", "submit", content=sql.encode(), headers={"Content-Type": "text/plain"}
        )
        query_id = str(submitted.json().get("queryId", ""))
        if not QUERY_ID.fullmatch(query_id):
            # It goes into the URL path of the next calls: anything but a plain identifier is refused, not sent.
            raise DataLakeError(f"the Data Lake answered an unusable query id {query_id[:80]!r}", retryable=False)
        query_id = quote(query_id, safe="")
        deadline = time.monotonic() + self._timeout_s
        while True:
            status = str((await self._call("GET", f"jobs/{query_id}/status/", "status")).json().get("status", ""))
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
                "GET",
                f"jobs/{query_id}/result/",
                "result",
                params={"offset": offset, "limit": self._page_size},
                headers={"Accept": "application/json"},  # the lake answers in the format asked for (CSV otherwise)
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
