"""QuoteWerks product catalog calls (GET/PUT /api/v1/products/{ManufacturerPartNumber}).

Same conventions as `shared.quotewerks.QuoteWerksClient` (base URL + `/api/v1`, `X-API-Key`, the same error class).
It lives here only because that module belongs to another change; it should move into `shared/quotewerks.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from shared.quotewerks import QuoteWerksError


class ProductCatalog:
    def __init__(self, base_url: str, api_key: SecretStr, *, http: httpx.AsyncClient, timeout_s: float = 15.0) -> None:
        self._base = base_url.rstrip("/") + "/api/v1/products/"
        self._key = api_key
        self._http = http
        self._timeout = timeout_s

    async def _request(self, method: str, part: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(
                method,
                self._base + quote(part, safe=""),
                headers={"X-API-Key": self._key.get_secret_value()},
                timeout=self._timeout,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise QuoteWerksError(f"QuoteWerks unreachable: {type(exc).__name__}", retryable=True) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise QuoteWerksError(
                f"QuoteWerks answered {response.status_code}", retryable=True, status=response.status_code
            )
        return response

    async def product(self, part: str) -> dict[str, Any] | None:
        response = await self._request("GET", part)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise QuoteWerksError(
                f"QuoteWerks refused GET product {part}: {response.status_code} {response.text[:200]}",
                retryable=False,
                status=response.status_code,
            )
        body = response.json()
        return body if isinstance(body, dict) else None

    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool:
        """Create or replace the product; True when it was created."""
        response = await self._request("PUT", part, json=dict(fields))
        if response.status_code >= 400:
            raise QuoteWerksError(
                f"QuoteWerks refused PUT product {part}: {response.status_code} {response.text[:200]}",
                retryable=False,
                status=response.status_code,
            )
        return response.status_code == 201
