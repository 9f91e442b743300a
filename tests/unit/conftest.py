"""The compose file as the deployment tests read it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.deploy_files import COMPOSE_FILE, load_yaml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services
