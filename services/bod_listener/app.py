"""bod-listener wiring: settings, broker, HTTP app."""

from __future__ import annotations

from shared.runtime import ServiceRuntime
from shared.settings import BridgeSettings


class BodListenerSettings(BridgeSettings):
    service_name: str = "bod-listener"


def create_runtime(settings: BodListenerSettings | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(
        settings or BodListenerSettings(),
        title="M3 Bridge bod-listener",
        description="Receives ION BODs and turns them into normalized M3 change events.",
        uses_state=True,
    )
    runtime.not_built_yet("ION BOD deliveries to normalized m3.*.changed.v1 events", issue=5)
    return runtime
