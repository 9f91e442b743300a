"""What several unit test modules share: the compose file as the deployment tests read it, the M3 simulator behind
a transport that loses answers on purpose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.deploy_files import COMPOSE_FILE, load_yaml
from tests.unit.m3_faults import FaultyM3


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


@pytest.fixture
async def m3() -> AsyncIterator[FaultyM3]:
    """The real M3 client in front of the M3 simulator, in process (tests/unit/m3_faults.py)."""
    faulty = FaultyM3()
    yield faulty
    await faulty.close()
