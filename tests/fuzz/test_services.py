"""Every service's own OpenAPI under schemathesis, each service running in this process against the real broker (and
the ION, token-service and QuoteWerks simulators where its routes need them): twice, without credentials (every
answer but the open operations' a 4xx, never a 5xx) and with the right ones (never a 5xx, the declared schema where
one is declared). Afterwards the service is still ready and it kept no dead letter it should not have."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from services.bod_listener.app import BodListenerSettings
from services.bod_listener.app import create_runtime as bod_listener
from services.catalog_sync.app import CatalogSyncSettings
from services.catalog_sync.app import create_runtime as catalog_sync
from services.inventory_query.app import InventoryQuerySettings
from services.inventory_query.app import create_runtime as inventory_query
from services.order_writer.app import OrderWriterSettings
from services.order_writer.app import create_runtime as order_writer
from services.quote_ingest.app import QuoteIngestSettings
from services.quote_ingest.app import create_runtime as quote_ingest
from services.token_service.app import TokenServiceSettings
from services.token_service.app import create_runtime as token_service
from shared.runtime import ServiceRuntime
from shared.settings import BridgeSettings
from shared.topics import dead_letter_topic
from tests.fuzz.conftest import CALLER_KEYS, figures_of
from tests.fuzz.harness import fuzz, quiet_logging, served
from tests.stack import IonSim, QuoteWerksSim, TokenService

SECRET = "fuzz-shared-secret-0001"
TOKEN_KEY = "fuzz-token-key-0001"
OPERATOR_KEY = "fuzz-operator-key-0001"
READ_KEY = "fuzz-read-key-0001"
#: Operations that need no credentials, whatever the service: an unauthenticated caller may get a 2xx there.
OPEN = {"GET /healthz", "GET /readyz", "GET /metrics"}

# schemathesis draws from `random` inside its strategies (its business, not ours).
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


def common(kafka_bootstrap: str, tmp_path: Path, uses_state: bool = True) -> dict[str, Any]:
    state = {"state_url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"} if uses_state else {}
    return {"kafka_bootstrap_servers": kafka_bootstrap, "heartbeat_interval_s": 60, "log_level": "WARNING", **state}


def keyed(model: type[BridgeSettings], name: str, value: str) -> dict[str, Any]:
    """`name=value` if the settings have that field (the operator and read keys), nothing otherwise."""
    return {name: SecretStr(value)} if name in model.model_fields else {}


def dead_letters(bootstrap: str, service: str) -> int:
    """How many dead letters `service` has kept so far (the end offsets of its dead-letter topic)."""

    async def count() -> int:
        topic = dead_letter_topic(service).name
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()  # metadata of every topic
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            if not partitions:
                return 0
            consumer.assign(partitions)
            return sum((await consumer.end_offsets(partitions)).values())
        finally:
            await consumer.stop()

    return asyncio.run(count())


def run_both_ways(
    name: str,
    build: Callable[[], ServiceRuntime],
    bootstrap: str,
    credentials: dict[str, str],
    *,
    may_dead_letter: bool = False,
) -> None:
    """Fuzz the service without and with `credentials`; afterwards it must be ready and have kept no dead letter
    (with `may_dead_letter`, no more than the deliveries it accepted)."""
    figures = figures_of(name)
    failures = figures.server_errors + figures.crashes
    letters = dead_letters(bootstrap, name)
    with quiet_logging():
        runtime = build()
    with served(runtime) as server:
        anonymous = fuzz(server, figures)
        authenticated = fuzz(server, figures, headers=credentials)
        ready = server.readyz()
        assert ready.status_code == 200, ready.text
    assert figures.server_errors + figures.crashes == failures, "\n".join(figures.examples)
    assert not figures.schema_mismatches, "\n".join(figures.examples)

    if credentials:  # without credentials, only the open operations may answer a 2xx
        let_in = sorted(
            {(label, r.status_code) for label, answers in anonymous.items() if label not in OPEN for r in answers}
        )
        assert all(status >= 400 for _, status in let_in), let_in

    kept = dead_letters(bootstrap, name) - letters
    accepted = sum(
        1
        for label, answers in authenticated.items()
        if label.startswith("POST ")
        for response in answers
        if response.status_code in (200, 202)
    )
    assert kept <= (accepted if may_dead_letter else 0), f"{kept} dead letters, {accepted} deliveries accepted"


def test_token_service(kafka_bootstrap: str, fuzz_ion: IonSim, tmp_path: Path) -> None:
    def build() -> ServiceRuntime:
        return token_service(
            TokenServiceSettings(
                **common(kafka_bootstrap, tmp_path, uses_state=False),
                ion_api_file=fuzz_ion.ionapi,
                service_keys={"fuzzer": SecretStr(TOKEN_KEY)},
                throttle_max_requests=10_000_000,  # leases of up to 100 permits each must not wait for the budget
            )
        )

    run_both_ways("token-service", build, kafka_bootstrap, {"Authorization": f"Bearer {TOKEN_KEY}"})


def test_quote_ingest(kafka_bootstrap: str, fuzz_quotewerks: QuoteWerksSim, tmp_path: Path) -> None:
    def build() -> ServiceRuntime:
        return quote_ingest(
            QuoteIngestSettings(
                **common(kafka_bootstrap, tmp_path),
                quotewerks_url=fuzz_quotewerks.url,
                quotewerks_api_key=SecretStr(fuzz_quotewerks.api_key),
                webhook_secret=SecretStr(SECRET),
                poll_interval_s=0,
            )
        )

    run_both_ways("quote-ingest", build, kafka_bootstrap, {"X-M3Bridge-Webhook-Secret": SECRET})


def test_order_writer(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Only the operations every service has: its work comes from the broker, not over HTTP."""

    def build() -> ServiceRuntime:
        return order_writer(OrderWriterSettings(**common(kafka_bootstrap, tmp_path)))

    run_both_ways("order-writer", build, kafka_bootstrap, {})


