"""catalog-sync wiring: settings, broker, HTTP app."""

from __future__ import annotations

from shared.runtime import ServiceRuntime
from shared.settings import M3CallerSettings


class CatalogSyncSettings(M3CallerSettings):
    service_name: str = "catalog-sync"


def create_runtime(settings: CatalogSyncSettings | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(
        settings or CatalogSyncSettings(),
        title="M3 Bridge catalog-sync",
        description="Keeps the QuoteWerks catalog and customers in step with M3.",
        uses_state=True,
    )
    runtime.not_built_yet(
        "M3 items, prices and stock to the QuoteWerks catalog (Data Lake full loads, event deltas)", issue=5
    )
    return runtime
