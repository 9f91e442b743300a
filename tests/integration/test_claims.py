"""Claims, the outbox and the safety-net poll, in process against the real state stores (SQLite and the machine's
PostgreSQL), the QuoteWerks simulator and the session's broker: a claim and its messages are recorded together, so
a publication that fails leaves them to the relay; the poll survives QuoteWerks errors, remembers where it got to
and fetches only what changed since it was claimed."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from services.bod_listener.receive import BodReceiver, Origin
from services.quote_ingest.ingest import Ingest, IngestRules
from services.quote_ingest.poller import SINCE_KEY, SINCE_KIND, Poller
from services.quote_ingest.webhooks import Delivery
from shared.contracts import ItemChanged, QuoteApproved
from shared.contracts.topics import BOD_INBOUND, ITEM_CHANGED, QUOTE_APPROVED
from shared.platform.kafka import create_broker
from shared.platform.outbox import ClaimTakenError, Outbox, broker_publisher
from shared.platform.settings import BridgeSettings
from shared.platform.state import db, fingerprints
from shared.quotewerks import QUOTEWERKS_ATTEMPTS, QuoteWerksClient
from simulators.ion.bods import BodContext, build_item_master
from simulators.quotewerks.app import create_app
from tests.conftest import _create_database, _drop_database
from tests.log_records import records_of
from tests.outbox_doubles import kept_outbox

RULES = IngestRules(
    approval_events=[],  # the default: only the fetched DocStatus approves
    approved_statuses=["Accepted"],
    order_number_field="CustomText01",
    order_status_field="CustomText02",
    created_doc_status="",
)
API_KEY = {"X-API-Key": "qw-sim-api-key"}


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh state store per test: a SQLite file, or a database of its own on the machine's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
        return
    server = str(request.getfixturevalue("postgres_url")).rsplit("/", 1)[0]
    database = f"m3b_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(database))
    try:
        yield f"{server}/{database}"
    finally:
        asyncio.run(_drop_database(database))


@pytest.fixture
async def engine(state_url: str) -> AsyncIterator[AsyncEngine]:
    await db.migrate(state_url)
    engine = db.create_engine(state_url)
    yield engine
    await engine.dispose()


class FlakyQuoteWerks(httpx.AsyncBaseTransport):
    """The QuoteWerks simulator in process; the first `failures` document listings answer 503. Counts reads."""

    def __init__(self, failures: int = 0) -> None:
        self.app = create_app()
        self.inner = httpx.ASGITransport(app=self.app)
        self.failures = failures
        self.listings = 0
        self.fetched: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path == "/api/v1/documents":
            self.listings += 1
            if self.listings <= self.failures:
                return httpx.Response(503, json={"error": "QuoteWerks is restarting"})
        elif request.method == "GET" and path.startswith("/api/v1/documents/"):
            self.fetched.append(path.rsplit("/", 1)[1])
        return await self.inner.handle_async_request(request)


async def test_a_publication_that_fails_leaves_the_approval_recorded_and_the_relay_publishes_it(
    engine: AsyncEngine,
) -> None:
    qw = FlakyQuoteWerks()
    async with httpx.AsyncClient(transport=qw, base_url="http://qw") as http:
        (await http.post("/api/v1/documents/AAAQ1001/approve", headers=API_KEY)).raise_for_status()
        outbox, recorder = kept_outbox(engine, failures=1)
        ingest = Ingest(QuoteWerksClient("http://qw", SecretStr("qw-sim-api-key"), http=http), engine, outbox, RULES)
        delivery = Delivery(event="QuoteValet.Accepted", doc_no="AAAQ1001", customer_id="")
        assert (await ingest.delivery(delivery)).outcome == "recorded"
        assert (await ingest.delivery(delivery)).outcome == "duplicate", "recorded is as good as published"
        assert recorder.sent == []
        assert await outbox.pending() == 1
        # The relay's first pass notes what is pending; its next publishes it (the immediate send had its chance).
        published, newest = await outbox.relay_once(0)
        assert (published, await outbox.pending()) == (0, 1)
        assert await outbox.relay_once(newest) == (1, 0), "published, and nothing is left"
        assert await outbox.pending() == 0
    assert [key for _, _, key in recorder.sent] == ["AAAQ1001"]
    assert recorder.headers[0]["correlation-id"], "the correlation id travels with the recorded message"


async def test_of_concurrent_recordings_of_one_claim_exactly_one_records_its_message(engine: AsyncEngine) -> None:
    outbox, recorder = kept_outbox(engine)
    delivery_id = f"bod-{uuid.uuid4()}"

    async def record() -> bool:
        try:
            async with outbox.recording() as recorded:
                await recorded.claim("test", delivery_id)
                await recorded.add(BOD_INBOUND, b"<document/>", key=delivery_id)
        except ClaimTakenError:
            return False
        return await outbox.send(recorded)

    results = await asyncio.gather(*(record() for _ in range(20)))
    assert sorted(results) == [False] * 19 + [True]
    assert [key for _, _, key in recorder.sent] == [delivery_id]
    assert await outbox.pending() == 0


async def _item_events(bootstrap: str, item: str, expected: int) -> list[ItemChanged]:
    consumer = AIOKafkaConsumer(ITEM_CHANGED.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[ItemChanged] = []
    try:
        async with asyncio.timeout(20):
            while len(found) < expected:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    mine = [r for r in records if r.key == item.encode()]
                    found += [ItemChanged.model_validate_json(r.value or b"") for r in mine]
    finally:
        await consumer.stop()
    return found


async def test_a_bod_whose_publication_fails_is_published_by_the_relay(kafka_bootstrap: str, postgres_url: str) -> None:
    await db.migrate(postgres_url)
    engine = db.create_engine(postgres_url)
    item = f"T{uuid.uuid4().hex[:8].upper()}"
    bod = build_item_master(BodContext(), item_number=item, description="Claimed once", status="20")
    broker = create_broker(BridgeSettings(kafka_bootstrap_servers=kafka_bootstrap, service_name="test-claims"))
    outbox = Outbox(engine, broker_publisher(broker, max_bytes=1_048_576), max_bytes=1_048_576)
    receiver = BodReceiver(engine, outbox, service="bod-listener")
    try:
        # The broker is not started: the events are recorded, not published, and the BOD is claimed.
        assert (await receiver.receive(bod.xml, Origin())).status == "recorded"
        assert (await receiver.receive(bod.xml, Origin())).status == "duplicate"
        async with broker:
            await broker.start()
            _, newest = await outbox.relay_once(0)
            published, _ = await outbox.relay_once(newest)
            assert published >= 1
        events = await _item_events(kafka_bootstrap, item, 1)
        assert [e.description for e in events] == ["Claimed once"]
    finally:
        await engine.dispose()


def poller(ingest: Ingest, engine: AsyncEngine, interval_s: float = 0.05) -> Poller:
    return Poller(ingest, engine, interval_s=interval_s, overlap_s=300, first_lookback_s=3600)


async def test_the_poll_survives_quotewerks_errors_and_publishes_the_approval_afterwards(engine: AsyncEngine) -> None:
    # Two polls fail: each after the client's own tries (QUOTEWERKS_ATTEMPTS answers 503 in a row).
    qw = FlakyQuoteWerks(failures=2 * QUOTEWERKS_ATTEMPTS)
    async with httpx.AsyncClient(transport=qw, base_url="http://qw") as http:
        # Approved while the webhook went nowhere: only the poll can find it.
        (await http.post("/api/v1/documents/AAAQ1006/approve", headers=API_KEY)).raise_for_status()
        outbox, recorder = kept_outbox(engine)
        ingest = Ingest(QuoteWerksClient("http://qw", SecretStr("qw-sim-api-key"), http=http), engine, outbox, RULES)
        polling = poller(ingest, engine)
        task = asyncio.create_task(polling.run())
        try:
            await asyncio.wait_for(recorder.arrived.wait(), 20)
        finally:
            polling.stop()
            await asyncio.wait_for(task, 5)
    assert polling.failures == 2, polling.figures()
    assert polling.published == 1
    assert qw.listings >= 2 * QUOTEWERKS_ATTEMPTS + 1  # every try reached QuoteWerks
    [(topic, quote, key)] = recorder.sent
    assert (topic, key) == (QUOTE_APPROVED.name, "AAAQ1006")
    assert isinstance(quote, QuoteApproved)
    assert quote.approval_event == "poller"
    assert "AAAQ1010" not in qw.fetched, "accepted a week ago: before the first poll's lookback"


async def test_the_poll_remembers_its_point_and_fetches_only_unclaimed_quotes(engine: AsyncEngine) -> None:
    qw = FlakyQuoteWerks()
    async with httpx.AsyncClient(transport=qw, base_url="http://qw") as http:
        client = QuoteWerksClient("http://qw", SecretStr("qw-sim-api-key"), http=http)
        outbox, recorder = kept_outbox(engine)
        ingest = Ingest(client, engine, outbox, RULES)
        polling = poller(ingest, engine)
        approved = (await http.post("/api/v1/documents/AAAQ1001/approve", headers=API_KEY)).json()
        # The webhook got through for this one: the poll must not fetch it again.
        assert (
            await ingest.delivery(Delivery(event="QuoteValet.Accepted", doc_no="AAAQ1001", customer_id=""))
        ).outcome == "published"
        qw.fetched.clear()
        (await http.post("/api/v1/documents/AAAQ1007/approve", headers=API_KEY)).raise_for_status()
        with records_of("services.quote_ingest.poller", logging.INFO) as said:
            assert await polling.poll_once() == 1
        # The first poll says how far back it looks, so an older approval left out has a reason in the log.
        [first] = [r.getMessage() for r in said if "the first poll looks back to" in r.getMessage()]
        assert "approve such a quote again to have it ordered" in first
        assert qw.fetched == ["AAAQ1007"], "claimed quotes are skipped before fetching the document"
        stored = await fingerprints.get(engine, SINCE_KIND, SINCE_KEY)
        assert stored is not None
        assert datetime.fromisoformat(stored) >= datetime.fromisoformat(
            approved["DocumentHeader"]["LastModified"].replace("Z", "+00:00")
        )
        qw.fetched.clear()
        assert await polling.poll_once() == 0
        assert qw.fetched == [], "within the overlap both are listed again, and skipped"
        # The stored point never moves back, and the next poll starts the overlap before it.
        assert await fingerprints.get(engine, SINCE_KIND, SINCE_KEY) == stored
        since = datetime.fromisoformat(stored) - timedelta(seconds=300)
        listed = await client.documents(doc_type="QUOTE", status="Accepted", modified_since=since)
        assert {"AAAQ1001", "AAAQ1007"} <= {h["DocNo"] for h in listed}
    assert sorted(recorder.keys()) == ["AAAQ1001", "AAAQ1007"]
    assert datetime.fromisoformat(stored).tzinfo is not None
    assert datetime.fromisoformat(stored) <= datetime.now(UTC) + timedelta(seconds=5)
