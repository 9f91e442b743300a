"""What every service process is made of: one Kafka broker, one HTTP app, health, metrics, heartbeats.

A service's `app.py` builds a `ServiceRuntime`, declares its subscribers with `runtime.subscriber` and its HTTP
routes on `runtime.app`, and nothing else; this module owns start-up order and graceful shutdown. Every
subscriber goes through `shared.consuming`: undecodable messages and ones that keep failing are dead-lettered,
never redelivered forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import shared
from shared import topics
from shared.auth import ROLES, GuardedRoute, KeyGuard, Role
from shared.consuming import Consumer, Consumers, FailureReply, GiveUpNotice, Handler, RetryPolicy, entry, raw_body
from shared.contracts import Heartbeat, Problem
from shared.correlation import HTTP_HEADER, _current, bind_correlation_id
from shared.dead_letters import dead_letter, send_to_dead_letters
from shared.health import Health
from shared.inbound import note_rejection
from shared.kafka import MessageTooLargeError, consumer_options, create_broker, publish
from shared.logs import configure_logging
from shared.metrics import describe_build, heartbeats_seen
from shared.settings import BridgeSettings
from shared.state import db
from shared.topics import Topic

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


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
    Routes may have stricter limits of their own (`shared.inbound.read_body`)."""

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


