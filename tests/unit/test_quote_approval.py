"""Which deliveries quote-ingest turns into approved quotes: the fetched document's DocStatus decides; a webhook
event approves by itself only when the configuration names it."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from services.quote_ingest.app import QuoteIngestSettings
from services.quote_ingest.ingest import Ingest, IngestRules
from services.quote_ingest.webhooks import Delivery
from shared.platform.state import db
from shared.quotewerks import QuoteWerksClient
from simulators.quotewerks.app import create_app
from simulators.quotewerks.config import QwSimConfig
from tests.outbox_doubles import KeptMessages, kept_outbox

pytestmark = pytest.mark.unit
OPEN_QUOTE = "AAAQ1002"  # DocStatus "Open" in the simulator's data
ACCEPTED = Delivery(event="QuoteValet.Accepted", doc_no=OPEN_QUOTE, customer_id="")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await db.migrate(url)
    engine = db.create_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app()), base_url="http://qw") as client:
        yield client


def rules(settings: QuoteIngestSettings) -> IngestRules:
    return IngestRules(
        approval_events=settings.approval_events,
        approved_statuses=settings.approved_statuses,
        order_number_field=settings.writeback_order_field,
        order_status_field=settings.writeback_status_field,
        created_doc_status=settings.writeback_doc_status,
    )


def settings(**values: object) -> QuoteIngestSettings:
    return QuoteIngestSettings.model_validate(values)


async def deliver(http: httpx.AsyncClient, engine: AsyncEngine, settings: QuoteIngestSettings) -> KeptMessages:
    outbox, recorder = kept_outbox(engine)
    client = QuoteWerksClient("http://qw", SecretStr("qw-sim-api-key"), http=http)
    assert (await client.document(OPEN_QUOTE))["DocumentHeader"]["DocStatus"] == "Open"
    result = await Ingest(client, engine, outbox, rules(settings)).delivery(ACCEPTED)
    assert result.outcome == ("published" if recorder.sent else "ignored"), result
    return recorder


def test_by_default_no_event_approves_and_the_simulators_accepted_status_does() -> None:
    defaults = QuoteIngestSettings.model_fields
    assert defaults["approval_events"].get_default(call_default_factory=True) == []
    statuses = defaults["approved_statuses"].get_default(call_default_factory=True)
    assert QwSimConfig().accepted_status.casefold() in {status.casefold() for status in statuses}


async def test_an_open_quote_with_an_acceptance_webhook_is_ignored_by_default(
    http: httpx.AsyncClient, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("M3B_APPROVAL_EVENTS", raising=False)
    recorder = await deliver(http, engine, settings())
    assert recorder.sent == []


async def test_an_open_quote_is_published_when_the_configuration_names_the_event(
    http: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    recorder = await deliver(http, engine, settings(approval_events=["QuoteValet.Accepted"]))
    assert [(topic, key) for topic, _, key in recorder.sent] == [("quotewerks.quote.approved.v1", OPEN_QUOTE)]


async def test_a_quote_whose_status_is_approved_is_published_whatever_the_event(
    http: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    approve = await http.post(f"/api/v1/documents/{OPEN_QUOTE}/approve", headers={"X-API-Key": "qw-sim-api-key"})
    approve.raise_for_status()
    outbox, recorder = kept_outbox(engine)
    client = QuoteWerksClient("http://qw", SecretStr("qw-sim-api-key"), http=http)
    result = await Ingest(client, engine, outbox, rules(settings())).delivery(
        Delivery(event="QuoteWerks.DocumentChanged", doc_no=OPEN_QUOTE, customer_id="")
    )
    assert result.outcome == "published"
    assert [(topic, key) for topic, _, key in recorder.sent] == [("quotewerks.quote.approved.v1", OPEN_QUOTE)]
