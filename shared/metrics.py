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
heartbeats_seen = Counter(
    f"{PREFIX}_heartbeats_seen_total", "Heartbeats received from services on the bus.", ["service", "peer"]
)


def describe_build(service: str) -> None:
    build_info.info({"version": shared.__version__, "service": service})


def registry() -> CollectorRegistry:
    return REGISTRY
