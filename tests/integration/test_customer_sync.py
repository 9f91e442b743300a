"""QuoteWerks customers M3 does not know yet, through order-writer: found in M3 and linked, or created and linked;
once linked, their changes are catalog-sync's (tests/e2e/test_m3_changes_to_quotewerks.py). The ION simulator,
token-service and order-writer as processes, the session's broker and PostgreSQL. Changes are published to
`quotewerks.customer.changed.v1` as quote-ingest would."""

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from shared.contracts import Party, QuoteWerksCustomerChanged
from shared.contracts.topics import QUOTEWERKS_CUSTOMER_CHANGED
from shared.m3 import M3Client
from shared.m3.lease import LeaseClient, Priority
from shared.platform.kafka import create_broker, publish
from shared.platform.settings import BridgeSettings
from shared.platform.state import db, ledger
from simulators.processes import Captured, wait_until
from simulators.stack import IonSim, TokenService, start_ion, start_service, start_token_service

KEYS = {"order-writer": "ow-key-123456", "inspector": "inspector-key-123456"}


@dataclass
class Stack:
    ion: IonSim
    token_service: TokenService
    writer: Captured
    bootstrap: str
    state_url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, module_postgres_url: str) -> Iterator[Stack]:
    with contextlib.ExitStack() as started:  # a part that fails to start still stops the ones before it
        ion = start_ion(tmp_path_factory.mktemp("ion"))
        started.callback(ion.stop)
        token_service = start_token_service(ion, kafka_bootstrap, KEYS)
        started.callback(token_service.stop)
        writer, _ = start_service("order-writer", kafka_bootstrap, {
            "M3B_STATE_URL": module_postgres_url, "M3B_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "M3B_TOKEN_SERVICE_URL": token_service.url, "M3B_TOKEN_SERVICE_KEY": KEYS["order-writer"],
        })  # fmt: skip
        started.callback(writer.kill_all)
        yield Stack(ion, token_service, writer, kafka_bootstrap, module_postgres_url)


async def m3_call(stack: Stack, transaction: str, fields: dict[str, str]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        leases = LeaseClient(stack.token_service.url, "inspector", SecretStr(KEYS["inspector"]), http=http)
        client = M3Client(leases, http, company=100)
        return await client.execute("CRS610MI", transaction, fields, priority=Priority.INTERACTIVE, maxrecs=0)


def customer(stack: Stack, number: str) -> dict[str, Any]:
    return asyncio.run(m3_call(stack, "GetBasicData", {"CUNO": number}))[0]


def party_of(record: dict[str, Any], **changes: str) -> Party:
    """The M3 customer as QuoteWerks would hold it, with `changes` (Party field names)."""
    data = {
        "company": record["CUNM"], "address1": record["CUA1"], "city": record["TOWN"],
        "postal_code": record["PONO"], "country": record["CSCD"], "phone_number": record["PHNO"],
        "email": record["MAIL"], "cm_account_no": record["CUNO"],
    }  # fmt: skip
    return Party.model_validate({**data, **changes})


_clock = datetime.now(UTC)


def next_time() -> datetime:
    """Strictly increasing change times: an older change than the last applied one is ignored."""
    global _clock
    _clock = max(_clock + timedelta(seconds=1), datetime.now(UTC))
    return _clock


def send(stack: Stack, customer_id: str, party: Party, *, origin: str = "quotewerks") -> None:
    change = QuoteWerksCustomerChanged(
        customer_id=customer_id, change="updated", customer=party, changed_at=next_time(), origin=origin
    )

    async def go() -> None:
        broker = create_broker(BridgeSettings(kafka_bootstrap_servers=stack.bootstrap, service_name="test"))
        async with broker:
            await broker.start()
            await publish(broker, QUOTEWERKS_CUSTOMER_CHANGED, change, key=customer_id)

    asyncio.run(go())


def wait_for(stack: Stack, number: str, field: str, value: str, timeout_s: float = 60) -> dict[str, Any]:
    """The M3 customer once its `field` is `value`."""
    record: dict[str, Any] = {}

    def changed() -> dict[str, Any] | None:
        nonlocal record
        record = customer(stack, number)
        return record if str(record.get(field) or "") == value else None

    found: dict[str, Any] = wait_until(
        f"{number} {field} to become {value!r}",
        changed,
        timeout_s,
        dump=lambda: f"{record}\n{stack.writer.output[-3000:]}",
    )
    return found


def changes_sent(stack: Stack) -> int:
    return int(stack.ion.stats()["m3"].get("CRS610MI/ChgBasicData", 0) + stack.ion.stats()["m3"].get("CRS610MI/Add", 0))


def linked_to(stack: Stack, customer_id: str) -> str | None:
    async def link() -> str | None:
        engine = db.create_engine(stack.state_url)
        try:
            found = await ledger.customer_link(engine, customer_id)
            return found.m3_customer_number if found is not None else None
        finally:
            await engine.dispose()

    return asyncio.run(link())


def test_a_customer_m3_has_is_linked_not_written_and_its_later_changes_are_left_to_catalog_sync(stack: Stack) -> None:
    before, writes = customer(stack, "C000003"), changes_sent(stack)
    send(stack, "QW-C3", party_of(before, cm_account_no="QW-C3"))
    number = wait_until("QW-C3 to be linked", lambda: linked_to(stack, "QW-C3"), 60,
                        dump=lambda: stack.writer.output[-3000:])  # fmt: skip
    assert number == "C000003"
    send(stack, "QW-C3", party_of(before, cm_account_no="QW-C3", phone_number="+46 700 1234"))
    stack.writer.wait_for_line("QuoteWerks customer change QW-C3: ignored C000003 linked: catalog-sync merges", 60)
    assert changes_sent(stack) == writes
    assert customer(stack, "C000003") == before


def test_the_bridges_own_write_coming_back_changes_nothing(stack: Stack) -> None:
    writes = changes_sent(stack)
    send(stack, "QW-OWN", Party(company="Bridge Wrote This AB", email="own@bridge.example"), origin="m3bridge")
    stack.writer.wait_for_line("QuoteWerks customer change QW-OWN: ignored", 60)
    assert changes_sent(stack) == writes
    assert linked_to(stack, "QW-OWN") is None


def test_an_unknown_customer_is_created_and_linked(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    customer_id = f"QW{tag}"
    party = Party(
        company=f"Brand New {tag} GmbH",
        address1="7 Neue Strasse",
        city="Berlin",
        postal_code="10115",
        country="Germany",
        phone_number="+49 30 1234",
        email=f"buyer-{tag}@brandnew.example",
    )
    send(stack, customer_id, party)

    number = wait_until(f"{customer_id} to be linked", lambda: linked_to(stack, customer_id), 60,
                        dump=lambda: stack.writer.output[-3000:])  # fmt: skip
    created = customer(stack, number)
    assert (created["CUNM"], created["MAIL"], created["CSCD"]) == (party.company, party.email, "DE")
    assert (created["PHNO"], created["TOWN"]) == ("+49 30 1234", "Berlin")