def test_catalog_sync(
    kafka_bootstrap: str, fuzz_token_service: TokenService, fuzz_quotewerks: QuoteWerksSim, tmp_path: Path
) -> None:
    def build() -> ServiceRuntime:
        return catalog_sync(
            CatalogSyncSettings(
                **common(kafka_bootstrap, tmp_path),
                **keyed(CatalogSyncSettings, "operator_key", OPERATOR_KEY),
                token_service_url=fuzz_token_service.url,
                token_service_key=SecretStr(CALLER_KEYS["catalog-sync"]),
                quotewerks_url=fuzz_quotewerks.url,
                quotewerks_api_key=SecretStr(fuzz_quotewerks.api_key),
                full_load_at_start=False,
                full_load_interval_s=0,
                data_lake_poll_s=0.1,
            )
        )

    run_both_ways("catalog-sync", build, kafka_bootstrap, {"Authorization": f"Bearer {OPERATOR_KEY}"})


def test_inventory_query(kafka_bootstrap: str, fuzz_token_service: TokenService, tmp_path: Path) -> None:
    def build() -> ServiceRuntime:
        return inventory_query(
            InventoryQuerySettings(
                **common(kafka_bootstrap, tmp_path, uses_state=False),
                **keyed(InventoryQuerySettings, "read_key", READ_KEY),
                token_service_url=fuzz_token_service.url,
                token_service_key=SecretStr(CALLER_KEYS["inventory-query"]),
            )
        )

    run_both_ways("inventory-query", build, kafka_bootstrap, {"Authorization": f"Bearer {READ_KEY}"})


def test_bod_listener(kafka_bootstrap: str, tmp_path: Path) -> None:
    def build() -> ServiceRuntime:
        return bod_listener(BodListenerSettings(**common(kafka_bootstrap, tmp_path), bod_secret=SecretStr(SECRET)))

    # A BOD it cannot use is accepted and kept as a dead letter: at most one per accepted delivery.
    run_both_ways("bod-listener", build, kafka_bootstrap, {"X-M3Bridge-BOD-Secret": SECRET}, may_dead_letter=True)
