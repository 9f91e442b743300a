"""The whole M3 path over real HTTP: services' M3 clients → token-service (a process on the real broker) →
ION simulator (a process: OAuth server, Gateway with throttling, M3 MI programs)."""

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from shared.m3 import (
    CircuitBreakers,
    M3AuthorizationDeniedError,
    M3BusinessError,
    M3CircuitOpenError,
    M3Client,
    M3InputError,
    M3NotFoundError,
    M3TransientError,
)
from shared.m3.lease import LeaseClient, Priority
from simulators.processes import wait_until
from simulators.stack import READ, IonSim, TokenService, start_ion, start_token_service

KEYS = {"order-writer": "key-order-writer-123", "catalog-sync": "key-catalog-456", "inventory-query": "key-inv-789"}
SERVICE_ACCOUNT = "M3BRIDGE_TST#svc-account"
# Connect API Authorization on: the service account may use these programs, not OIS100MI/Confirm.
GRANTS = [
    {"user": SERVICE_ACCOUNT, "program": program, "transaction": "*"}
    for program in ("CRS610MI", "MMS200MI", "MRS001MI", "OIS017MI")
] + [{"user": SERVICE_ACCOUNT, "program": "OIS100MI", "transaction": "AddBatchHead"}]


@pytest.fixture(scope="module")
def ion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IonSim]:
    sim = start_ion(
        tmp_path_factory.mktemp("ion"),
        {"m3": {"authorization_enabled": True, "grants": GRANTS}, "throttle": {"max_requests_per_period": 200}},
    )
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def token_service(ion: IonSim, kafka_bootstrap: str) -> Iterator[TokenService]:
    service = start_token_service(
        ion, kafka_bootstrap, KEYS, {"M3B_THROTTLE_PERIOD_MS": "1000", "M3B_THROTTLE_MAX_REQUESTS": "100"}
    )
    yield service
    service.stop()


@pytest.fixture
async def clients(token_service: TokenService) -> AsyncIterator[dict[str, M3Client]]:
    async with httpx.AsyncClient() as http:
        yield {
            name: M3Client(LeaseClient(token_service.url, name, SecretStr(key), http=http), http, company=100)
            for name, key in KEYS.items()
        }


async def test_one_token_is_shared_by_every_service_for_many_calls(ion: IonSim, clients: dict[str, M3Client]) -> None:
    issued_before = ion.stats()["auth"]["tokens_issued_total"]
    for client in clients.values():
        for number in ("C000001", "C000002", "C000003"):
            record = await client.execute_one(
                "CRS610MI", "GetBasicData", {"CUNO": number}, priority=Priority.INTERACTIVE
            )
            assert record is not None
            assert record["CUNO"] == number
    assert ion.stats()["auth"]["tokens_issued_total"] == issued_before  # token-service fetched it once, at start


async def test_a_401_makes_token_service_refresh_once_for_everyone(ion: IonSim, clients: dict[str, M3Client]) -> None:
    issued_before = ion.stats()["auth"]["tokens_issued_total"]
    ion.admin("POST", "tokens/expire")
    import asyncio

    results = await asyncio.gather(
        *(
            client.execute_one("MMS200MI", "GetItmBasic", {"ITNO": "ITM000001"}, priority=Priority.TRANSACTIONAL)
            for client in clients.values()
            for _ in range(4)
        )
    )
    assert all(r is not None and r["ITNO"] == "ITM000001" for r in results)
    assert ion.stats()["auth"]["tokens_issued_total"] == issued_before + 1


async def test_denied_transaction_is_an_authorization_error_naming_it(clients: dict[str, M3Client]) -> None:
    with pytest.raises(M3AuthorizationDeniedError) as caught:
        await clients["order-writer"].execute("OIS100MI", "Confirm", {"ORNO": "1"}, priority=Priority.TRANSACTIONAL)
    assert (caught.value.program, caught.value.transaction) == ("OIS100MI", "Confirm")
    assert "OIS100MI/Confirm" in str(caught.value)


async def test_too_long_field_is_refused_before_any_call(ion: IonSim, clients: dict[str, M3Client]) -> None:
    before = ion.stats()["gateway"]["accepted"]
    client = clients["order-writer"]
    await client.metadata("CRS610MI", "Add", priority=Priority.TRANSACTIONAL)  # cached from here on
    before = ion.stats()["gateway"]["accepted"]
    with pytest.raises(M3InputError) as caught:
        await client.execute(
            "CRS610MI",
            "Add",
            {"CUTM": "C000001", "CUNM": "N" * 40, "CUA1": "Street 1"},
            priority=Priority.TRANSACTIONAL,
        )
    assert caught.value.field == "CUNM"
    assert ion.stats()["gateway"]["accepted"] == before