class ServiceRuntime:
    def __init__(self, settings: BridgeSettings, *, title: str, description: str, uses_state: bool = False) -> None:
        self.settings = settings
        self.name = settings.service_name
        configure_logging(
            self.name, level=settings.log_level, fmt=settings.log_format, secrets=settings.secret_values()
        )
        describe_build(self.name)
        self.broker: KafkaBroker = create_broker(settings)
        self.health = Health(self.name)
        self.peers: dict[str, Heartbeat] = {}
        self.engine: AsyncEngine | None = None
        self._http: httpx.AsyncClient | None = None
        self._uses_state = uses_state
        self._on_startup: list[Hook] = []
        self._on_shutdown: list[Hook] = []
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.consumers = Consumers(self.name, stall_after_s=settings.consumer_stall_after_s)
        self.retry_policy = RetryPolicy(
            max_attempts=settings.consumer_max_attempts,
            initial_s=settings.consumer_backoff_initial_s,
            max_s=settings.consumer_backoff_max_s,
        )

        self.health.add_check("kafka", self._kafka_ready)
        if uses_state:
            self.health.add_check("state", self._state_ready)
        self.health.set_detail("consumers", self.consumers.describe)
        self.subscriber(
            topics.HEARTBEAT,
            group=None,
            # No group, nothing committed: every replica of every service reads every heartbeat. A heartbeat that
            # cannot be read is skipped with one log line and counted; it is not worth a dead letter per replica.
            ack_policy=AckPolicy.ACK_FIRST,
            dead_letters=False,
            max_attempts=1,
            title=f"{self.name}/heartbeats",
            description="Every service listens to every heartbeat to report its peers in /healthz.",
        )(self._on_heartbeat)

        docs = settings.http_docs  # off: the OpenAPI document is still app.openapi(), for `m3bridge docs` and tests
        self.app = FastAPI(
            title=title,
            description=description,
            version=shared.__version__,
            lifespan=self._lifespan,
            openapi_url="/openapi.json" if docs else None,
            docs_url="/docs" if docs else None,
            redoc_url="/redoc" if docs else None,
        )
        # Every route added on the app checks its key (runtime.require) before its body is read.
        self.app.router.route_class = GuardedRoute
        self._guards: dict[Role, KeyGuard] = {}
        # Added first, so inside the correlation id: a refused body's answer carries one too.
        self.app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, service=self.name)
        self.app.add_middleware(CorrelationIdMiddleware)
        self.app.add_exception_handler(RequestValidationError, self._invalid_request)  # type: ignore[arg-type]
        self.app.add_exception_handler(StarletteHTTPException, self._http_error)  # type: ignore[arg-type]
        self.app.add_api_route("/healthz", self._healthz, methods=["GET"], tags=["operations"], summary="Liveness")
        self.app.add_api_route("/readyz", self._readyz, methods=["GET"], tags=["operations"], summary="Readiness")
        self.app.add_api_route(
            "/metrics",
            self._metrics,
            methods=["GET"],
            tags=["operations"],
            summary="Prometheus metrics",
            dependencies=[self.require("read")] if settings.metrics_require_key else None,
        )

    # --- extension points for services -----------------------------------------------------------------

    def on_startup(self, hook: Hook) -> Hook:
        """Run `hook` after the state store is migrated and before the broker starts consuming."""
        self._on_startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run `hook` after consumers have drained, before the state store closes."""
        self._on_shutdown.append(hook)
        return hook

    def require(self, role: Role) -> Any:
        """The dependency protecting a route with the bridge's one scheme: `dependencies=[runtime.require("operator")]`
        for operator actions, `"read"` for reads (the read key or the operator key). `Authorization: Bearer <key>` or
        `X-API-Key: <key>`; a wrong, missing or unconfigured key is a 401 before the body is read."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        guard = self._guards.get(role)
        if guard is None:
            operator = self.settings.operator_key.get_secret_value()
            keys = [operator] if role == "operator" else [self.settings.read_key.get_secret_value(), operator]
            guard = self._guards[role] = KeyGuard(role, keys)
        return guard.dependency()

    def _report_locked_routes(self) -> None:
        """One line at start-up per role whose key is not set: its routes refuse everyone until it is."""
        for role, guard in self._guards.items():
            if not guard.locked:
                continue
            paths = sorted(
                {str(getattr(route, "path", "")) for route in self.app.routes if guard in getattr(route, "guards", ())}
            )
            setting = "M3B_OPERATOR_KEY" if role == "operator" else "M3B_READ_KEY or M3B_OPERATOR_KEY"
            log.warning("%s routes %s answer 401 to every request until %s is set", role, ", ".join(paths) or "-",
                        setting)  # fmt: skip

    @property
    def http(self) -> httpx.AsyncClient:
        """The service's one HTTP client (token-service, M3, QuoteWerks), open from start-up to shutdown."""
        if self._http is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._http

    def subscriber_options(self, group: str | None) -> dict[str, Any]:
        return consumer_options(self.settings, group=group)

    def subscriber(
        self,
        topic: Topic,
        *,
        group: str | None,
        ack_policy: AckPolicy,
        title: str,
        description: str,
        max_attempts: int | None = None,
        reply_on_failure: FailureReply | None = None,
        on_give_up: GiveUpNotice | None = None,
        dead_letters: bool = True,
        raw: bool = False,
        **options: Any,
    ) -> Callable[[Handler], Handler]:
        """Subscribe `handler(payload: topic.payload, message: KafkaMessage)` to `topic` in consumer `group`.

        The bytes are validated against `topic.payload` here, not by faststream: a message that is not UTF-8,
        not JSON or not a valid payload goes to `dlq.<service>.v1` at once. A handler failing for retryable
        reasons is called again with backoff up to `max_attempts` (default `M3B_CONSUMER_MAX_ATTEMPTS`), then
        the message is dead-lettered; one whose exception has `retryable = False` at once. After a dead letter
        the handler returns, so `ack_policy` commits the offset and the partition moves on; `reply_on_failure`
        answers a request/reply requester then, and `on_give_up(payload, failure)` is told about a valid message
        given up on. `dead_letters=False` skips (logged, counted) instead. `raw=True` hands the handler the bytes as
        received, unvalidated (documents that are not JSON, such as XML BODs)."""
        policy = self.retry_policy
        if max_attempts is not None:
            policy = RetryPolicy(max_attempts=max_attempts, initial_s=policy.initial_s, max_s=policy.max_s)

        def register(handler: Handler) -> Handler:
            consumer = Consumer(
                service=self.name,
                subscriber=title,
                model=None if raw else topic.payload,
                handler=handler,
                dead_letter=self._dead_letter_raw,
                ack_policy=ack_policy,
                policy=policy,
                progress=self.consumers.add(title, topic.name),
                reply_on_failure=reply_on_failure,
                on_give_up=on_give_up,
                dead_letters=dead_letters,
                stopping=self._stopping.is_set,
                sleep=self._backoff,
            )
            self.broker.subscriber(
                topic.name,
                **consumer_options(self.settings, group=group),
                ack_policy=ack_policy,
                decoder=raw_body,
                title=title,
                description=description,
                **options,
            )(entry(consumer, getattr(handler, "__name__", title)))
            return handler

        return register

    async def dead_letter(
        self,
        message: KafkaMessage,
        *,
        error_class: str,
        problems: Sequence[Problem] = (),
        error_message: str = "",
        attempts: int = 1,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Keep a consumed message this service cannot process in `dlq.<service>.v1`, with the reason a person
        needs (the problems' messages unless `error_message` says it), to be listed and replayed."""
        extra = {"problems": [p.model_dump() for p in problems]} if problems else {}
        letter = dead_letter(
            message,
            service=self.settings.service_name,
            error_class=error_class,
            error_message=error_message or "; ".join(p.message for p in problems) or error_class,
            attempts=attempts,
            details={**(details or {}), **extra},
        )
        max_bytes = self.settings.kafka_max_request_size
        try:
            await send_to_dead_letters(self.broker, letter, max_bytes=max_bytes)
        except MessageTooLargeError:
            # The original (close to the size limit, or base64 of one) does not fit into a letter: keep the
            # letter without it rather than loop; its origin says where the original is.
            size = len(message.body or b"")
            log.warning("dead letter of %s@%s too large: kept without its %d-byte payload", letter.origin_topic,
                        letter.origin_offset, size)  # fmt: skip
            trimmed = letter.model_copy(
                update={
                    "original_payload": "",
                    "original_payload_encoding": "utf-8",
                    "details": {**letter.details, "payload_omitted": f"{size} bytes, larger than a dead letter"},
                }
            )
            await send_to_dead_letters(self.broker, trimmed, max_bytes=max_bytes)

    async def _dead_letter_raw(
        self,
        message: Any,
        *,
        error_class: str,
        error_message: str,
        attempts: int,
        details: Mapping[str, Any] | None,
    ) -> None:
        await self.dead_letter(
            message, error_class=error_class, error_message=error_message, attempts=attempts, details=details
        )

    async def _backoff(self, seconds: float) -> None:
        """The wait between two attempts of a message; cut short when the service stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # --- lifecycle ---------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        self._report_locked_routes()
        if self._uses_state:
            await db.migrate(self.settings.state_url)
            self.engine = db.create_engine(self.settings.state_url)
        self._http = httpx.AsyncClient()
        try:
            for hook in self._on_startup:
                await hook()
            await self.broker.start()
        except BaseException:
            # A service that cannot start must not leave its connections open behind it.
            await self.broker.stop()
            await self._http.aclose()
            if self.engine is not None:
                await self.engine.dispose()
            raise
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        log.info("%s started on %s:%s", self.name, self.settings.http_host, self.settings.http_port)
        try:
            yield
        finally:
            log.info("%s stopping: draining in-flight work", self.name)
            self.health.stopping = True
            self._stopping.set()
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._send_heartbeat(), 2)
            await self.broker.stop()
            for hook in reversed(self._on_shutdown):
                await hook()
            await self._http.aclose()
            if self.engine is not None:
                await self.engine.dispose()
            log.info("%s stopped", self.name)

    # --- refusals ----------------------------------------------------------------------------------------

    async def _invalid_request(self, request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, but never failing on what the request held (bytes that are not UTF-8, deep structures):
        each error's type, location and message, and its input only when it is a short scalar."""
        errors = [_safe_error(error) for error in exc.errors()[:20]]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        note_rejection(self.name, 422, "invalid", f"{request.method} {request.url.path}: {where}: {first['msg']}")
        return JSONResponse({"detail": errors}, 422)

    async def _http_error(self, request: Request, exc: StarletteHTTPException) -> Response:
        """Refusals raised as HTTPException (401, 404, 413, a body FastAPI cannot parse, ...) are logged and counted;
        the answer is FastAPI's."""
        if 400 <= exc.status_code < 500:
            reason = getattr(exc, "reason", None) or _REASONS.get(exc.status_code, f"status_{exc.status_code}")
            note_rejection(self.name, exc.status_code, reason, f"{request.method} {request.url.path}: {exc.detail}")
        return await http_exception_handler(request, exc)

    # --- health ------------------------------------------------------------------------------------------

    async def _kafka_ready(self) -> str | None:
        return None if await self.broker.ping(timeout=2.0) else "broker not reachable"

    async def _state_ready(self) -> str | None:
        if self.engine is None:
            return "state store not open"
        await db.ping(self.engine)
        return None

    async def _healthz(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            **self.health.liveness(),
            "peers": {
                name: {
                    "ready": beat.ready,
                    "instance": beat.instance,
                    "last_seen_s": round((now - beat.sent_at).total_seconds(), 1),
                }
                for name, beat in sorted(self.peers.items())
            },
        }

    async def _metrics(self) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def _readyz(self) -> JSONResponse:
        ready, checks = await self.health.readiness()
        return JSONResponse({"service": self.name, "ready": ready, "checks": checks}, status_code=200 if ready else 503)

    # --- heartbeats --------------------------------------------------------------------------------------

    async def _on_heartbeat(self, beat: Heartbeat, _message: KafkaMessage) -> None:
        previous = self.peers.get(beat.service)
        if previous is None or beat.sent_at >= previous.sent_at:
            self.peers[beat.service] = beat
        heartbeats_seen.labels(self.name, beat.service).inc()

    async def _send_heartbeat(self) -> None:
        ready, checks = await self.health.readiness()
        beat = Heartbeat(
            service=self.name,
            instance=self.settings.instance_id,
            version=shared.__version__,
            started_at=datetime.fromtimestamp(self.health.started_at, UTC),
            sent_at=datetime.now(UTC),
            ready=ready,
            checks=checks,
        )
        await publish(self.broker, topics.HEARTBEAT, beat, key=self.name)

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self._send_heartbeat()
            except Exception as exc:  # the next beat may well succeed; /readyz reports the broker state
                log.warning("heartbeat not sent: %s", exc)
            await asyncio.sleep(self.settings.heartbeat_interval_s)


_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


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


def serve(runtime: ServiceRuntime) -> None:
    """Run the service's HTTP side and broker until SIGINT/SIGTERM, then drain and exit."""
    import uvicorn

    uvicorn.run(
        runtime.app,
        host=runtime.settings.http_host,
        port=runtime.settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(runtime.settings.shutdown_grace_s),
    )
