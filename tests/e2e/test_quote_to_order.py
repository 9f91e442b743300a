"""Quote to order end to end: QuoteWerks simulator → webhook → quote-ingest → Kafka → order-writer → token-service
→ ION/M3 simulator → result → number written back on the quote. Every box is its own process; state in
PostgreSQL; the broker is the session's Tansu."""

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from m3bridge import dead_letters
from m3bridge.tansu import free_port
from shared.contracts import OrderResult
from shared.contracts.topics import ORDER_RESULT, QUOTE_APPROVED, QUOTEWERKS_CUSTOMER_CHANGED
from shared.m3 import M3Client
from shared.m3.lease import LeaseClient, Priority
from shared.platform.correlation import KAFKA_HEADER
from shared.platform.kafka import create_broker, publish
from shared.platform.settings import BridgeSettings
from shared.quotewerks import quote_from_document
from simulators.processes import Captured, wait_until
from simulators.stack import IonSim, QuoteWerksSim, start_ion, start_quotewerks, start_service, start_token_service
from tests.chaos.quotes import create_documents, plan_quotes

SECRET = "webhook-secret-for-tests"
KEYS = {"order-writer": "ow-key-123456", "inspector": "inspector-key-123456"}


@dataclass
class Stack:
    ion: IonSim
    quotewerks: QuoteWerksSim
    token_service: Any
    ingest: tuple[Captured, str]
    writer: tuple[Captured, str]
    writer_settings: dict[str, str]
    bootstrap: str

    def start_writer(self) -> None:
        self.writer = start_service("order-writer", self.bootstrap, self.writer_settings)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, module_postgres_url: str) -> Iterator[Stack]:
    with contextlib.ExitStack() as started:  # a part that fails to start still stops the ones before it
        ion = start_ion(tmp_path_factory.mktemp("ion"))
        started.callback(ion.stop)
        token_service = start_token_service(ion, kafka_bootstrap, KEYS)
        started.callback(token_service.stop)
        ingest_port = free_port()
        quotewerks = start_quotewerks(f"http://127.0.0.1:{ingest_port}/webhooks/quotewerks", SECRET)
        started.callback(quotewerks.stop)
        common = {"M3B_STATE_URL": module_postgres_url, "M3B_KAFKA_SESSION_TIMEOUT_MS": "6000"}
        ingest = start_service("quote-ingest", kafka_bootstrap, {
            **common, "M3B_QUOTEWERKS_URL": quotewerks.url, "M3B_QUOTEWERKS_API_KEY": quotewerks.api_key,
            "M3B_WEBHOOK_SECRET": SECRET,
        }, port=ingest_port)  # fmt: skip
        started.callback(ingest[0].kill_all)
        writer_settings = {
            **common, "M3B_TOKEN_SERVICE_URL": token_service.url, "M3B_TOKEN_SERVICE_KEY": KEYS["order-writer"],
        }  # fmt: skip
        writer = start_service("order-writer", kafka_bootstrap, writer_settings)
        built = Stack(ion, quotewerks, token_service, ingest, writer, writer_settings, kafka_bootstrap)
        started.callback(lambda: built.writer[0].kill_all())  # the test may have replaced it
        yield built


def m3(stack: Stack) -> tuple[M3Client, httpx.AsyncClient]:
    http = httpx.AsyncClient()
    leases = LeaseClient(stack.token_service.url, "inspector", SecretStr(KEYS["inspector"]), http=http)
    return M3Client(leases, http, company=100), http


async def orders_for(stack: Stack, doc_no: str, customer: str) -> list[dict[str, Any]]:
    client, http = m3(stack)
    async with http:
        rows = await client.execute("OIS100MI", "LstHead", {"CUNO": customer}, priority=Priority.INTERACTIVE, maxrecs=0)
    return [r for r in rows if r.get("CUOR") == doc_no]


async def m3_call(stack: Stack, program: str, transaction: str, fields: dict[str, str]) -> list[dict[str, Any]]:
    client, http = m3(stack)
    async with http:
        return await client.execute(program, transaction, fields, priority=Priority.INTERACTIVE, maxrecs=0)


