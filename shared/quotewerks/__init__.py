"""The QuoteWerks client: read documents and customers, write the M3 order number back.

QuoteWerks publishes no REST API; installations reach it through its database, COM or scripting. This client
speaks the small HTTP API of our QuoteWerks side (the simulator, or an adapter at the customer's site) and is
the only place that knows it, so a customer can swap the transport. Documents come as QuoteWerks rows
(`DocumentHeader`, `DocumentItems`) and are turned into the bridge's contract here, at the edge.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, ParamSpec, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from shared.platform.audit import Audit, Outcome
from shared.quotewerks.documents import (
    DocumentError as DocumentError,
    customer_from_contact as customer_from_contact,
    parse_last_modified as parse_last_modified,
    party_from_contact as party_from_contact,
    quote_from_document as quote_from_document,
)
from shared.quotewerks.errors import (
    QuoteWerksConflictError as QuoteWerksConflictError,
    QuoteWerksError as QuoteWerksError,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

QUOTEWERKS_ATTEMPTS = 3
"""Tries of one QuoteWerks call (adapter or database) that failed for a transient reason: unreachable, 5xx, 429, a
dropped connection, a deadlock. Longer outages are the callers' to ride out (the consumers' retries, the poll)."""


def _transient(exc: BaseException) -> bool:
    # A conflict is retryable only after reading again, which the caller does; sending the same write again cannot help.
    return isinstance(exc, QuoteWerksError) and exc.retryable and not isinstance(exc, QuoteWerksConflictError)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("QuoteWerks call failed (attempt %d of %d), trying again: %s", state.attempt_number,
                QUOTEWERKS_ATTEMPTS, exc)  # fmt: skip


def quotewerks_retries(call: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """The one retry policy for QuoteWerks, used by both clients: transient failures are tried again, briefly.
    Every call it wraps is safe to repeat: reads, writes of whole values, and conditional writes (a repeat of one
    that had gone through is refused as a conflict, and the caller reads again)."""

    @functools.wraps(call)
    async def retried(*args: P.args, **kwargs: P.kwargs) -> R:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(QUOTEWERKS_ATTEMPTS),
            wait=wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
            retry=retry_if_exception(_transient),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                return await call(*args, **kwargs)
        raise AssertionError("unreachable: tenacity either returns, raises or retries")  # pragma: no cover

    return retried


class QuoteWerks(Protocol):
    """What the services ask of QuoteWerks, whichever way it is reached: `QuoteWerksClient` (an HTTP adapter, the
    simulator) or `shared.quotewerks.sql.QuoteWerksSqlClient` (its database; contacts there answer an error)."""

    async def document(self, doc_no: str) -> dict[str, Any]: ...
    async def documents(
        self, *, doc_type: str, status: str, modified_since: datetime | None
    ) -> list[dict[str, Any]]: ...
    async def update_document(self, doc_no: str, fields: Mapping[str, str]) -> None: ...
    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool: ...
    async def put_products(self, products: Mapping[str, Mapping[str, object]]) -> set[str]: ...
    async def find_product(self, part: str) -> dict[str, Any] | None: ...
    async def all_products(self) -> list[dict[str, Any]]: ...
    async def customer(self, account: str) -> dict[str, Any]: ...
    async def find_customer(self, account: str) -> dict[str, Any] | None: ...
    async def customers(self) -> list[dict[str, Any]]: ...
    async def put_customer(
        self, account: str, fields: Mapping[str, str], *, read_as: str | None = None, new: bool = False
    ) -> bool: ...
    async def aclose(self) -> None:
        """Close what the client opened itself (the SQL connector's pool), at the service's shutdown."""


class QuoteWerksClient:
    def __init__(self, base_url: str, api_key: SecretStr, *, http: httpx.AsyncClient, timeout_s: float = 15.0) -> None:
        self._base = base_url.rstrip("/") + "/api/v1"
        self._key = api_key
        self._http = http
        self._timeout = timeout_s

    async def aclose(self) -> None:
        """Nothing to close: the HTTP client belongs to the service runtime, which closes it."""

    @quotewerks_retries
    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer, unless QuoteWerks could not be reached or failed (retryable QuoteWerksError)."""
        headers = {**(kwargs.pop("headers", None) or {}), "X-API-Key": self._key.get_secret_value()}
        try:
            response = await self._http.request(
                method, self._base + path, headers=headers, timeout=self._timeout, **kwargs
            )
        except httpx.HTTPError as exc:
            raise QuoteWerksError(f"QuoteWerks unreachable: {type(exc).__name__}", retryable=True) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise QuoteWerksError(
                f"QuoteWerks answered {response.status_code}", retryable=True, status=response.status_code
            )
        return response

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = _accepted(await self._send(method, path, **kwargs), f"{method} {path}")
        return response.json() if response.content else None

    async def _put(
        self, path: str, what: str, fields: Mapping[str, object], headers: Mapping[str, str] | None = None
    ) -> bool:
        """Create or replace a record; True when it was created."""
        response = await self._send("PUT", path, json=dict(fields), headers=dict(headers or {}))
        if response.status_code == 412:
            raise QuoteWerksConflictError(f"QuoteWerks {what} changed since it was read: {response.text[:200]}")
        return _accepted(response, what).status_code == 201

    async def document(self, doc_no: str) -> dict[str, Any]:
        body = await self._request("GET", f"/documents/{quote(doc_no, safe='')}")
        if not isinstance(body, dict) or not isinstance(body.get("DocumentHeader"), dict):
            raise QuoteWerksError(f"document {doc_no}: unexpected answer shape", retryable=False)
        return body

    async def documents(self, *, doc_type: str, status: str, modified_since: datetime | None) -> list[dict[str, Any]]:
        params = {"DocType": doc_type, "DocStatus": status}
        if modified_since is not None:
            params["modified_since"] = modified_since.isoformat()
        body = await self._request("GET", "/documents", params=params)
        documents = body.get("documents") if isinstance(body, dict) else None
        if not isinstance(documents, list):
            raise QuoteWerksError("document list: unexpected answer shape", retryable=False)
        return [d for d in documents if isinstance(d, dict)]

    async def update_document(self, doc_no: str, fields: Mapping[str, str]) -> None:
        await self._request("PATCH", f"/documents/{quote(doc_no, safe='')}", json={"fields": dict(fields)})

    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool:
        """Create or replace a catalog product; True when it was created."""
        return await self._put(f"/products/{quote(part, safe='')}", f"product {part}", fields)

    async def put_products(self, products: Mapping[str, Mapping[str, object]]) -> set[str]:
        """Create or replace many catalog products in one request (all or none); the parts that were created."""
        body = {"products": [{**fields, "ManufacturerPartNumber": part} for part, fields in products.items()]}
        answer = _accepted(await self._send("PUT", "/products", json=body), f"{len(products)} products").json()
        created = answer.get("created") if isinstance(answer, dict) else None
        if not isinstance(created, list):
            raise QuoteWerksError("product batch: unexpected answer shape", retryable=False)
        return {str(part) for part in created}

    async def find_product(self, part: str) -> dict[str, Any] | None:
        """The catalog product, or None when QuoteWerks has no product with that part number."""
        response = await self._send("GET", f"/products/{quote(part, safe='')}")
        if response.status_code == 404:
            return None
        body = _accepted(response, f"product {part}").json()
        if not isinstance(body, dict):
            raise QuoteWerksError(f"product {part}: unexpected answer shape", retryable=False)
        return body

    async def all_products(self) -> list[dict[str, Any]]:
        """Every catalog product (to compare the catalog with M3's items)."""
        body = await self._request("GET", "/products")
        products = body.get("products") if isinstance(body, dict) else None
        if not isinstance(products, list):
            raise QuoteWerksError("products: unexpected answer shape", retryable=False)
        return [p for p in products if isinstance(p, dict)]

    async def customer(self, account: str) -> dict[str, Any]:
        body = await self._request("GET", f"/customers/{quote(account, safe='')}")
        if not isinstance(body, dict):
            raise QuoteWerksError(f"customer {account}: unexpected answer shape", retryable=False)
        return body

    async def find_customer(self, account: str) -> dict[str, Any] | None:
        """The contact-manager record, or None when QuoteWerks has no customer with that CMAccountNo."""
        try:
            return await self.customer(account)
        except QuoteWerksError as exc:
            if exc.status == 404:
                return None
            raise

    async def customers(self) -> list[dict[str, Any]]:
        body = await self._request("GET", "/customers")
        customers = body.get("customers") if isinstance(body, dict) else None
        if not isinstance(customers, list):
            raise QuoteWerksError("customer list: unexpected answer shape", retryable=False)
        return [c for c in customers if isinstance(c, dict)]

    async def put_customer(
        self, account: str, fields: Mapping[str, str], *, read_as: str | None = None, new: bool = False
    ) -> bool:
        """Create or replace a contact-manager record; True when it was created. `read_as` (the LastModified the
        record had when read) or `new` make the write conditional: QuoteWerksConflictError when someone else
        changed or created it meanwhile."""
        headers = {"If-Match": read_as} if read_as else ({"If-None-Match": "*"} if new else {})
        return await self._put(f"/customers/{quote(account, safe='')}", f"customer {account}", fields, headers)


def _accepted(response: httpx.Response, what: str) -> httpx.Response:
    """The answer, unless QuoteWerks refused the request (a 4xx: not retryable, the message says why)."""
    if response.status_code >= 400:
        raise QuoteWerksError(
            f"QuoteWerks refused {what}: {response.status_code} {response.text[:200]}",
            retryable=False,
            status=response.status_code,
        )
    return response


class AuditedQuoteWerks:
    """A QuoteWerks client whose writes go on the audit trail (`shared.platform.audit`): document write-backs, products,
    contacts, each with its business key (DocNo, part number, account) and outcome."""

    def __init__(self, inner: QuoteWerks, audit: Audit) -> None:
        self._inner = inner
        self._audit = audit

    async def _write(self, operation: str, keys: Mapping[str, str], work: Awaitable[R]) -> R:
        try:
            result = await work
        except QuoteWerksConflictError as conflict:
            self._audit("quotewerks", operation, keys, "refused", str(conflict))
            raise
        except QuoteWerksError as failed:
            outcome: Outcome = "failed" if failed.retryable else "refused"
            self._audit("quotewerks", operation, keys, outcome, str(failed))
            raise
        self._audit("quotewerks", operation, keys, "ok")
        return result

    async def document(self, doc_no: str) -> dict[str, Any]:
        return await self._inner.document(doc_no)

    async def documents(self, *, doc_type: str, status: str, modified_since: datetime | None) -> list[dict[str, Any]]:
        return await self._inner.documents(doc_type=doc_type, status=status, modified_since=modified_since)

    async def update_document(self, doc_no: str, fields: Mapping[str, str]) -> None:
        keys = {"DocNo": doc_no, "fields": ",".join(sorted(fields))}
        await self._write("document", keys, self._inner.update_document(doc_no, fields))

    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool:
        return await self._write("product", {"part": part}, self._inner.put_product(part, fields))

    async def put_products(self, products: Mapping[str, Mapping[str, object]]) -> set[str]:
        keys = {"first_part": next(iter(products), ""), "count": str(len(products))}
        return await self._write("products", keys, self._inner.put_products(products))

    async def find_product(self, part: str) -> dict[str, Any] | None:
        return await self._inner.find_product(part)

    async def all_products(self) -> list[dict[str, Any]]:
        return await self._inner.all_products()

    async def customer(self, account: str) -> dict[str, Any]:
        return await self._inner.customer(account)

    async def find_customer(self, account: str) -> dict[str, Any] | None:
        return await self._inner.find_customer(account)

    async def customers(self) -> list[dict[str, Any]]:
        return await self._inner.customers()

    async def put_customer(
        self, account: str, fields: Mapping[str, str], *, read_as: str | None = None, new: bool = False
    ) -> bool:
        work = self._inner.put_customer(account, fields, read_as=read_as, new=new)
        return await self._write("customer", {"account": account}, work)

    async def aclose(self) -> None:
        await self._inner.aclose()
