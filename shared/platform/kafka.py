"""Kafka wiring shared by every service: the broker, correlation headers, and the one way to publish."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from contextvars import Token
from typing import Any

from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.kafka.security import parse_security
from faststream.message import StreamMessage
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from prometheus_client import REGISTRY
from pydantic import BaseModel

from shared.contracts.topics import Topic
from shared.platform.correlation import (
    KAFKA_HEADER,
    SOURCE_HEADER,
    _current,
    bind_correlation_id,
    current_correlation_id,
    new_correlation_id,
)
from shared.platform.metrics import PREFIX, messages_published
from shared.platform.settings import BridgeSettings

log = logging.getLogger(__name__)

#: Names what a message was sent again for: a dead letter (`dlq.<service>.v1:<partition>:<offset>`) or a work item
#: (`work-item:<id>`).
REPLAY_HEADER = "m3bridge-replayed-from"


class MessageTooLargeError(ValueError):
    """A payload exceeds the producer's size limit; raised before anything is sent."""


def kafka_ssl_context(settings: BridgeSettings) -> ssl.SSLContext:
    """TLS 1.2 or newer to the brokers, checked against M3B_KAFKA_SSL_CA_FILE (else the system's trust store), with
    this client's certificate when M3B_KAFKA_SSL_CERT_FILE / _KEY_FILE are set."""
    cafile = str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.kafka_ssl_cert_file is not None and settings.kafka_ssl_key_file is not None:
        context.load_cert_chain(str(settings.kafka_ssl_cert_file), str(settings.kafka_ssl_key_file))
    return context


def kafka_security(settings: BridgeSettings) -> BaseSecurity | None:
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    use_ssl = protocol in ("SSL", "SASL_SSL")
    ssl_context = kafka_ssl_context(settings) if use_ssl else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=ssl_context, use_ssl=True)
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    return sasl[settings.kafka_sasl_mechanism](
        settings.kafka_sasl_username,
        settings.kafka_sasl_password.get_secret_value(),
        ssl_context=ssl_context,
        use_ssl=use_ssl,
    )


def aiokafka_client_options(settings: BridgeSettings) -> dict[str, Any]:
    """Connection options for plain aiokafka clients (admin, probes), equal to the broker's."""
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, **parse_security(kafka_security(settings))}


def correlation_middleware(source: str) -> type[BaseMiddleware]:
    """Carries the `correlation-id` header into the handler's context and onto everything it publishes,
    and stamps every published message with `source`."""

    class CorrelationMiddleware(BaseMiddleware):
        async def consume_scope(
            self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
        ) -> Any:
            incoming = msg.headers.get(KAFKA_HEADER) or msg.correlation_id
            token: Token[str | None] = _current.set(None)
            bind_correlation_id(str(incoming) if incoming else None)
            try:
                return await call_next(msg)
            finally:
                _current.reset(token)

        async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
            # A handler's reply is published after its context is gone: then the command's own id is the request's.
            correlation_id = (
                cmd.headers.get(KAFKA_HEADER) or current_correlation_id() or cmd.correlation_id or new_correlation_id()
            )
            cmd.headers[KAFKA_HEADER] = correlation_id
            cmd.headers.setdefault(SOURCE_HEADER, source)
            cmd.correlation_id = correlation_id
            return await call_next(cmd)

    return CorrelationMiddleware


def create_broker(settings: BridgeSettings) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"m3bridge-{settings.service_name}",
        security=kafka_security(settings),
        enable_idempotence=settings.kafka_enable_idempotence,
        max_request_size=settings.kafka_max_request_size,
        # Topics are created up front with fixed partition counts; never let a typo create one.
        allow_auto_create_topics=False,
        graceful_timeout=settings.shutdown_grace_s,
        middlewares=(
            correlation_middleware(settings.service_name),
            KafkaPrometheusMiddleware(registry=REGISTRY, app_name=settings.service_name, metrics_prefix=PREFIX),
        ),
        logger=logging.getLogger("faststream"),
        # One line per consumed message (heartbeats included) is noise at INFO; the metrics count them.
        log_level=logging.DEBUG,
    )


def consumer_options(settings: BridgeSettings, group: str | None) -> dict[str, Any]:
    """Options every subscriber uses. "earliest" because a new group must not skip what was produced before
    it joined (and the embedded broker's "latest" offsets are wrong)."""
    return {
        "group_id": group,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "max_poll_interval_ms": settings.kafka_max_poll_interval_ms,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
    }


def encode(topic: Topic, payload: BaseModel, *, max_bytes: int) -> bytes:
    if not isinstance(payload, topic.payload):
        raise TypeError(f"{topic.name} carries {topic.payload.__name__}, not {type(payload).__name__}")
    body = payload.model_dump_json().encode()
    if len(body) > max_bytes:
        raise MessageTooLargeError(f"{topic.name} message of {len(body)} bytes exceeds the {max_bytes}-byte limit")
    return body


async def publish(
    broker: KafkaBroker,
    topic: Topic,
    payload: BaseModel,
    *,
    key: str,
    max_bytes: int = 1_048_576,
    headers: dict[str, str] | None = None,
) -> None:
    """Publish `payload` to `topic` keyed by `key`, waiting for the broker's acknowledgement.

    Returning means the message is durable on the broker; callers acknowledge their own input only after."""
    body = encode(topic, payload, max_bytes=max_bytes)
    await publish_raw(broker, topic, body, key=key, max_bytes=max_bytes, headers=headers)


async def publish_raw(
    broker: KafkaBroker,
    topic: Topic,
    body: bytes,
    *,
    key: str | None,
    max_bytes: int = 1_048_576,
    headers: dict[str, str] | None = None,
    counted_as: str | None = None,
) -> None:
    """Publish bytes that are already encoded (a raw BOD, a dead letter's original message) the way `publish`
    does: the same size limit, the topic's content type unless `headers` carry one, the same count, and the
    broker's acknowledgement awaited. `key` None sends no key. `counted_as` labels the count instead of the topic's
    name, for topics named by someone else (a requester's `reply_to`), which would each make a new time series."""
    label = counted_as or topic.name
    if len(body) > max_bytes:
        raise MessageTooLargeError(f"{topic.name} message of {len(body)} bytes exceeds the {max_bytes}-byte limit")
    try:
        await broker.publish(
            body,
            topic=topic.name,
            key=key.encode() if key is not None else None,
            headers={"content-type": topic.content_type, **(headers or {})},
        )
    except Exception:
        messages_published.labels(label, "error").inc()
        raise
    messages_published.labels(label, "ok").inc()
