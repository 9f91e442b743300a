"""What several unit test modules share: the compose file as the deployment tests read it, the M3 simulator behind
a transport that loses answers on purpose, a migrated SQLite state store of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.platform.state import db
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


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await db.migrate(url)
    created = db.create_engine(url)
    yield created
    await created.dispose()
