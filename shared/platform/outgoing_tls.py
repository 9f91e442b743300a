"""What a service's outgoing HTTPS trusts."""

from __future__ import annotations

import ssl

from shared.platform.settings import BridgeSettings


def outgoing_tls(settings: BridgeSettings) -> ssl.SSLContext | bool:
    """What the service's outgoing HTTPS trusts: M3B_HTTP_CA_FILE when set (a private CA, a TLS-inspecting proxy),
    else the system's store (True)."""
    if settings.http_ca_file is None:
        return True
    context = ssl.create_default_context(cafile=str(settings.http_ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
