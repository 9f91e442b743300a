"""Test harness: a real Kafka-protocol broker (Tansu) and a real PostgreSQL database per test session.

Tests needing a service never skip silently: with CI=true a missing PostgreSQL fails the run.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings

from m3bridge.tansu import EmbeddedBroker
from shared.contracts.topics import ensure_topics
from tests.fuzz import fuzzing

# Property tests: in `make test` the same few inputs every run (a failure there reproduces as it is); `make fuzz` draws
# new ones each run and keeps failing examples in hypothesis' database to replay them first next time.
hypothesis_settings.register_profile("suite", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("fuzz", print_blob=True)
hypothesis_settings.load_profile("fuzz" if fuzzing() else "suite")

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get("M3B_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so `-m unit` / `-m integration` / `-m e2e` select lanes."""
    for item in items:
        for lane in ("unit", "integration", "e2e"):
            if f"{os.sep}tests{os.sep}{lane}{os.sep}" in str(item.path):
                item.add_marker(getattr(pytest.mark, lane))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One Tansu broker on a free port for the whole session (never the port a `make run` uses)."""
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "broker.log")
    broker.start()
    try:
        asyncio.run(ensure_topics(broker.bootstrap_servers, partitions=4, replication=1))
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: EmbeddedBroker) -> str:
    return kafka_broker.bootstrap_servers


async def _create_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL for this session, dropped afterwards."""
    name = f"m3b_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_create_database(name))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + " (set up PostgreSQL; in CI this fails)")
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{dsn}/{name}"
    finally:
        asyncio.run(_drop_database(name))


@pytest.fixture(scope="module")
def module_postgres_url(postgres_url: str) -> Iterator[str]:
    """A database of its own for a module whose simulators start from scratch (their M3 hands out the same
    customer numbers again, which one shared ledger would already have linked)."""
    name = f"m3b_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(name))
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_drop_database(name))


@pytest.fixture
def topic_name() -> str:
    """A fresh topic per test (auto-created on first produce by the test's own producer)."""
    return f"test.{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def fresh_topic(kafka_bootstrap: str, topic_name: str) -> str:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_name, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    return topic_name


REDIS_URL = os.environ.get("M3B_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis (127.0.0.1:6379). Tests that need it fail when it does not answer: they never skip."""
    from redis import Redis

    try:
        Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not usable ({type(exc).__name__}: {exc}); start it (`make system` "
                    "installs redis-server)")  # fmt: skip
    return REDIS_URL
