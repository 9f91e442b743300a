"""The six M3 Bridge services: name → module with `create_runtime()`, and the port each uses by default
when run locally (in containers every service listens on 8000)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.platform.runtime import ServiceRuntime
    from shared.platform.settings import BridgeSettings


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    module: str
    local_port: int
    summary: str

    def create_runtime(self) -> ServiceRuntime:
        runtime: ServiceRuntime = importlib.import_module(self.module).create_runtime()
        return runtime


SERVICES: dict[str, ServiceEntry] = {
    entry.name: entry
    for entry in (
        ServiceEntry(
            "token-service",
            "services.token_service.app",
            8101,
            "OAuth 2 tokens and the central M3 rate budget",
        ),
        ServiceEntry("quote-ingest", "services.quote_ingest.app", 8102, "QuoteWerks webhooks in, order results back"),
        ServiceEntry("order-writer", "services.order_writer.app", 8103, "approved quotes to confirmed M3 orders"),
        ServiceEntry("catalog-sync", "services.catalog_sync.app", 8104, "M3 items, prices, stock to QuoteWerks"),
        ServiceEntry("inventory-query", "services.inventory_query.app", 8105, "live availability and price answers"),
        ServiceEntry("bod-listener", "services.bod_listener.app", 8106, "ION BODs to normalized change events"),
    )
}


def settings_classes() -> dict[str, type[BridgeSettings]]:
    """Each service's settings class (the `BridgeSettings` subclass its `app.py` defines)."""
    from shared.platform.settings import BridgeSettings

    found: dict[str, type[BridgeSettings]] = {}
    for entry in SERVICES.values():
        module = importlib.import_module(entry.module)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BridgeSettings)
                and value.__module__ == entry.module  # its own, not a shared base it imports
            ):
                found[entry.name] = value
    return found


def m3_callers() -> list[str]:
    """The services that call M3, so need a token-service key: those whose settings are M3CallerSettings."""
    from shared.platform.settings import M3CallerSettings

    return [name for name, cls in settings_classes().items() if issubclass(cls, M3CallerSettings)]
