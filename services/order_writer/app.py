"""order-writer wiring: settings, broker, HTTP app."""

from __future__ import annotations

from shared.runtime import ServiceRuntime
from shared.settings import M3CallerSettings


class OrderWriterSettings(M3CallerSettings):
    service_name: str = "order-writer"


def create_runtime(settings: OrderWriterSettings | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(
        settings or OrderWriterSettings(),
        title="M3 Bridge order-writer",
        description="Turns approved quotes into confirmed M3 customer orders, creating customers first, exactly once.",
        uses_state=True,
    )
    runtime.not_built_yet("approved quotes to confirmed M3 customer orders (CRS610MI, MMS200MI, OIS100MI)", issue=4)
    return runtime