def written_back(stack: Stack, doc_no: str, timeout_s: float = 60) -> dict[str, Any]:
    """Waits until the quote carries an M3 outcome (CustomText02) and returns its header."""
    deadline = time.monotonic() + timeout_s
    header: dict[str, Any] = {}
    while time.monotonic() < deadline:
        header = stack.quotewerks.api("GET", f"documents/{doc_no}")["DocumentHeader"]
        if header.get("CustomText02"):
            return header
        time.sleep(0.2)
    raise AssertionError(f"{doc_no} never got its M3 outcome written back: {header}")


def counted(url: str, name: str, **labels: str) -> float:
    """The sum of a service's `/metrics` samples `name` with these labels (0 before anything was counted)."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text)
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def result_correlated(bootstrap: str, correlation_id: str, timeout_s: float = 60) -> OrderResult:
    """The order result order-writer published for the message that carried `correlation_id` (the session's
    broker holds other tests' results too: only this id counts)."""
    consumer = AIOKafkaConsumer(ORDER_RESULT.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if dict(record.headers).get(KAFKA_HEADER) == correlation_id.encode():
                        return OrderResult.model_validate_json(record.value)
    finally:
        await consumer.stop()
    raise AssertionError(f"no order result carries correlation id {correlation_id} within {timeout_s:.0f}s")


async def uncommitted(bootstrap: str, group: str, topic: str) -> int:
    """Messages of `topic` past what `group` committed, over all partitions (read from the broker; this reader
    subscribes to nothing, so it does not join the group)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        await reader.topics()  # fetches the metadata partitions_for_topic reads
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or set()]
        ends = await reader.end_offsets(partitions)
        behind = 0
        for tp, end in ends.items():
            behind += end - ((await reader.committed(tp)) or 0)
        return behind
    finally:
        await reader.stop()


def approve(stack: Stack, doc_no: str) -> float:
    started = time.monotonic()
    stack.quotewerks.api("POST", f"documents/{doc_no}/approve")
    return started


def test_an_approved_quote_becomes_one_confirmed_m3_order_with_its_lines(stack: Stack) -> None:
    document = stack.quotewerks.api("GET", "documents/AAAQ1001")
    approve(stack, "AAAQ1001")
    header = written_back(stack, "AAAQ1001")
    order_number = header["CustomText01"]
    assert order_number.startswith("1000"), header["CustomText02"]
    head = asyncio.run(m3_call(stack, "OIS100MI", "GetHead", {"ORNO": order_number}))[0]
    assert head["CUOR"] == "AAAQ1001"
    assert head["CUNO"] == "C000001"
    lines = asyncio.run(m3_call(stack, "OIS100MI", "LstLine", {"ORNO": order_number}))
    quote = quote_from_document(document, approval_event="test", approved_at=datetime.now(UTC))
    ordered = [ln for ln in quote.lines if ln.line_type == 1 and ln.qty_total > 0]
    assert [(str(r["ITNO"]), Decimal(str(r["ORQT"]))) for r in lines] == [
        (ln.manufacturer_part_number, ln.qty_total) for ln in ordered
    ]
    assert len(asyncio.run(orders_for(stack, "AAAQ1001", "C000001"))) == 1


def test_an_unknown_customer_is_created_first(stack: Stack) -> None:
    document = stack.quotewerks.api("GET", "documents/AAAQ1002")["DocumentHeader"]
    approve(stack, "AAAQ1002")
    order_number = written_back(stack, "AAAQ1002")["CustomText01"]
    head = asyncio.run(m3_call(stack, "OIS100MI", "GetHead", {"ORNO": order_number}))[0]
    customer = asyncio.run(m3_call(stack, "CRS610MI", "GetBasicData", {"CUNO": str(head["CUNO"])}))[0]
    assert customer["CUNM"] == document["SoldToCompany"][:36]
    assert str(customer["MAIL"]).casefold() == document["SoldToEmail"].casefold()


def test_a_too_long_customer_name_follows_the_mapping_rule(stack: Stack) -> None:
    document = stack.quotewerks.api("GET", "documents/AAAQ1005")["DocumentHeader"]
    assert len(document["SoldToCompany"]) > 36
    approve(stack, "AAAQ1005")
    order_number = written_back(stack, "AAAQ1005")["CustomText01"]
    head = asyncio.run(m3_call(stack, "OIS100MI", "GetHead", {"ORNO": order_number}))[0]
    customer = asyncio.run(m3_call(stack, "CRS610MI", "GetBasicData", {"CUNO": str(head["CUNO"])}))[0]
    assert customer["CUNM"] == document["SoldToCompany"][:36]  # the shipped rule: truncate, with a note


def held_letters(stack: Stack, doc_no: str) -> list[dead_letters.Found]:
    """order-writer's "held" dead letters of `doc_no`, oldest first (the session's topic: other tests' too)."""
    settings = BridgeSettings(kafka_bootstrap_servers=stack.bootstrap)
    return [
        f for f in asyncio.run(dead_letters.read_all(settings, "order-writer", idle_s=1.0))
        if f.letter.original_key == doc_no and f.letter.error_class == "held"
    ]  # fmt: skip


@pytest.mark.parametrize(("doc_no", "item"), [("AAAQ1003", "NOPE-123"), ("AAAQ1004", "ITM000033")])
def test_an_unknown_or_inactive_item_holds_the_order_with_a_reason(stack: Stack, doc_no: str, item: str) -> None:
    before = len(held_letters(stack, doc_no))
    approve(stack, doc_no)
    header = written_back(stack, doc_no)
    assert header["CustomText02"].startswith("M3 held"), header
    assert item in header["CustomText02"]
    assert not header.get("CustomText01")
    # The letter is on the broker before the result that was written back: it is there now.
    assert len(held_letters(stack, doc_no)) == before + 1, "a held quote is listed among the dead letters, for replay"


def test_a_duplicate_webhook_and_a_redelivered_message_leave_one_order(stack: Stack) -> None:
    approve(stack, "AAAQ1006")
    order_number = written_back(stack, "AAAQ1006")["CustomText01"]
    customer = str(asyncio.run(m3_call(stack, "OIS100MI", "GetHead", {"ORNO": order_number}))[0]["CUNO"])
    body = json.dumps({"event": "QuoteValet.Accepted", "DocNo": "AAAQ1006"}).encode()
    headers = {"X-M3Bridge-Webhook-Secret": SECRET, "Content-Type": "application/json"}
    again = httpx.post(f"{stack.ingest[1]}/webhooks/quotewerks", content=body, headers=headers, timeout=10)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate"), again.text
    document = stack.quotewerks.api("GET", "documents/AAAQ1006")
    quote = quote_from_document(document, approval_event="replay", approved_at=datetime.now(UTC))

    correlation_id = uuid.uuid4().hex

    async def redeliver() -> OrderResult:
        broker = create_broker(BridgeSettings(kafka_bootstrap_servers=stack.bootstrap, service_name="test"))
        async with broker:
            await broker.start()
            await publish(broker, QUOTE_APPROVED, quote, key=quote.doc_no, headers={KAFKA_HEADER: correlation_id})
        return await result_correlated(stack.bootstrap, correlation_id)

    # order-writer's result for the redelivered message proves it was processed; only then count the orders.
    announced = asyncio.run(redeliver())
    assert (announced.doc_no, announced.outcome, announced.order_number) == ("AAAQ1006", "created", order_number)
    assert len(asyncio.run(orders_for(stack, "AAAQ1006", customer))) == 1


def test_bad_and_unsigned_webhooks_get_4xx(stack: Stack) -> None:
    url = f"{stack.ingest[1]}/webhooks/quotewerks"

    def published() -> float:
        return sum(
            counted(stack.ingest[1], "m3bridge_messages_published_total", topic=topic.name, outcome="ok")
            for topic in (QUOTE_APPROVED, QUOTEWERKS_CUSTOMER_CHANGED)
        )

    def refused(reason: str) -> float:
        return counted(stack.ingest[1], "m3bridge_webhook_deliveries_total", outcome=reason)

    reasons = ("unsigned", "bad_secret", "malformed", "too_large")
    published_before, refused_before = published(), {reason: refused(reason) for reason in reasons}
    body = json.dumps({"event": "QuoteValet.Accepted", "DocNo": "AAAQ1101"}).encode()
    assert httpx.post(url, content=body, timeout=10).status_code == 401
    assert httpx.post(url, content=body, headers={"X-M3Bridge-Webhook-Secret": "wrong"}, timeout=10).status_code == 401
    assert httpx.post(url, content=b"{", headers={"X-M3Bridge-Webhook-Secret": SECRET}, timeout=10).status_code == 400
    huge = b'{"event": "x", "DocNo": "' + b"A" * 70_000 + b'"}'
    assert httpx.post(url, content=huge, headers={"X-M3Bridge-Webhook-Secret": SECRET}, timeout=10).status_code == 413
    # A delivery is published before its answer is sent: each refusal counted proves that one is finished.
    assert {reason: refused(reason) - refused_before[reason] for reason in reasons} == dict.fromkeys(reasons, 1)
    assert published() == published_before, "nothing was published for the refused deliveries"
    assert not stack.quotewerks.api("GET", "documents/AAAQ1101")["DocumentHeader"].get("CustomText02")


def test_a_crash_between_batch_head_and_confirm_still_leaves_one_order(stack: Stack) -> None:
    """Kill -9 the order-writer right after AddBatchHead reached M3; the restarted one resumes from the
    ledger (and the uncommitted offset) and creates exactly one order."""
    stack.ion.admin("PUT", "latency", {"base_ms": 400, "jitter_ms": 0})
    try:
        heads_before = stack.ion.stats()["m3"].get("OIS100MI/AddBatchHead", 0)
        confirms_before = stack.ion.stats()["m3"].get("OIS100MI/Confirm", 0)
        approve(stack, "AAAQ1007")
        deadline = time.monotonic() + 60
        while stack.ion.stats()["m3"].get("OIS100MI/AddBatchHead", 0) == heads_before:
            assert time.monotonic() < deadline, "AddBatchHead never reached M3"
            time.sleep(0.02)
        os.killpg(stack.writer[0].process.pid, signal.SIGKILL)
        stack.writer[0].process.wait()
        # Each M3 call takes 400 ms here, so the lines and Confirm were still to come when it died.
        assert stack.ion.stats()["m3"].get("OIS100MI/Confirm", 0) == confirms_before
    finally:
        stack.ion.admin("PUT", "latency", {"base_ms": 0, "jitter_ms": 0})
    stack.start_writer()
    order_number = written_back(stack, "AAAQ1007", timeout_s=90)["CustomText01"]
    customer = str(asyncio.run(m3_call(stack, "OIS100MI", "GetHead", {"ORNO": order_number}))[0]["CUNO"])
    assert len(asyncio.run(orders_for(stack, "AAAQ1007", customer))) == 1


def test_replaying_a_held_quote_processes_it_again(stack: Stack) -> None:
    """After the fix in M3 a held quote is replayed from the dead letters; here the item is still unknown,
    so the replay is held again: a second dead letter for the same DocNo proves it went through once more."""
    settings = BridgeSettings(kafka_bootstrap_servers=stack.bootstrap)
    before = held_letters(stack, "AAAQ1003")
    if not before:  # run on its own: hold it first
        approve(stack, "AAAQ1003")
        written_back(stack, "AAAQ1003")
        before = wait_until("the held dead letter", lambda: held_letters(stack, "AAAQ1003"), 30)
    assert asyncio.run(dead_letters.replay(settings, "order-writer", before[-1:])) == 1
    wait_until("the replayed quote to be held again", lambda: len(held_letters(stack, "AAAQ1003")) > len(before), 30)


def test_a_held_quote_fixed_in_quotewerks_and_approved_again_becomes_one_order(stack: Stack) -> None:
    """A rep's quote is held for an item M3 has discontinued; the rep swaps the line for another product in
    QuoteWerks and approves it again: that approval is new content, so it is ordered, once, with the fixed line."""
    number = f"Q{uuid.uuid4().hex[:8].upper()}"
    created = httpx.post(f"{stack.quotewerks.url}/__admin/documents", timeout=10, json={
        "Number": number, "CMAccountNo": "C000001",
        "Lines": [{"ManufacturerPartNumber": "ITM000012", "QtyTotal": 3},
                  {"ManufacturerPartNumber": "ITM000066", "QtyTotal": 2}],  # STAT 90 in M3
    })  # fmt: skip
    created.raise_for_status()
    doc_no = created.json()["DocumentHeader"]["DocNo"]
    inactive = next(row for row in created.json()["DocumentItems"] if row["ManufacturerPartNumber"] == "ITM000066")
    approve(stack, doc_no)
    held = written_back(stack, doc_no)
    assert held["CustomText02"].startswith("M3 held"), held
    assert "ITM000066" in held["CustomText02"], held
    edited = httpx.put(f"{stack.quotewerks.url}/__admin/documents/{doc_no}/items/{inactive['ID']}", timeout=10,
                       json={"ManufacturerPartNumber": "ITM000067", "QtyTotal": 2})  # fmt: skip
    edited.raise_for_status()
    approve(stack, doc_no)
    header = wait_until("the re-approved quote's order number", lambda: (
        h if (h := stack.quotewerks.api("GET", f"documents/{doc_no}")["DocumentHeader"]).get("CustomText01") else None
    ), 60)  # fmt: skip
    [order] = asyncio.run(orders_for(stack, doc_no, "C000001"))
    assert order["ORNO"] == header["CustomText01"]
    lines = asyncio.run(m3_call(stack, "OIS100MI", "LstLine", {"ORNO": header["CustomText01"]}))
    assert sorted((str(r["ITNO"]), Decimal(str(r["ORQT"]))) for r in lines) == [
        ("ITM000012", Decimal(3)), ("ITM000067", Decimal(2)),
    ]  # fmt: skip


def test_one_order_writer_works_on_several_quotes_at_once_and_orders_each_once(stack: Stack) -> None:
    """Six quotes approved together while every M3 call takes 300 ms: the one order-writer has several of them at
    the Gateway at the same moment (its lanes), not one after the other, and each becomes exactly one order."""
    quotes = [q for q in plan_quotes(12, seed=7301, first_number=73001) if not q.must_hold][:6]
    for quote in quotes:
        quote.customer, quote.sold_to = quote.customer or "C000002", {}

    async def create() -> None:
        async with httpx.AsyncClient() as http:
            await create_documents(http, stack.quotewerks.url, quotes)

    asyncio.run(create())
    stack.ion.admin("PUT", "latency", {"base_ms": 300, "jitter_ms": 0})
    stack.ion.admin("POST", "reset-stats")
    try:
        for quote in quotes:
            approve(stack, quote.doc_no)
        numbers = {quote.doc_no: written_back(stack, quote.doc_no, timeout_s=120)["CustomText01"] for quote in quotes}
        most_at_once = stack.ion.stats()["gateway"]["most_in_flight_by_source"].get("m3bridge-order-writer", 0)
    finally:
        stack.ion.admin("PUT", "latency", {"base_ms": 0, "jitter_ms": 0})
    assert most_at_once >= 2, f"order-writer never had two M3 calls open at once ({most_at_once})"
    # Committed per partition as the quotes finished: nothing is left for a restarted order-writer to read again.
    wait_until("order-writer's offsets to reach the end of the topic",
               lambda: asyncio.run(uncommitted(stack.bootstrap, "m3bridge.order-writer", QUOTE_APPROVED.name)) == 0,
               30)  # fmt: skip
    for quote in quotes:
        assert numbers[quote.doc_no].startswith("1000"), numbers
        assert len(asyncio.run(orders_for(stack, quote.doc_no, str(quote.customer)))) == 1


def test_a_held_quote_is_on_the_work_queue_and_a_retry_after_the_fix_in_m3_orders_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's path: `m3bridge work list` shows the held quote with its reason and class; the item is created
    in M3 (the simulator's admin API, as a user does in MMS001); `m3bridge work retry` sends the stored quote again;
    it becomes one order and its work item is resolved by itself."""
    from m3bridge.cli import main

    monkeypatch.setenv("M3B_STATE_URL", stack.writer_settings["M3B_STATE_URL"])
    monkeypatch.setenv("M3B_KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap)
    new_item = f"NEW-{uuid.uuid4().hex[:8].upper()}"
    created = httpx.post(f"{stack.quotewerks.url}/__admin/documents", timeout=10, json={
        "Number": f"Q{uuid.uuid4().hex[:8].upper()}", "CMAccountNo": "C000001",
        "Lines": [{"ManufacturerPartNumber": "ITM000012", "QtyTotal": 1},
                  {"ManufacturerPartNumber": new_item, "QtyTotal": 4}],
    })  # fmt: skip
    created.raise_for_status()
    doc_no = created.json()["DocumentHeader"]["DocNo"]
    approve(stack, doc_no)
    assert written_back(stack, doc_no)["CustomText02"].startswith("M3 held")

    def listed() -> list[dict[str, Any]]:
        capsys.readouterr()
        assert main(["work", "list", "--item", new_item, "--json"]) == 0
        found: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
        return found

    [item] = wait_until("the held quote on the work queue", listed, 30)
    assert (item["doc_no"], item["state"], item["status"]) == (doc_no, "held", "open")
    assert new_item in item["reason"]
    assert new_item in item["items"]
    assert main(["work", "show", str(item["id"])]) == 0
    shown = capsys.readouterr().out
    assert "what the mapping sends to M3, as at the first attempt" in shown
    assert new_item in shown

    stack.ion.admin("POST", "m3/items", {"ITNO": new_item, "ITDS": "Added for the retry"})
    assert main(["work", "retry", str(item["id"]), "--note", "item created in MMS001"]) == 0
    header = wait_until("the retried quote's order number", lambda: (
        h if (h := stack.quotewerks.api("GET", f"documents/{doc_no}")["DocumentHeader"]).get("CustomText01") else None
    ), 60)  # fmt: skip
    [order] = asyncio.run(orders_for(stack, doc_no, "C000001"))
    assert order["ORNO"] == header["CustomText01"]
    capsys.readouterr()
    assert main(["work", "show", str(item["id"]), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["status"] == "resolved"
    assert [event["event"] for event in after["history"]] == ["held", "retried", "resolved"]
    assert after["history"][-1]["note"] == f"became M3 order {header['CustomText01']}"
    # "Where is my order?": the quote's story in one command.
    assert main(["trace", doc_no]) == 0
    story = capsys.readouterr().out
    assert story.startswith(f"{doc_no}: M3 order {header['CustomText01']} (revision 0, customer C000001)"), story
    for step in ("approval claimed by quote-ingest", "revision 0: confirmed", f"work item {item['id']}: held",
                 f"work item {item['id']}: retried", f"work item {item['id']}: resolved"):  # fmt: skip
        assert step in story, story


def audit_events(stack: Stack, idle_s: float = 1.5) -> list[dict[str, Any]]:
    """Everything on m3bridge.audit.v1 so far (the session's topic: other tests' writes too)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic("m3bridge.audit.v1") or set()
            if not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic("m3bridge.audit.v1") or set()
            assigned = [TopicPartition("m3bridge.audit.v1", p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            found: list[dict[str, Any]] = []
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < idle_s:
                batches = await consumer.getmany(timeout_ms=250)
                for records in batches.values():
                    found += [json.loads(record.value) for record in records if record.value]
                    quiet_since = time.monotonic()
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_every_write_of_an_order_is_on_the_audit_trail(stack: Stack) -> None:
    """The order's M3 writes (batch head with the DocNo as CUOR, lines, Confirm) and the write-back onto the quote,
    each with its outcome, service and correlation id; no personal data among the keys."""
    number = f"Q{uuid.uuid4().hex[:8].upper()}"
    created = httpx.post(f"{stack.quotewerks.url}/__admin/documents", timeout=10, json={
        "Number": number, "CMAccountNo": "C000001", "Lines": [{"ManufacturerPartNumber": "ITM000012", "QtyTotal": 2}],
    })  # fmt: skip
    created.raise_for_status()
    doc_no = created.json()["DocumentHeader"]["DocNo"]
    approve(stack, doc_no)
    order_number = written_back(stack, doc_no)["CustomText01"]

    def recorded() -> list[dict[str, Any]] | None:
        events = [e for e in audit_events(stack) if doc_no in e["keys"].values() or order_number in e["keys"].values()]
        return events if any(e["system"] == "quotewerks" for e in events) else None

    events = wait_until("the order's writes on the audit trail", recorded, 30)
    by_operation = {e["operation"]: e for e in events}
    head = by_operation["OIS100MI/AddBatchHead"]
    assert (head["outcome"], head["service"], head["keys"]["CUOR"]) == ("ok", "order-writer", doc_no)
    # The lines and Confirm name the batch order (M3's temporary number), which the same correlation id ties in.
    related = [e for e in audit_events(stack) if e["correlation_id"] == head["correlation_id"]]
    operations = {e["operation"]: e for e in related}
    lines = next(e for name, e in operations.items() if name.startswith("OIS100MI/AddBatchLine"))
    assert operations["OIS100MI/Confirm"]["keys"]["ORNO"] == lines["keys"]["ORNO"]
    assert operations["OIS100MI/Confirm"]["outcome"] == "ok"
    assert by_operation["document"]["service"] == "quote-ingest"
    assert by_operation["document"]["keys"]["DocNo"] == doc_no
    assert all(e["correlation_id"] for e in events)
    assert not [e for e in events if {"CUNM", "MAIL", "PHNO", "CUA1"} & set(e["keys"])]
