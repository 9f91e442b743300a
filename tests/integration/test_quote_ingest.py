"""quote-ingest's logic against the QuoteWerks simulator (in process) and a real state store: the poller,
customer changes, once-only publication and the write-back."""

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from services.quote_ingest.ingest import Ingest, IngestRules
from services.quote_ingest.webhooks import Delivery
from shared.contracts import OrderResult, OrderStatusChanged, Problem, QuoteApproved, QuoteWerksCustomerChanged
from shared.platform.state import db
from shared.quotewerks import QuoteWerksClient
from simulators.quotewerks.app import create_app
from tests.outbox_doubles import kept_outbox

RULES = IngestRules(
    approval_events=[],  # the default: only the fetched DocStatus approves
    approved_statuses=["Accepted"],
    order_number_field="CustomText01",
    order_status_field="CustomText02",
    created_doc_status="Ordered",
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await db.migrate(url)
    engine = db.create_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def quotewerks() -> AsyncIterator["tuple[QuoteWerksClient, httpx.AsyncClient]"]:
    app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qw") as http:
        yield QuoteWerksClient("http://qw", SecretStr("qw-sim-api-key"), http=http), http


QW = tuple[QuoteWerksClient, httpx.AsyncClient]


async def test_the_poller_publishes_each_approved_quote_once(engine: AsyncEngine, quotewerks: QW) -> None:
    client, http = quotewerks
    outbox, recorder = kept_outbox(engine)
    ingest = Ingest(client, engine, outbox, RULES)
    headers = {"X-API-Key": "qw-sim-api-key"}
    for doc_no in ("AAAQ1001", "AAAQ1006"):
        (await http.post(f"/api/v1/documents/{doc_no}/approve", headers=headers)).raise_for_status()
    published, since = await ingest.poll(None)
    keys = sorted(recorder.keys())
    assert "AAAQ1001" in keys
    assert "AAAQ1006" in keys
    assert published == len(recorder.sent)
    assert since is not None
    again, _ = await ingest.poll(None)  # from the start again: nothing new
    assert again == 0
    assert all(isinstance(payload, QuoteApproved) for _, payload, _ in recorder.sent)


async def test_a_webhook_after_the_poller_is_a_duplicate(engine: AsyncEngine, quotewerks: QW) -> None:
    client, http = quotewerks
    outbox, recorder = kept_outbox(engine)
    ingest = Ingest(client, engine, outbox, RULES)
    (await http.post("/api/v1/documents/AAAQ1001/approve", headers={"X-API-Key": "qw-sim-api-key"})).raise_for_status()
    await ingest.poll(None)
    result = await ingest.delivery(Delivery(event="QuoteValet.Accepted", doc_no="AAAQ1001", customer_id=""))
    assert result.outcome == "duplicate"
    assert [key for _, _, key in recorder.sent].count("AAAQ1001") == 1


async def test_a_changed_document_approved_again_is_a_new_approval_and_an_unchanged_one_is_not(
    engine: AsyncEngine, quotewerks: QW
) -> None:
    """A held quote fixed in QuoteWerks (a line changed) and approved again is published again; approving it again
    unchanged, or the bridge's own write-back, is not."""
    client, http = quotewerks
    outbox, recorder = kept_outbox(engine)
    ingest = Ingest(client, engine, outbox, RULES)
    api = {"X-API-Key": "qw-sim-api-key"}
    approval = Delivery(event="QuoteValet.Accepted", doc_no="AAAQ1003", customer_id="")
    (await http.post("/api/v1/documents/AAAQ1003/approve", headers=api)).raise_for_status()
    assert (await ingest.delivery(approval)).outcome == "published"
    held = OrderResult(doc_no="AAAQ1003", outcome="held", decided_at=datetime.now(UTC),
                       problems=[Problem(error_class="business", message="item NOPE-123 unknown")])  # fmt: skip
    await ingest.write_back(held)
    assert (await ingest.delivery(approval)).outcome == "duplicate", "the write-back changed nothing that is ordered"
    document = (await http.get("/api/v1/documents/AAAQ1003", headers=api)).json()
    [unknown] = [line for line in document["DocumentItems"] if line["ManufacturerPartNumber"] == "NOPE-123"]
    fixed = {"ManufacturerPartNumber": "ITM000001", "QtyTotal": 2}
    (await http.put(f"/__admin/documents/AAAQ1003/items/{unknown['ID']}", json=fixed)).raise_for_status()
    (await http.post("/api/v1/documents/AAAQ1003/approve", headers=api)).raise_for_status()
    assert (await ingest.delivery(approval)).outcome == "published"
    assert (await ingest.delivery(approval)).outcome == "duplicate"
    published = recorder.payloads(QuoteApproved, key="AAAQ1003")
    assert len(published) == 2
    assert "NOPE-123" in {line.manufacturer_part_number for line in published[0].lines}
    assert "NOPE-123" not in {line.manufacturer_part_number for line in published[1].lines}


async def test_a_quote_that_is_not_approved_is_ignored(engine: AsyncEngine, quotewerks: QW) -> None:
    client, _ = quotewerks
    ingest = Ingest(client, engine, kept_outbox(engine)[0], RULES)
    result = await ingest.delivery(Delivery(event="QuoteValet.Viewed", doc_no="AAAQ1002", customer_id=""))
    assert result.outcome == "ignored"


async def test_customer_changes_are_published(engine: AsyncEngine, quotewerks: QW) -> None:
    client, _ = quotewerks
    outbox, recorder = kept_outbox(engine)
    ingest = Ingest(client, engine, outbox, RULES)
    result = await ingest.delivery(Delivery(event="QuoteWerks.CustomerChanged", doc_no="", customer_id="C000002"))
    assert result.outcome == "published"
    topic, payload, key = recorder.sent[0]
    assert (topic, key) == ("quotewerks.customer.changed.v1", "C000002")
    assert isinstance(payload, QuoteWerksCustomerChanged)
    assert payload.customer.company


async def test_results_are_written_back_on_the_quote(engine: AsyncEngine, quotewerks: QW) -> None:
    client, http = quotewerks
    ingest = Ingest(client, engine, kept_outbox(engine)[0], RULES)
    now = datetime.now(UTC)
    await ingest.write_back(OrderResult(doc_no="AAAQ1001", outcome="created", order_number="1000000007",
                                        order_status="22", customer_number="C000001", decided_at=now))  # fmt: skip
    header = (await http.get("/api/v1/documents/AAAQ1001", headers={"X-API-Key": "qw-sim-api-key"})).json()
    assert header["DocumentHeader"]["CustomText01"] == "1000000007"
    assert header["DocumentHeader"]["DocStatus"] == "Ordered"
    problem = Problem(error_class="business", message="item NOPE-123 unknown")
    await ingest.write_back(OrderResult(doc_no="AAAQ1003", outcome="held", decided_at=now, problems=[problem]))
    held = (await http.get("/api/v1/documents/AAAQ1003", headers={"X-API-Key": "qw-sim-api-key"})).json()
    assert held["DocumentHeader"]["CustomText02"] == "M3 held: item NOPE-123 unknown"


async def test_a_result_for_a_quote_quotewerks_does_not_have_is_not_written_back_nor_an_error(
    engine: AsyncEngine, quotewerks: QW, caplog: pytest.LogCaptureFixture
) -> None:
    """Another producer put an approval on the topic (the contract allows it): its order is made, and there is no
    QuoteWerks quote to write it on. That is said at info, not raised as an error to dead-letter."""
    client, _http = quotewerks
    ingest = Ingest(client, engine, kept_outbox(engine)[0], RULES)
    result = OrderResult(doc_no="ERP-42", outcome="created", order_number="1000000008", customer_number="C000001",
                         decided_at=datetime.now(UTC))  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert await ingest.write_back(result) is False
    assert any("QuoteWerks has no such quote" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


async def test_m3_order_status_changes_are_written_on_the_quote_they_came_from(
    engine: AsyncEngine, quotewerks: QW
) -> None:
    client, http = quotewerks
    ingest = Ingest(client, engine, kept_outbox(engine)[0], RULES)
    now = datetime.now(UTC)

    def change(**fields: str) -> OrderStatusChanged:
        data = {"order_number": "1000000009", "customer_order_number": "AAAQ1002", "customer_number": "C000002",
                "status": "33", "highest_status": "44", "changed_at": now}  # fmt: skip
        return OrderStatusChanged.model_validate({**data, **fields})

    assert await ingest.write_status(change()) is True
    header = (await http.get("/api/v1/documents/AAAQ1002", headers={"X-API-Key": "qw-sim-api-key"})).json()
    fields = header["DocumentHeader"]
    assert (fields["CustomText01"], fields["CustomText02"]) == (
        "1000000009", "M3 order 1000000009 for customer C000002, status 33-44"
    )  # fmt: skip
    assert await ingest.write_status(change(customer_order_number="")) is False  # not an order from a quote
    assert await ingest.write_status(change(customer_order_number="PO-NOT-A-DOCNO")) is False
    assert await ingest.write_status(change(order_number="1000000010")) is False  # the quote has another order
