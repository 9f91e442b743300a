"""Metrics every service exports, on prometheus-client's default registry.

The default registry keeps process metrics and lets faststream's middleware and ours share one `/metrics`.
Names are prefixed `m3bridge_`; labels are bounded sets (service, topic, outcome), never ids.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Info

import shared

PREFIX = "m3bridge"

build_info = Info(f"{PREFIX}_build", "Version of the running M3 Bridge service.")
service_ready = Gauge(f"{PREFIX}_service_ready", "1 when every readiness check passes, else 0.", ["service"])
health_check_ok = Gauge(
    f"{PREFIX}_health_check_ok", "1 when the named readiness check passes, else 0.", ["service", "check"]
)
messages_published = Counter(
    f"{PREFIX}_messages_published_total",
    "Messages the bridge published, by topic and outcome.",
    ["topic", "outcome"],
)
messages_dead_lettered = Counter(
    f"{PREFIX}_messages_dead_lettered_total",
    "Messages a service put on its dead-letter topic, by origin topic and error class (undecodable, invalid, "
    "retries-exhausted, not-retryable, or the service's own, e.g. held).",
    ["service", "topic", "error_class"],
)
messages_discarded = Counter(
    f"{PREFIX}_messages_discarded_total",
    "Undecodable messages skipped without a dead letter (heartbeats: every replica reads them, none replays them).",
    ["service", "topic", "error_class"],
)
message_retries = Counter(
    f"{PREFIX}_message_retries_total",
    "Handler attempts retried after a retryable failure, by subscriber.",
    ["service", "subscriber"],
)
consumer_busy_seconds = Gauge(
    f"{PREFIX}_consumer_busy_seconds",
    "Seconds a subscriber has been on its current message, retries included; 0 when idle. Growing means its "
    "partition is not advancing.",
    ["service", "subscriber"],
)
consumer_in_flight = Gauge(
    f"{PREFIX}_consumer_in_flight",
    "Messages a subscriber with lanes has accepted and not finished (running or queued behind one of the same key).",
    ["service", "subscriber"],
)
http_rejected = Counter(
    f"{PREFIX}_http_rejected_total",
    "HTTP requests refused for what they hold (too large, undecodable, too deeply nested, invalid, not "
    "authenticated, ...), by reason.",
    ["service", "reason"],
)
heartbeats_seen = Counter(
    f"{PREFIX}_heartbeats_seen_total", "Heartbeats received from services on the bus.", ["service", "peer"]
)


def describe_build(service: str) -> None:
    build_info.info({"version": shared.__version__, "service": service})


def registry() -> CollectorRegistry:
    return REGISTRY
