"""inventory-query wiring: settings, broker, HTTP app."""

from __future__ import annotations

from shared.runtime import ServiceRuntime
from shared.settings import M3CallerSettings


class InventoryQuerySettings(M3CallerSettings):
    service_name: str = "inventory-query"


def create_runtime(settings: InventoryQuerySettings | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(
        settings or InventoryQuerySettings(),
        title="M3 Bridge inventory-query",
        description="Answers live availability and price checks in milliseconds without hammering M3.",
        uses_state=False,
    )
    runtime.not_built_yet("availability and price answers over HTTP and Kafka request/reply, cached", issue=5)
    return runtime