async def test_nok_is_parsed_with_code_and_field(clients: dict[str, M3Client]) -> None:
    with pytest.raises(M3BusinessError) as caught:
        await clients["inventory-query"].execute(
            "CRS610MI", "GetBasicData", {"CUNO": "NOSUCH"}, priority=Priority.INTERACTIVE
        )
    assert caught.value.field == "CUNO"
    assert caught.value.code


async def test_seed_transaction_names_that_m3_lacks_are_not_found(clients: dict[str, M3Client]) -> None:
    client = M3Client(clients["catalog-sync"]._leases, clients["catalog-sync"]._http, company=100, validate=False)
    with pytest.raises(M3NotFoundError):
        await client.execute("MMS080MI", "LstItemBal", {"ITNO": "ITM000001"}, priority=Priority.BULK)


async def test_list_paging_returns_every_record_once(clients: dict[str, M3Client]) -> None:
    numbers = [
        str(r["CUNO"])
        async for r in clients["catalog-sync"].list_all(
            "CRS610MI", "LstByNumber", key_fields=["CUNO"], priority=Priority.BULK, page_size=7
        )
    ]
    assert len(numbers) == len(set(numbers)) >= 50
    assert numbers == sorted(numbers)


async def test_unknown_callers_get_401_and_nothing_else(token_service: TokenService) -> None:
    async with httpx.AsyncClient() as http:
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic b3JkZXItd3JpdGVyOg=="}):
            response = await http.post(f"{token_service.url}/v1/leases", json={"priority": "bulk"}, headers=headers)
            assert response.status_code == 401
            assert response.json() == {"detail": "not authenticated"}  # the bridge's one key scheme
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "access_token" not in response.text


def metric(url: str, name: str, **labels: str) -> float:
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text)
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def test_a_caller_cannot_lease_above_the_priority_its_key_allows(token_service: TokenService) -> None:
    """A busy catalog load asking for interactive permits gets bulk ones: the reserve stays the reps'."""
    url = token_service.url

    def granted(priority: str) -> float:
        return metric(url, "m3bridge_rate_budget_granted_total", priority=priority)

    before = {p: granted(p) for p in ("interactive", "bulk")}
    lowered = metric(url, "m3bridge_lease_priority_lowered_total", service="catalog-sync", asked="interactive")
    async with httpx.AsyncClient() as http:
        for service in ("catalog-sync", "inventory-query"):
            answer = await http.post(f"{url}/v1/leases", json={"priority": "interactive"},
                                     headers={"Authorization": f"Bearer {KEYS[service]}"})  # fmt: skip
            assert answer.status_code == 200, answer.text
    assert granted("bulk") == before["bulk"] + 1  # catalog-sync's, lowered
    assert granted("interactive") == before["interactive"] + 1  # inventory-query's own
    assert metric(url, "m3bridge_lease_priority_lowered_total", service="catalog-sync", asked="interactive") == (
        lowered + 1
    )


async def test_throttling_is_reported_and_paces_everyone(ion: IonSim, token_service: TokenService,
                                                         clients: dict[str, M3Client]) -> None:  # fmt: skip
    ion.admin("PUT", "throttle", {"time_period_ms": 1000, "max_requests_per_period": 5})
    try:
        client = clients["catalog-sync"]
        for n in range(12):
            record = await client.execute_one(
                "MMS200MI", "GetItmBasic", {"ITNO": f"ITM{n + 1:06d}"}, priority=Priority.BULK
            )
            assert record is not None
        assert ion.stats()["gateway"]["throttled"] >= 1
        async with httpx.AsyncClient() as http:
            budget = (await http.get(f"{token_service.url}/v1/budget",
                                     headers={"Authorization": f"Bearer {KEYS['catalog-sync']}"})).json()  # fmt: skip
        assert budget["rate_per_s"] < budget["configured_rate_per_s"]
    finally:
        ion.admin("PUT", "throttle", {"time_period_ms": 1000, "max_requests_per_period": 200})


def test_refresh_happens_before_expiry(tmp_path: Path, kafka_bootstrap: str) -> None:
    """With 5-second tokens, token-service fetches the next one before the current expires: no caller ever
    sees a 401 across several token lifetimes."""
    import asyncio

    sim = start_ion(tmp_path, {"token_ttl_s": 5})
    service = start_token_service(sim, kafka_bootstrap, KEYS)
    try:

        async def calls() -> None:
            """A call every half second until the third token is out: two refreshes happened while calling."""
            async with httpx.AsyncClient() as http:
                client = M3Client(LeaseClient(service.url, "order-writer", SecretStr(KEYS["order-writer"]), http=http),
                                  http, company=100)  # fmt: skip

                async def issued() -> int:
                    stats = (await http.get(f"{sim.url}/__admin/stats", timeout=10)).json()
                    return int(stats["auth"]["tokens_issued_total"])

                deadline = time.monotonic() + 60
                while await issued() < 3:
                    assert time.monotonic() < deadline, "token-service never fetched a third token"
                    assert await client.execute_one("CRS610MI", "GetBasicData", {"CUNO": "C000001"},
                                                    priority=Priority.INTERACTIVE)  # fmt: skip
                    await asyncio.sleep(0.5)
                # One more call on the newest token: the callers kept working across each change of token.
                assert await client.execute_one("CRS610MI", "GetBasicData", {"CUNO": "C000001"},
                                                priority=Priority.INTERACTIVE)  # fmt: skip

        asyncio.run(calls())
        stats = sim.stats()
        assert stats["gateway"]["unauthorized"] == 0
        assert stats["auth"]["tokens_issued_total"] >= 3
    finally:
        service.stop()
        sim.stop()


