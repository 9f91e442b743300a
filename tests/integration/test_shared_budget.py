"""The tenant's budget and token shared by token-service replicas through a real Redis: two `SharedBudget`s (two
replicas) together stay within one tenant's rate, a rep's lookup on one replica overtakes bulk work on the other, a
429 reported to one pauses both, one token fetch serves both; and a Redis of the test's own, stopped and started
again, shows the stated fallback (alone at its share of the rate, bulk waits, gauge 0) and the way back."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from m3bridge.tansu import free_port
from services.token_service.budget import BudgetPolicy, BudgetTimeoutError
from services.token_service.shared_budget import SharedBudget
from services.token_service.shared_tokens import SharedTokens
from services.token_service.tokens import TokenKeeper
from shared.m3.ionapi import IonApiCredentials
from shared.m3.lease import Priority
from tests.unit.test_token_keeper import IONAPI, FakeIdP


def prefix() -> str:
    return f"m3bridge-test:{{{uuid.uuid4().hex[:12]}}}"


def replica(url: str, policy: BudgetPolicy, key_prefix: str, **options: object) -> SharedBudget:
    return SharedBudget(Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5), policy,
                        key_prefix=key_prefix, **options)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture
async def two_replicas(redis_url: str) -> AsyncIterator[tuple[SharedBudget, SharedBudget]]:
    key_prefix = prefix()
    policy = BudgetPolicy(period_s=1.0, max_requests_per_period=20, utilisation=1.0, interactive_reserve=1)
    a, b = replica(redis_url, policy, key_prefix), replica(redis_url, policy, key_prefix)
    yield a, b
    for budget in (a, b):
        await budget.close()
        await budget.redis.aclose()


async def test_two_replicas_together_stay_within_the_tenants_rate(
    two_replicas: tuple[SharedBudget, SharedBudget],
) -> None:
    a, b = two_replicas
    granted: list[float] = []

    async def take(budget: SharedBudget) -> None:
        await budget.acquire(Priority.BULK, max_wait_s=30)
        granted.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(take(a if i % 2 else b) for i in range(50)))
    elapsed = time.monotonic() - started
    policy = a.policy
    # Alone, each replica would grant 20 a second: 50 in 1.4 s. Shared, any one-second window holds at most the
    # tenant's rate plus the burst the capacity allows.
    granted.sort()
    worst = max(sum(1 for t in granted if start <= t < start + policy.period_s) for start in granted)
    assert worst <= policy.worst_case_per_period, (worst, granted)
    assert elapsed >= (50 - policy.capacity) / policy.rate * 0.95


async def test_a_reps_lookup_on_one_replica_overtakes_bulk_work_queued_on_the_other(
    two_replicas: tuple[SharedBudget, SharedBudget],
) -> None:
    a, b = two_replicas
    order: list[str] = []
    paced = asyncio.Event()

    async def take(budget: SharedBudget, name: str, priority: Priority) -> None:
        await budget.acquire(priority, max_wait_s=30)
        order.append(name)
        if len(order) >= 3:  # the burst is spent, bulk is paced
            paced.set()

    bulk = [asyncio.create_task(take(a, f"bulk{i}", Priority.BULK)) for i in range(12)]
    await paced.wait()
    await take(b, "interactive", Priority.INTERACTIVE)
    await asyncio.gather(*bulk)
    # Bulk may not take the reserve: the rep's permit comes at once or right after the bulk permit in flight.
    assert order.index("interactive") <= order.index("bulk0") + 5, order
    assert order.index("interactive") < len(order) - 4, order


async def test_a_429_reported_to_one_replica_pauses_the_other_and_lowers_the_shared_pace(
    two_replicas: tuple[SharedBudget, SharedBudget],
) -> None:
    a, b = two_replicas
    await a.acquire(Priority.BULK)
    reported = time.monotonic()
    assert await b.report_throttled(retry_after_s=0.5) is True
    assert await a.report_throttled(retry_after_s=0.5) is False  # the same burst, reported by another caller
    await a.acquire(Priority.INTERACTIVE, max_wait_s=5)
    assert time.monotonic() - reported >= 0.45
    assert a.snapshot().rate == pytest.approx(a.policy.rate * a.policy.backoff_factor, rel=0.01)


async def test_one_token_fetch_serves_every_replica_and_a_401_replaces_it_for_all(redis_url: str) -> None:
    idp = FakeIdP()
    idp.delay = 0.2
    credentials = IonApiCredentials.model_validate(IONAPI)
    key_prefix = prefix()
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    keepers = [
        TokenKeeper(credentials, transport=httpx.MockTransport(idp), owner=f"token-service-{i}",
                    store=SharedTokens(client, key_prefix=key_prefix, client_secret="client-secret-value"))
        for i, client in enumerate(clients)
    ]  # fmt: skip
    try:
        tokens = await asyncio.gather(*(keeper.token() for keeper in keepers for _ in range(5)))
        assert {t.access_token for t in tokens} == {"tok-1"}
        assert len(idp.requests) == 1
        assert await keepers[0].invalidate(tokens[0].fingerprint) is True
        assert (await keepers[0].token()).access_token == "tok-2"
        assert await keepers[1].invalidate(tokens[0].fingerprint) is True  # it still held the old one
        assert (await keepers[1].token()).access_token == "tok-2"
        assert len(idp.requests) == 2
        # What Redis holds is of no use without the tenant's client secret.
        raw = await clients[0].hget(f"{key_prefix}:token", "token")
        assert raw is not None
        assert b"tok-2" not in raw
        other_tenant = SharedTokens(clients[0], key_prefix=key_prefix, client_secret="another-tenant")
        assert await other_tenant.read() is None
    finally:
        for keeper in keepers:
            await keeper.close()
        for client in clients:
            await client.aclose()


# --- when Redis goes away -----------------------------------------------------------------------------------


@dataclass
class OwnRedis:
    """A redis-server of the test's own, to stop and start again."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server is not installed (`make system` installs it)")
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with __import__("socket").create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


def shared_gauge() -> float | None:
    return REGISTRY.get_sample_value("m3bridge_rate_budget_shared")


async def test_without_redis_a_replica_paces_alone_at_its_share_bulk_waits_and_it_comes_back(
    own_redis: OwnRedis,
) -> None:
    policy = BudgetPolicy(period_s=1.0, max_requests_per_period=40, utilisation=1.0, interactive_reserve=1)
    budget = replica(own_redis.url, policy, prefix(), replicas=lambda: 2, retry_shared_s=0.2)
    try:
        await budget.acquire(Priority.BULK, max_wait_s=5)
        assert budget.mode == "shared in Redis"
        assert shared_gauge() == 1
        own_redis.stop()
        # Interactive and transactional work goes on, paced alone at half the tenant's rate (two replicas known).
        await budget.acquire(Priority.TRANSACTIONAL, max_wait_s=5)
        assert budget.mode == "alone: Redis unreachable"
        assert shared_gauge() == 0
        assert budget.snapshot().configured_rate == pytest.approx(policy.rate / 2)
        await budget.acquire(Priority.INTERACTIVE, max_wait_s=5)
        with pytest.raises(BudgetTimeoutError, match="not shared"):
            await budget.acquire(Priority.BULK, max_wait_s=0.5)
        own_redis.start()
        await budget.acquire(Priority.BULK, max_wait_s=10)  # waits until Redis answers again, then is granted
        assert budget.mode == "shared in Redis"
        assert shared_gauge() == 1
    finally:
        if own_redis.process is None:
            own_redis.start()
        await budget.close()
        await budget.redis.aclose()
