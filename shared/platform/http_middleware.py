"""The ASGI middleware in front of every service's HTTP app: the request's correlation id and the body size limit."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.platform.correlation import HTTP_HEADER, _current, bind_correlation_id
from shared.platform.inbound import note_rejection


class CorrelationIdMiddleware:
    """Takes `X-Correlation-ID` from the request (or makes one), binds it for the request, and echoes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = HTTP_HEADER.lower().encode()
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == header), None)
        token = _current.set(None)
        # Only short printable ids are taken over; anything else could be used to forge log lines.
        correlation_id = bind_correlation_id(
            incoming if incoming and incoming.isprintable() and len(incoming) <= 128 else None
        )

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (header, correlation_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)


class BodyTooLargeError(HTTPException):
    """A request body grew past the service's limit while it was read (raised from `receive`; FastAPI passes
    HTTPExceptions through its body parsing, so the answer is a 413 wherever the body is read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body over {limit} bytes")


class BodyLimitMiddleware:
    """The outer bound on every request body: a Content-Length over `max_bytes` is answered 413 before anything is
    read or routed; a body without one (chunked) is counted while it streams and refused once it passes the limit.
    Routes may have stricter limits of their own (`shared.platform.inbound.read_body`)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, service: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send, f"Content-Length over {self.max_bytes} bytes")
            return
        received = 0
        over = False  # the body passed the limit while it was read
        started = False  # a response has begun (the app's or our 413)
        replaced = False  # the app's answer is dropped: ours, a 413, went instead

        async def counted_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def checked_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
                if over and message["status"] != 413:
                    # The app caught the refusal and answered something else: the answer is still "too large".
                    replaced = True
                    await self._refuse(scope, send, f"body over {self.max_bytes} bytes")
                    return
            await send(message)

        try:
            await self.app(scope, counted_receive, checked_send)
        except BodyTooLargeError:
            if started:
                raise
            await self._refuse(scope, send, f"body over {self.max_bytes} bytes")

    async def _refuse(self, scope: Scope, send: Send, detail: str) -> None:
        note_rejection(self.service, 413, "too_large", f"{scope.get('method', '')} {scope.get('path', '')}: {detail}")
        response = JSONResponse({"detail": detail}, 413, headers={"Connection": "close"})
        await response(scope, _no_body, send)


def _declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, None when there is none or it is not a number (the server refuses those)."""
    value = next((v for k, v in scope["headers"] if k == b"content-length"), b"").strip()
    if not value.isdigit():  # bytes: ASCII digits only
        return None
    return int(value) if len(value) <= 18 else 10**18  # int() refuses thousands of digits


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
