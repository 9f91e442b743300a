"""token-service wiring: settings, broker, HTTP app."""

from __future__ import annotations

from shared.runtime import ServiceRuntime
from shared.settings import BridgeSettings


class TokenServiceSettings(BridgeSettings):
    service_name: str = "token-service"


def create_runtime(settings: TokenServiceSettings | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(
        settings or TokenServiceSettings(),
        title="M3 Bridge token-service",
        description="Sole holder of the .ionapi credentials; shares tokens and rate permits with the other services.",
        uses_state=False,
    )
    runtime.not_built_yet("leases of shared ION OAuth 2 tokens and permits under the central rate budget", issue=3)
    return runtime