def test_token_service_keeps_serving_while_the_idp_fails(tmp_path: Path, kafka_bootstrap: str) -> None:
    """While refreshing fails, the valid token is still leased and readiness stays green; /healthz says the
    refresh is failing; once the token has expired, leases and readiness fail with the reason."""
    sim = start_ion(tmp_path, {"token_ttl_s": 10})  # refreshed in its last fifth: the last 2 s
    service = start_token_service(sim, kafka_bootstrap, KEYS)
    auth = {"Authorization": f"Bearer {KEYS['order-writer']}"}

    def lease() -> httpx.Response:
        return httpx.post(f"{service.url}/v1/leases", json={"priority": "interactive"}, headers=auth, timeout=10)

    def token_status() -> dict[str, str]:
        status: dict[str, str] = httpx.get(f"{service.url}/healthz", headers=READ, timeout=5).json()["token"]
        return status

    def expires_at() -> float:
        """The current token's expiry (wall clock), exact, where /healthz rounds to whole seconds."""
        families = text_string_to_metric_families(httpx.get(f"{service.url}/metrics", timeout=5).text)
        samples = (sample for family in families for sample in family.samples)
        return next(s.value for s in samples if s.name == "m3bridge_token_expiry_timestamp_seconds")

    def ready() -> httpx.Response:
        return httpx.get(f"{service.url}/readyz", headers=READ, timeout=5)

    try:
        sim.stop()  # the IdP is gone
        expiry = expires_at()

        def refresh_failing() -> bool:
            # Every lease hands out the valid token; the first one in the refresh window starts a refresh, which fails.
            assert lease().status_code == 200
            return str(token_status()["refresh"]).startswith("failing")

        wait_until("a lease in the refresh window to start a refresh", refresh_failing, 15)
        assert time.time() < expiry
        assert token_status()["token"].startswith("valid for")
        assert ready().status_code == 200
        assert lease().status_code == 200
        # Near its expiry the token is no longer handed out (it could expire in flight), then readiness fails.
        expired = wait_until("leases to fail", lambda: (answer := lease()).status_code != 200 and answer, 15)
        assert expired.status_code == 503
        assert expired.json()["error"] == "token_unavailable"
        not_ready = wait_until("readiness to fail", lambda: (answer := ready()).status_code != 200 and answer, 15)
        assert time.time() >= expiry, "not ready only once the token has expired"
        assert not_ready.status_code == 503
        assert "fetching one fails" in not_ready.json()["checks"]["ion_token"]
    finally:
        service.stop()
        sim.stop()


async def test_a_failing_program_opens_its_circuit_and_a_probe_closes_it(
    ion: IonSim, token_service: TokenService
) -> None:
    async with httpx.AsyncClient() as http:
        leases = LeaseClient(token_service.url, "inventory-query", SecretStr(KEYS["inventory-query"]), http=http)
        breakers = CircuitBreakers(failures=3, reset_after_s=2.0)
        client = M3Client(leases, http, company=100, max_attempts=1, deadline_s=1.0, breakers=breakers, validate=False)
        ion.admin("PUT", "faults", {"error_rate": 1.0, "status_weights": {"503": 1.0}})
        try:
            for _ in range(3):
                with pytest.raises(M3TransientError):
                    await client.execute("MMS200MI", "GetItmBasic", {"ITNO": "ITM000001"}, priority=Priority.BULK)
            assert breakers.state("MMS200MI") == "open"
            reached = ion.stats()["gateway"]["accepted"]
            with pytest.raises(M3CircuitOpenError):  # refused at once: the deadline is shorter than the rest
                await client.execute("MMS200MI", "GetItmBasic", {"ITNO": "ITM000001"}, priority=Priority.BULK)
            assert ion.stats()["gateway"]["accepted"] == reached  # nothing reached the Gateway
        finally:
            ion.admin("PUT", "faults", {})
        # A caller with time to wait gets the probe's answer once the rest is over.
        patient = M3Client(leases, http, company=100, deadline_s=10.0, breakers=breakers, validate=False)
        [item] = await patient.execute("MMS200MI", "GetItmBasic", {"ITNO": "ITM000001"}, priority=Priority.BULK)
        assert item["ITNO"] == "ITM000001"
        assert breakers.state("MMS200MI") == "closed"
