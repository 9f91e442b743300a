"""What every service process is made of: one Kafka broker, one HTTP app, health, metrics, heartbeats.

A service's `app.py` builds a `ServiceRuntime`, declares its subscribers with `runtime.subscriber` and its HTTP
routes on `runtime.app`, its hooks (`on_startup`, `after_broker_start`, `on_shutdown`), and nothing else; this
module owns start-up order and graceful shutdown. Every subscriber goes through `shared.platform.consuming`: undecodable
messages and ones that keep failing are dead-lettered, never redelivered forever. The parts it assembles live beside
it: `shared.platform.http_middleware`, `shared.platform.http_refusals`, `shared.platform.operations_routes`,
`shared.platform.heartbeats`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from shared.contracts import AuditEvent, Heartbeat, topics
from shared.contracts.topics import AUDIT, Topic
from shared.platform import crash_points
from shared.platform.api_keys import ApiKeys
from shared.platform.audit import Audit, AuditTrail
from shared.platform.auth import KeyGuard, Role
from shared.platform.background import Background
from shared.platform.consuming import (
    Consumer,
    Consumers,
    FailureReply,
    GiveUpNotice,
    Handler,
    RetryPolicy,
    entry,
    lanes_entry,
    raw_body,
)
from shared.platform.dead_lettering import DeadLettering
from shared.platform.health import Health
from shared.platform.heartbeats import Heartbeats
from shared.platform.http_app import create_app
from shared.platform.kafka import consumer_options, create_broker, publish
from shared.platform.lanes import Lanes
from shared.platform.logs import configure_logging
from shared.platform.metrics import describe_build
from shared.platform.outgoing_tls import outgoing_tls as outgoing_tls
from shared.platform.readiness import Readiness
from shared.platform.settings import BridgeSettings
from shared.platform.started import NotStartedError
from shared.platform.work_queue import ChangeWorkQueue

if TYPE_CHECKING:
    # The state store's libraries (SQLAlchemy, Alembic, the drivers: some 40 MB) are imported only by a service that
    # opens it; token-service and inventory-query never do.
    from sqlalchemy.ext.asyncio import AsyncEngine

    from shared.platform.outbox import Outbox

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


class ServiceRuntime(ApiKeys, Background, DeadLettering, Readiness):
    def __init__(
        self,
        settings: BridgeSettings,
        *,
        description: str,
        uses_state: bool = False,
        uses_outbox: bool = False,
        title: str | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.service_name
        configure_logging(
            self.name, level=settings.log_level, fmt=settings.log_format, secrets=settings.secret_values()
        )
        describe_build(self.name)
        crash_points.arm(settings.crash_points)
        self.broker: KafkaBroker = create_broker(settings)
        self.health = Health(self.name)
        self.heartbeats = Heartbeats(settings, self.broker, self.health)
        self.peers: dict[str, Heartbeat] = self.heartbeats.peers
        self.engine: AsyncEngine | None = None
        self._http: httpx.AsyncClient | None = None
        self._uses_state = uses_state or uses_outbox
        self._uses_outbox = uses_outbox
        self._outbox: Outbox | None = None
        self._on_startup: list[Hook] = []
        self._after_broker_start: list[Hook] = []
        self._on_shutdown: list[Hook] = []
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._background: dict[asyncio.Task[object], Callable[[], None] | None] = {}
        self._stopping = asyncio.Event()
        #: The audit trail of writes to M3 and QuoteWerks: give `runtime.audit` to the clients that write.
        self.audit_trail = AuditTrail(self.name, self._publish_audit)
        self.audit: Audit = self.audit_trail.record
        self._audit_task: asyncio.Task[object] | None = None
        self._subscribed_topics: set[str] = set()
        self._consumer_groups: set[tuple[str, str]] = set()
        self.consumers = Consumers(self.name, stall_after_s=settings.consumer_stall_after_s)
        self._lanes: dict[str, Lanes] = {}
        self.work_queue = ChangeWorkQueue(self.name, lambda: self.engine)
        self.retry_policy = RetryPolicy(
            max_attempts=settings.consumer_max_attempts,
            initial_s=settings.consumer_backoff_initial_s,
            max_s=settings.consumer_backoff_max_s,
            budget_s=settings.consumer_message_budget_s,
        )

        self.health.add_check("kafka", self._kafka_ready)
        if uses_state:
            self.health.add_check("state", self._state_ready)
        self.health.set_detail("consumers", self._describe_consumers)
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
        )(self.heartbeats.on_heartbeat)

        self._guards: dict[Role, KeyGuard] = {}
        self.app = create_app(self, title=title, description=description)

    # --- extension points for services -----------------------------------------------------------------

    def on_startup(self, hook: Hook) -> Hook:
        """Run `hook` after the state store is migrated and before the broker starts consuming (work that needs the
        broker, such as publishing, goes into `after_broker_start`)."""
        self._on_startup.append(hook)
        return hook

    def after_broker_start(self, hook: Hook) -> Hook:
        """Run `hook` once the broker has started (it can publish; the subscribers consume already), before the
        service reports itself started. Start long work as a task. A hook that fails stops the service the way a
        shutdown does (broker, shutdown hooks, connections) and fails the start."""
        self._after_broker_start.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run `hook` after consumers have drained, before the state store closes."""
        self._on_shutdown.append(hook)
        return hook

    def _describe_consumers(self) -> dict[str, Any]:
        described = self.consumers.describe()
        for title, lanes in self._lanes.items():
            described["subscribers"].get(title, {})["lanes"] = lanes.describe()
        return described

    @property
    def http(self) -> httpx.AsyncClient:
        """The service's one HTTP client (token-service, M3, QuoteWerks), open from start-up to shutdown."""
        if self._http is None:
            raise NotStartedError(f"{self.name} is not started")
        return self._http

    @property
    def state(self) -> AsyncEngine:
        """The state store's engine (a service created with `uses_state=True`), open from start-up to shutdown."""
        if self.engine is None:
            raise NotStartedError(f"{self.name}: the state store is not open")
        return self.engine

    def subscriber_options(self, group: str | None) -> dict[str, Any]:
        return consumer_options(self.settings, group=group)

    def subscriber(
        self,
        topic: Topic,
        *,
        group: str | None,
        title: str,
        description: str,
        max_attempts: int | None = None,
        reply_on_failure: FailureReply | None = None,
        on_give_up: GiveUpNotice | None = None,
        dead_letters: bool = True,
        raw: bool = False,
        ack_policy: AckPolicy = AckPolicy.NACK_ON_ERROR,
        in_flight: int | None = None,
        work_kind: str | None = None,
        **options: Any,
    ) -> Callable[[Handler], Handler]:
        """Subscribe `handler(payload: topic.payload, message: KafkaMessage)` to `topic` in consumer `group`.

        The bytes are validated against `topic.payload` here, not by faststream: a message that is not UTF-8,
        not JSON or not a valid payload goes to `dlq.<service>.v1` at once. A handler failing for retryable
        reasons is called again with backoff up to `max_attempts` (default `M3B_CONSUMER_MAX_ATTEMPTS`), then
        the message is dead-lettered; one whose exception has `retryable = False` at once. After a dead letter
        the handler returns, so `ack_policy` commits the offset and the partition moves on (the default,
        NACK_ON_ERROR, commits once the handler, with whatever it published or dead-lettered, is done: a crash
        before redelivers the message); `reply_on_failure`
        answers a request/reply requester then, and `on_give_up(payload, failure)` is told about a valid message
        given up on. `dead_letters=False` skips (logged, counted) instead. `raw=True` hands the handler the bytes as
        received, unvalidated (documents that are not JSON, such as XML BODs).

        `in_flight=N` handles up to N messages at once in lanes per message key (`shared.platform.lanes`): a key's
        messages in order, each partition committed up to its lowest unfinished offset (`ack_policy` does not apply).

        `work_kind` (a service with a state store): a valid message given up on is also a work item of that kind
        (`shared.platform.work_queue`), closed when `m3bridge work retry` sends it again and it is applied."""
        self._subscribed_topics.add(topic.name)
        if group is not None:
            self._consumer_groups.add((group, topic.name))
        if work_kind is not None:
            self.work_queue.declare(topic.name, work_kind)
        policy = self.retry_policy
        if max_attempts is not None:
            policy = RetryPolicy(
                max_attempts=max_attempts, initial_s=policy.initial_s, max_s=policy.max_s, budget_s=policy.budget_s
            )

        lanes: Lanes | None = None
        if in_flight is not None:
            lanes = Lanes(service=self.name, subscriber=title, max_in_flight=in_flight,
                          revoke_wait_s=self.settings.shutdown_grace_s)  # fmt: skip
            self._lanes[title] = lanes
            ack_policy = AckPolicy.MANUAL
            options["listener"] = lanes

        def register(handler: Handler) -> Handler:
            consumer = Consumer(
                service=self.name,
                subscriber=title,
                model=None if raw else topic.payload,
                handler=handler if work_kind is None else self.work_queue.closing(handler),
                dead_letter=self._dead_letter_raw,
                ack_policy=ack_policy,
                policy=policy,
                progress=self.consumers.add(title, topic.name),
                reply_on_failure=reply_on_failure,
                on_give_up=on_give_up,
                dead_letters=dead_letters,
                commits_elsewhere=lanes is not None,
                stopping=self._stopping.is_set,
                sleep=self._backoff,
            )
            name = getattr(handler, "__name__", title)
            self.broker.subscriber(
                topic.name,
                **consumer_options(self.settings, group=group),
                ack_policy=ack_policy,
                decoder=raw_body,
                title=title,
                description=description,
                **options,
            )(entry(consumer, name) if lanes is None else lanes_entry(consumer, lanes, name))
            return handler

        return register

    @property
    def outbox(self) -> Outbox:
        """The service's outbox (`uses_outbox=True`): record messages with the state that decided them, then send."""
        if self._outbox is None:
            raise NotStartedError(f"{self.name}: the outbox is open only once the service started with uses_outbox")
        return self._outbox

    async def _publish_audit(self, event: AuditEvent) -> None:
        await self.publish(AUDIT, event, next(iter(event.keys.values()), event.service))

    async def publish(self, topic: Topic, payload: BaseModel, key: str) -> None:
        """`shared.platform.kafka.publish` with this service's broker and size limit (M3B_KAFKA_MAX_REQUEST_SIZE)."""
        await publish(self.broker, topic, payload, key=key, max_bytes=self.settings.kafka_max_request_size)

    async def _backoff(self, seconds: float) -> None:
        """The wait between two attempts of a message; cut short when the service stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # --- lifecycle ---------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        self._report_locked_routes()
        if self._uses_state:
            from shared.platform.outbox import Outbox, broker_publisher
            from shared.platform.state import db

            await db.migrate(self.settings.state_dsn())
            self.engine = db.create_engine(self.settings.state_dsn(), pool_size=self.settings.state_pool_size)
            if self._uses_outbox:
                limit = self.settings.kafka_max_request_size
                self._outbox = Outbox(self.engine, broker_publisher(self.broker, max_bytes=limit), max_bytes=limit)
                self.health.set_detail("outbox", self._outbox.describe)
            await self.work_queue.refresh_count()
        self._http = httpx.AsyncClient(verify=outgoing_tls(self.settings))
        try:
            for hook in self._on_startup:
                await hook()
            # Before the consumers subscribe: a broker that creates topics on demand would hide the missing ones.
            await self._say_missing_topics()
            await self.broker.start()
            self._audit_task = asyncio.create_task(self.audit_trail.run(), name="audit-trail")
        except BaseException:
            # A service that cannot start must not leave its connections open behind it.
            await self._close(undo_start_hooks=False)
            raise
        try:
            for hook in self._after_broker_start:
                await hook()
        except BaseException:
            # The broker consumes already and every start hook ran: stop as at a normal shutdown, then fail.
            self.health.stopping = True
            self._stopping.set()
            await self._close(undo_start_hooks=True)
            raise
        self._heartbeat_task = asyncio.create_task(self.heartbeats.loop(self._stopping), name="heartbeat")
        if self._outbox is not None:
            relay_stop = asyncio.Event()
            interval = self.settings.outbox_relay_interval_s
            self.in_background(self._outbox.relay(relay_stop, interval_s=interval), name="outbox-relay",
                               stop=relay_stop.set)  # fmt: skip
        if self._consumer_groups and self.settings.consumer_lag_interval_s > 0:
            from shared.platform.consumer_lag import ConsumerLag

            lag = ConsumerLag(self.settings, self._consumer_groups)
            self.health.set_detail("backlog", lag.describe)
            self.in_background(lag.run(), name="consumer-lag", stop=lag.stop)
        log.info("%s started on %s:%s", self.name, self.settings.http_host, self.settings.http_port)
        try:
            yield
        finally:
            log.info("%s stopping: draining in-flight work", self.name)
            self.health.stopping = True
            self._stopping.set()
            try:
                await asyncio.wait_for(self._heartbeat_task, 2)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("heartbeat loop did not stop in 2 s; abandoned")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.heartbeats.send(), 2)
            await self._close(undo_start_hooks=True)
            log.info("%s stopped", self.name)

    async def _close(self, *, undo_start_hooks: bool) -> None:
        """Stop the broker (consumers drain) and the background work, run the shutdown hooks when every start hook
        ran, close the HTTP client and the state store. Lanes drain first: the broker's stop does not wait for them."""
        for lanes in self._lanes.values():
            await lanes.drain(self.settings.shutdown_grace_s)
        if self._audit_task is not None and not self._audit_task.done():
            await self.audit_trail.drain(2.0)  # the writes' records, while the broker still takes them
        await self.broker.stop()
        if self._audit_task is not None:
            self._audit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._audit_task
        await self._stop_background()
        if undo_start_hooks:
            for hook in reversed(self._on_shutdown):
                await hook()
        if self._http is not None:
            await self._http.aclose()
        if self.engine is not None:
            await self.engine.dispose()


def serve(runtime: ServiceRuntime) -> None:
    """Run the service's HTTP side and broker until SIGINT/SIGTERM, then drain and exit. With a certificate and key
    (M3B_HTTP_TLS_*) the HTTP side speaks TLS 1.2 or newer only."""
    import uvicorn

    settings = runtime.settings
    tls = settings.http_tls_cert_file is not None and settings.http_tls_key_file is not None
    config = uvicorn.Config(
        runtime.app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        ssl_certfile=str(settings.http_tls_cert_file) if tls else None,
        ssl_keyfile=str(settings.http_tls_key_file) if tls else None,
    )
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    settle_the_collector()
    uvicorn.Server(config).run()


def settle_the_collector() -> None:
    """What was built so far (modules, classes, settings, the app and its schemas: some 120,000 objects) lives as long
    as the process. Frozen out of the garbage collector's sight, a full collection walks only what the work allocates:
    well under a millisecond instead of 30-40 ms on an idle machine, and more on a busy one — a stall of the event
    loop that sends together the Gateway requests whose permits were granted during it, which the Gateway counts as
    a burst."""
    gc.collect()
    gc.freeze()
