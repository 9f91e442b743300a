"""How every service answers a refused HTTP request (422, other 4xx): logged and counted, never echoing unsafe input."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from shared.platform.inbound import note_rejection

_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def add_refusal_handlers(app: FastAPI, service: str) -> None:
    """Install `service`'s answers to invalid requests and to HTTPExceptions on `app`."""
    app.add_exception_handler(RequestValidationError, invalid_request_handler(service))  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error_handler(service))  # type: ignore[arg-type]


def invalid_request_handler(service: str) -> Callable[[Request, RequestValidationError], Awaitable[JSONResponse]]:
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, but never failing on what the request held (bytes that are not UTF-8, deep structures):
        each error's type, location and message, and its input only when it is a short scalar."""
        errors = [_safe_error(error) for error in exc.errors()[:20]]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        note_rejection(service, 422, "invalid", f"{request.method} {request.url.path}: {where}: {first['msg']}")
        return JSONResponse({"detail": errors}, 422)

    return invalid_request


def http_error_handler(service: str) -> Callable[[Request, StarletteHTTPException], Awaitable[Response]]:
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Refusals raised as HTTPException (401, 404, 413, a body FastAPI cannot parse, ...) are logged and counted;
        the answer is FastAPI's."""
        if 400 <= exc.status_code < 500:
            reason = getattr(exc, "reason", None) or _REASONS.get(exc.status_code, f"status_{exc.status_code}")
            note_rejection(service, exc.status_code, reason, f"{request.method} {request.url.path}: {exc.detail}")
        return await http_exception_handler(request, exc)

    return http_error


def _safe_input(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return bytes(value[:200]).decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return value[:200]
    if value is None or isinstance(value, bool | int | float):
        return value if not isinstance(value, int) or abs(value) < 10**18 else str(value)[:40]
    return None  # a structure: not echoed (it may nest deeply or be large)


def _safe_error(error: Mapping[str, Any]) -> dict[str, Any]:
    loc = [part if isinstance(part, int) else str(part)[:100] for part in error.get("loc", ())][:20]
    safe: dict[str, Any] = {"type": str(error.get("type", ""))[:60], "loc": loc, "msg": str(error.get("msg", ""))[:300]}
    shown = _safe_input(error.get("input"))
    if shown is not None:
        safe["input"] = shown
    return safe
