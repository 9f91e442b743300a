"""Property tests: for ANY input these parsers return a valid result or raise their own documented error, never another
exception, and never hang. The `.ionapi` file (`shared.m3.ionapi.IonApiCredentials.load` → credentials |
`IonApiFileError`); M3 MI answers (`shared.m3.wire.parse_v1` on the JSON, and `M3Client.execute` / `bulk` on the raw
HTTP answer → records | `M3Error`); Kafka payloads (`shared.platform.consuming.decode` → the topic's model |
`PoisonMessageError`; `Consumer.consume` → the handler or one dead letter). Inputs and settings:
`tests/unit/outside_inputs.py`."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from faststream import AckPolicy
from hypothesis import example, given, strategies as st
from pydantic import BaseModel

from services.bod_listener.bods import parse_bod
from shared import contracts
from shared.contracts.topics import ALL_TOPICS
from shared.m3 import M3Client, M3Error, wire as m3_wire
from shared.m3.ionapi import IonApiCredentials, IonApiFileError
from shared.m3.lease import Priority
from shared.platform.consuming import INVALID, UNDECODABLE, Consumer, Consumers, PoisonMessageError, RetryPolicy, decode
from shared.quotewerks import customer_from_contact, quote_from_document
from tests.unit.m3_faults import FixedLeases
from tests.unit.outside_inputs import (
    APPROVED_AT,
    BOD_SEEDS,
    CONTACT_SEED,
    DOCUMENT_SEED,
    FUZZ,
    json_bodies,
    json_values,
    mutated_json,
    no_hang,
    parsed_or_refused,
)

pytestmark = pytest.mark.unit

# --- 3. the .ionapi file -----------------------------------------------------------------------------------------

IONAPI_KEYS = ("ti", "ci", "cs", "iu", "pu", "ot", "or", "cn", "saak", "sask", "oa", "ev", "v")
IONAPI_SEED: dict[str, Any] = {
    "ti": "TST_TENANT", "cn": "m3bridge", "dt": "12", "ci": "TST_TENANT~abc", "cs": "client-secret",
    "iu": "https://mingle-ionapi.example/", "pu": "https://mingle-sso.example/TST_TENANT/as/",
    "oa": "authorization.oauth2", "ot": "token.oauth2", "or": "revoke_token.oauth2", "ev": "U1", "v": "1.1",
    "saak": "TST_TENANT#abc", "sask": "account-secret",
}  # fmt: skip


@pytest.fixture(scope="module")
def ionapi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ionapi")


@FUZZ
@given(content=json_bodies((IONAPI_SEED,), IONAPI_KEYS) | json_bodies((IONAPI_SEED,), IONAPI_KEYS).map(
    lambda body: b"\xef\xbb\xbf" + body
))  # fmt: skip
@example(content=b"[" * 100_000)
@example(content=b'{"ti": ' + b"[" * 5000 + b"]" * 5000 + b"}")
@example(content=b'{"ti": ' + b"1" * 5000 + b"}")
def test_an_ionapi_file_is_read_or_refused_with_an_ionapi_file_error(ionapi_dir: Path, content: bytes) -> None:
    path = ionapi_dir / f"{uuid.uuid4().hex}.ionapi"
    path.write_bytes(content)
    try:
        credentials = parsed_or_refused(lambda: IonApiCredentials.load(path), IonApiFileError, shown=content)
    finally:
        path.unlink()
    if credentials is not None:
        assert credentials.tenant
        assert credentials.client_id
        assert credentials.ion_api_url
        assert credentials.auth_server_url
        assert credentials.token_url
        assert credentials.m3_base_url
        assert credentials.grant_type in ("password", "client_credentials")


# --- 4. M3 MI answers ---------------------------------------------------------------------------------------------

MI_KEYS = (
    "Program", "Transaction", "Metadata", "Field", "@name", "@type", "@length", "@description", "MIRecord",
    "RowIndex", "NameValue", "Name", "Value", "ErrorMessage", "@code", "@field", "Message", "results", "records",
    "errorMessage", "errorCode", "errorField", "errorType", "transaction",
)  # fmt: skip
MI_SEEDS: tuple[Any, ...] = (
    {
        "Program": "CRS610MI", "Transaction": "LstByNumber",
        "Metadata": {"Field": [{"@name": "CUNO", "@type": "A", "@length": "10", "@description": "Customer"},
                               {"@name": "CRLM", "@type": "N", "@length": 15},
                               {"@name": "LMDT", "@type": "D", "@length": "8"}]},
        "MIRecord": [{"RowIndex": "0", "NameValue": [{"Name": "CUNO", "Value": "C0001     "},
                                                     {"Name": "CRLM", "Value": "1500.50"},
                                                     {"Name": "LMDT", "Value": "20261120"}]}],
    },
    {"Metadata": {"Field": {"@name": "ORNO", "@type": "A", "@length": "10"}},
     "MIRecord": [{"NameValue": [{"Name": "ORNO", "Value": "1000000001"}]}]},
    {"@type": "ServerReturnedNOK", "@code": "WCU0203", "@field": "CUNO", "Message": "Customer C9 does not exist"},
    {"ErrorMessage": {"@type": "ServerReturnedNOK", "@code": "SES0005", "Message": "Not authorized"}},
    {"@type": "TransactionNotFound", "Message": "Transaction Nope does not exist"},
)  # fmt: skip
BULK_SEEDS: tuple[Any, ...] = (
    {"results": [{"transaction": "GetBasicData", "records": [{"CUNO": "C0001", "CRLM": "10"}]},
                 {"transaction": "GetBasicData", "errorMessage": "Customer C9 does not exist", "errorCode": "WCU0203",
                  "errorField": "CUNO", "errorType": "ServerReturnedNOK"}]},
    {"results": [{"transaction": "GetBasicData", "records": []}, {"transaction": "GetBasicData"}]},
)  # fmt: skip


def test_the_seed_mi_answers_are_read() -> None:
    rows, specs = m3_wire.parse_v1(MI_SEEDS[0], "CRS610MI", "LstByNumber")
    assert rows[0]["CUNO"] == "C0001     "
    assert set(specs) == {"CUNO", "CRLM", "LMDT"}
    with pytest.raises(M3Error):
        m3_wire.parse_v1(MI_SEEDS[2], "CRS610MI", "GetBasicData")


@FUZZ
@given(body=json_values(MI_KEYS) | mutated_json(MI_SEEDS, MI_KEYS))
def test_an_mi_json_answer_is_rows_or_an_m3_error(body: Any) -> None:
    parsed = parsed_or_refused(lambda: m3_wire.parse_v1(body, "CRS610MI", "LstByNumber"), M3Error, shown=body)
    if parsed is not None:
        rows, specs = parsed
        assert all(isinstance(row, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in row.items())
                   for row in rows)  # fmt: skip
        assert all(spec.type in ("A", "N", "D") for spec in specs.values())


def m3_client_answering(status: int, content_type: str, body: bytes) -> tuple[M3Client, httpx.AsyncClient]:
    """The real M3 client, one attempt per call, in front of a Gateway that gives this one answer to everything."""

    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": content_type}, content=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return M3Client(FixedLeases(), http, validate=False, max_attempts=1), http  # type: ignore[arg-type]


def gateway_answers(seeds: tuple[Any, ...]) -> st.SearchStrategy[tuple[int, str, bytes]]:
    return st.tuples(
        st.sampled_from([200, 200, 200, 400, 400, 401, 403, 404, 429, 500, 502, 504, 302, 418]),
        st.sampled_from(["application/json", "application/json; charset=utf-8", "text/html", ""]),
        json_bodies(seeds, MI_KEYS),
    )


@FUZZ
@given(answer=gateway_answers(MI_SEEDS))
@example(answer=(200, "application/json", b"[" * 100_000))
@example(answer=(400, "application/json", b'{"results": [1]}'))
def test_an_mi_http_answer_is_records_or_an_m3_error(answer: tuple[int, str, bytes]) -> None:
    status, content_type, body = answer

    async def call() -> Any:
        client, http = m3_client_answering(status, content_type, body)
        async with http:
            return await client.execute("CRS610MI", "LstByNumber", {"CUNO": "C0001"}, priority=Priority.TRANSACTIONAL)

    records = parsed_or_refused(lambda: asyncio.run(call()), M3Error, shown=answer)
    if records is not None:
        assert isinstance(records, list)
        assert all(isinstance(record, dict) for record in records)


@FUZZ
@given(answer=gateway_answers(BULK_SEEDS))
@example(answer=(200, "application/json", b'{"results": [1, 2]}'))
@example(answer=(200, "application/json", b'{"results": [{"records": [1]}, {}]}'))
def test_a_bulk_http_answer_is_outcomes_or_an_m3_error(answer: tuple[int, str, bytes]) -> None:
    status, content_type, body = answer
    transactions = [("GetBasicData", {"CUNO": "C0001"}), ("GetBasicData", {"CUNO": "C0009"})]

    async def call() -> Any:
        client, http = m3_client_answering(status, content_type, body)
        async with http:
            return await client.bulk("CRS610MI", transactions, priority=Priority.TRANSACTIONAL)

    outcomes = parsed_or_refused(lambda: asyncio.run(call()), M3Error, shown=answer)
    if outcomes is not None:
        assert len(outcomes) == len(transactions)
        assert all(outcome.error is None or isinstance(outcome.error, M3Error) for outcome in outcomes)


# --- 5. Kafka payloads ---------------------------------------------------------------------------------------------


def _seed_payloads() -> dict[type[BaseModel], list[Any]]:
    """A valid JSON payload per model the bridge itself produces from outside input (the seeds to mutate)."""
    models: dict[type[BaseModel], list[Any]] = {}
    produced: list[BaseModel] = [
        quote_from_document(DOCUMENT_SEED, approval_event="QuoteValet.Accepted", approved_at=APPROVED_AT),
        customer_from_contact(CONTACT_SEED, change="updated", changed_at=APPROVED_AT),
        *(event.payload for xml in BOD_SEEDS for event in parse_bod(xml).events),
    ]
    for payload in produced:
        models.setdefault(type(payload), []).append(json.loads(payload.model_dump_json()))
    return models


SEED_PAYLOADS = _seed_payloads()
JSON_TOPICS = tuple(topic for topic in ALL_TOPICS if topic.content_type == "application/json")
PAYLOAD_KEYS = tuple(
    sorted({key for seeds in SEED_PAYLOADS.values() for seed in seeds for key in seed} | {"lines", "DocNo"})
)


@st.composite
def kafka_messages(draw: st.DrawFn) -> tuple[type[BaseModel], bytes]:
    model = draw(st.sampled_from(JSON_TOPICS)).payload
    seeds = tuple(SEED_PAYLOADS.get(model) or [{}])
    return model, draw(json_bodies(seeds, PAYLOAD_KEYS))


@FUZZ
@given(message=kafka_messages())
def test_a_kafka_payload_decodes_to_its_model_or_is_poison(message: tuple[type[BaseModel], bytes]) -> None:
    model, body = message
    payload = parsed_or_refused(lambda: decode(model, body), PoisonMessageError, shown=(model, body))
    if payload is not None:
        assert isinstance(payload, model)


APPROVED_SUBSCRIBER = f"properties/approved-{uuid.uuid4().hex[:8]}"  # metrics labels are process-wide
CONSUMERS = Consumers("properties", stall_after_s=30)
CONSUMERS.add(APPROVED_SUBSCRIBER, "quotewerks.quote.approved.v1")


class DeadLetters:
    def __init__(self) -> None:
        self.error_classes: list[str] = []

    async def __call__(self, message: Any, *, error_class: str, error_message: str, attempts: int, **_: Any) -> None:
        assert error_message
        assert attempts == 1
        self.error_classes.append(error_class)


@FUZZ
@given(body=json_bodies(tuple(SEED_PAYLOADS[contracts.QuoteApproved]), PAYLOAD_KEYS))
@example(body=b"[" * 100_000)
def test_a_consumer_hands_over_a_valid_payload_or_dead_letters_it_once(body: bytes) -> None:
    handled: list[Any] = []
    letters = DeadLetters()

    async def handler(payload: Any, _message: Any) -> None:
        handled.append(payload)

    consumer = Consumer(
        service="properties",
        subscriber=APPROVED_SUBSCRIBER,
        model=contracts.QuoteApproved,
        handler=handler,
        dead_letter=letters,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        policy=RetryPolicy(max_attempts=1),
        progress=CONSUMERS.progress[APPROVED_SUBSCRIBER],
    )
    message = SimpleNamespace(raw_message=SimpleNamespace(topic="quotewerks.quote.approved.v1", partition=0, offset=1))
    with no_hang():
        asyncio.run(consumer.consume(body, message))
    if handled:
        assert not letters.error_classes
        assert isinstance(handled[0], contracts.QuoteApproved)
    else:
        assert letters.error_classes in ([UNDECODABLE], [INVALID])
