"""quote-ingest wiring: settings, broker, HTTP app."""

from __future__ import annotations

from shared.runtime import ServiceRuntime
from shared.settings import BridgeSettings


class QuoteIngestSettings(BridgeSettings):
    service_name: str = "quote-ingest"


def create_runtime(settings: QuoteIngestSettings | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(
        settings or QuoteIngestSettings(),
        title="M3 Bridge quote-ingest",
        description="Receives QuoteWerks approvals and customer changes, publishes them, writes order numbers back.",
        uses_state=True,
    )
    runtime.not_built_yet(
        "QuoteWerks webhooks and poller to quotewerks.quote.approved.v1; order numbers written back", issue=4
    )
    return runtime
