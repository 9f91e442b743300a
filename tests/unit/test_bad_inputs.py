"""A hand-made corpus of hostile HTTP inputs, sent to the services' apps in process (no lifespan, no broker): each is
refused with the expected 4xx (never a 5xx), counted and logged once, and the service answers afterwards. Plus the
mapping formula parser under fuzzing."""

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services.bod_listener.app import BodListenerSettings, create_runtime as bod_listener
from services.inventory_query.app import InventoryQuerySettings, create_runtime as inventory_query
from services.quote_ingest.app import QuoteIngestSettings, create_runtime as quote_ingest
from services.token_service.app import TokenServiceSettings, create_runtime as token_service
from shared.mapping import parse_formula
from shared.platform.inbound import MAX_JSON_DEPTH, RejectedDeliveryError, json_depth, load_json
from shared.platform.runtime import ServiceRuntime
from tests.fuzz import examples

SHARED = "shared-secret-123"
SIGNING = "signing-secret-456"
KEY = "order-writer-key-789"
READ_KEY = "read-key-012"
GLOBAL_LIMIT = 65_536
NOT_UTF8 = b"\xff\xfe\x80 caf\xe9 \xc3\x28"


def deep(levels: int, inner: str = "1") -> bytes:
    return ("[" * levels + inner + "]" * levels).encode()


def fresh(v1: bytes) -> bytes:
    """A signature header with a timestamp inside the window and `v1` as given (not ASCII, not hex, ...)."""
    return f"t={int(time.time())},v1=".encode() + v1


@pytest.fixture(scope="module")
def runtimes() -> Iterator[dict[str, ServiceRuntime]]:
    # Building a runtime configures logging for the whole process; later test modules expect pytest's own.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield {
        "quote-ingest": quote_ingest(
            QuoteIngestSettings(webhook_secret=SecretStr(SHARED), webhook_signing_secret=SecretStr(SIGNING))
        ),
        "bod-listener": bod_listener(
            BodListenerSettings(bod_secret=SecretStr(SHARED), bod_signing_secret=SecretStr(SIGNING))
        ),
        "token-service": token_service(
            TokenServiceSettings(
                service_keys={"order-writer": SecretStr(KEY)},
                max_body_bytes=GLOBAL_LIMIT,
                ion_api_file="/nonexistent/ionapi",
            )
        ),
        "inventory-query": inventory_query(InventoryQuerySettings(read_key=SecretStr(READ_KEY))),
    }
    root.handlers[:] = handlers
    root.setLevel(level)


def client(runtime: ServiceRuntime) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.app), base_url="http://service")


def rejected(service: str) -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "m3bridge_http_rejected"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["service"] == service
    )


WEBHOOK = "/webhooks/quotewerks"
SECRET = {"X-M3Bridge-Webhook-Secret": SHARED}
BOD_SECRET = {"X-M3Bridge-BOD-Secret": SHARED}
BEARER = {"Authorization": f"Bearer {KEY}"}
READ = {"X-API-Key": READ_KEY}
JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}


def multipart(parameters: bytes, payload: bytes = b"<SyncItemMaster/>") -> tuple[dict[str, str], bytes]:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="ParameterRequest"\r\n'
        f"Content-Type: application/json\r\n\r\n".encode()
        + parameters
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="MessagePayload"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


IMS_DEEP_HEADERS, IMS_DEEP = multipart(deep(10_000))

# (service, method, path, headers, body, expected status)
CORPUS: list[tuple[str, str, str, dict[str, Any], bytes, int]] = [
    # bodies that are not UTF-8, with a content type that is not JSON
    ("quote-ingest", "POST", WEBHOOK, {**SECRET, **TEXT}, NOT_UTF8, 400),
    ("token-service", "POST", "/v1/leases", {**BEARER, **TEXT}, NOT_UTF8, 422),
    ("token-service", "POST", "/v1/reports", {**BEARER, **TEXT}, NOT_UTF8, 422),
    ("token-service", "POST", "/v1/leases", {**BEARER, **JSON}, NOT_UTF8, 400),
    # a 401 report that does not say which token: it would throw the shared token away (found by the fuzz suite)
    ("token-service", "POST", "/v1/reports", {**BEARER, **JSON}, b'{"kind": "unauthorized"}', 422),
    (
        "token-service",
        "POST",
        "/v1/reports",
        {**BEARER, **JSON},
        b'{"kind": "unauthorized", "token_fingerprint": "x"}',
        422,
    ),
    ("inventory-query", "POST", "/v1/availability", {**READ, **TEXT}, NOT_UTF8, 422),
    (
        "inventory-query",
        "POST",
        "/v1/availability",
        {**READ, "Content-Type": "application/octet-stream"},
        NOT_UTF8,
        422,
    ),
    ("inventory-query", "POST", "/v1/availability", {**READ, **JSON}, NOT_UTF8, 400),
    # JSON nested far too deep (the parser recurses), and just too deep
    ("quote-ingest", "POST", WEBHOOK, {**SECRET, **JSON}, deep(10_000), 400),
    ("quote-ingest", "POST", WEBHOOK, {**SECRET, **JSON}, b'{"event": ' + deep(MAX_JSON_DEPTH) + b"}", 400),
    ("quote-ingest", "POST", WEBHOOK, {**SECRET, **JSON}, b'{"event": "E", "DocNo": ' + b"9" * 5000 + b"}", 400),
    ("token-service", "POST", "/v1/leases", {**BEARER, **JSON}, deep(10_000), 400),
    ("token-service", "POST", "/v1/leases", {**BEARER, **JSON}, b'{"a":' * 800 + b"1" + b"}" * 800, 422),
    ("inventory-query", "POST", "/v1/availability", {**READ, **JSON}, deep(10_000), 400),
    ("inventory-query", "POST", "/v1/availability", {**READ, **JSON}, b'{"lines": ' + deep(900) + b"}", 422),
    ("bod-listener", "POST", "/ims/v3/multipartMessage", {**BOD_SECRET, **IMS_DEEP_HEADERS}, IMS_DEEP, 400),
    # signature and secret headers that are not ASCII, or garbage: 401 before anything else
    ("quote-ingest", "POST", WEBHOOK, {"X-M3Bridge-Signature": fresh(b"\xe9\xff\x00")}, b"{}", 401),
    ("quote-ingest", "POST", WEBHOOK, {"X-M3Bridge-Signature": fresh("ünïcødé".encode())}, b"{}", 401),
    ("quote-ingest", "POST", WEBHOOK, {"X-M3Bridge-Signature": b"t=\xd9\xa1,v1=\xff"}, b"{}", 401),
    ("quote-ingest", "POST", WEBHOOK, {"X-M3Bridge-Signature": b"t=" + b"9" * 5000 + b",v1=00"}, b"{}", 401),
    ("quote-ingest", "POST", WEBHOOK, {"X-M3Bridge-Signature": b",,,===,t"}, b"{}", 401),
    ("quote-ingest", "POST", WEBHOOK, {"X-M3Bridge-Webhook-Secret": b"\xff\xfe" + SHARED.encode()}, b"{}", 401),
    ("quote-ingest", "POST", WEBHOOK, {"X-M3Bridge-Webhook-Secret": "sécret".encode()}, b"{}", 401),
    ("bod-listener", "POST", "/bods", {"X-M3Bridge-Signature": fresh(b"\xe9\xff")}, b"<x/>", 401),
    ("bod-listener", "POST", "/bods", {"X-M3Bridge-BOD-Secret": b"\xc3\xa9\xff"}, b"<x/>", 401),
    ("bod-listener", "GET", "/ims/ping", {"X-M3Bridge-Signature": fresh(b"\x80\x81")}, b"", 401),
    ("token-service", "POST", "/v1/leases", {"Authorization": b"Bearer \xff\xe9", **JSON}, b"{}", 401),
    ("token-service", "GET", "/v1/budget", {"Authorization": "Bearer wrong"}, b"", 401),
    # a declared length over the global limit, a route's own limit
    ("token-service", "POST", "/v1/leases", {**BEARER, "Content-Length": "9" * 30}, b"{}", 413),
    ("token-service", "POST", "/v1/leases", {**BEARER, "Content-Length": str(GLOBAL_LIMIT + 1)}, b"{}", 413),
    ("quote-ingest", "POST", WEBHOOK, {**SECRET, "Content-Length": "99999999"}, b"{}", 413),
    ("quote-ingest", "POST", WEBHOOK, SECRET, b" " * 70_000, 413),
    ("bod-listener", "POST", "/bods", {**BOD_SECRET, "Content-Length": "50000000"}, b"<x/>", 413),
    # a content type the parsers cannot read
    (
        "inventory-query",
        "POST",
        "/v1/availability",
        {**READ, "Content-Type": b"application/json; charset=\xff"},
        b"{}",
        422,
    ),
    ("inventory-query", "POST", "/v1/availability", {**READ, "Content-Type": b"\xff/\xfe"}, b'{"lines": []}', 422),
]


@pytest.mark.parametrize(
    ("service", "method", "path", "headers", "body", "status"),
    CORPUS,
    ids=[f"{i}-{c[0]}-{c[2]}-{c[5]}" for i, c in enumerate(CORPUS)],
)
async def test_a_bad_input_is_refused_with_a_4xx_counted_and_the_service_answers_afterwards(
    runtimes: dict[str, ServiceRuntime],
    service: str,
    method: str,
    path: str,
    headers: dict[str, Any],
    body: bytes,
    status: int,
) -> None:
    before = rejected(service)
    async with client(runtimes[service]) as http:
        response = await http.request(method, path, headers=headers, content=body)
        assert response.status_code == status, response.text
        assert response.json()  # a JSON answer with a reason, not a dropped connection
        assert (await http.get("/healthz")).status_code == 200
    assert rejected(service) == before + 1


async def chunks(sent: list[int], size: int = 1024, count: int = 1000) -> AsyncIterator[bytes]:
    """A body without Content-Length (chunked), recording how many chunks were read."""
    for _ in range(count):
        sent.append(size)
        yield b" " * size


async def test_a_chunked_body_is_counted_while_it_streams_and_refused_past_the_global_limit(
    runtimes: dict[str, ServiceRuntime],
) -> None:
    sent: list[int] = []
    async with client(runtimes["token-service"]) as http:
        response = await http.post("/v1/leases", headers={**BEARER, **JSON}, content=chunks(sent))
        assert response.status_code == 413
        assert (await http.get("/healthz")).status_code == 200
    assert sum(sent) <= GLOBAL_LIMIT + 1024  # stopped once over, not read to the end


async def test_a_chunked_webhook_past_its_route_limit_is_refused(runtimes: dict[str, ServiceRuntime]) -> None:
    sent: list[int] = []
    async with client(runtimes["quote-ingest"]) as http:
        response = await http.post(WEBHOOK, headers=SECRET, content=chunks(sent))
        assert response.status_code == 413
    assert sum(sent) <= 65_536 + 1024


async def test_token_service_checks_the_key_before_it_reads_the_body(runtimes: dict[str, ServiceRuntime]) -> None:
    sent: list[int] = []
    async with client(runtimes["token-service"]) as http:
        response = await http.post("/v1/leases", headers=JSON, content=chunks(sent, count=50_000))
        assert response.status_code == 401
    assert sum(sent) <= 1024  # nothing (or the first chunk the transport pulls) of the 50 MB


async def test_a_declared_length_over_the_limit_is_refused_before_anything_is_read(
    runtimes: dict[str, ServiceRuntime],
) -> None:
    sent: list[int] = []
    headers = {**BEARER, **JSON, "Content-Length": str(50 * 1024 * 1024)}
    async with client(runtimes["token-service"]) as http:
        response = await http.post("/v1/leases", headers=headers, content=chunks(sent, count=51_200))
        assert response.status_code == 413
    assert sum(sent) <= 1024


async def test_a_refusal_is_one_log_line_without_the_secret_or_the_body(
    runtimes: dict[str, ServiceRuntime], caplog: pytest.LogCaptureFixture
) -> None:
    presented = "not-the-secret-but-close"
    with caplog.at_level(logging.DEBUG):
        async with client(runtimes["quote-ingest"]) as http:
            response = await http.post(
                WEBHOOK, headers={"X-M3Bridge-Webhook-Secret": presented}, content=b'{"DocNo": "BODY-MARKER"}'
            )
    assert response.status_code == 401
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    text = refusals[0].getMessage()
    assert "bad_secret" in text
    assert presented not in text
    assert SHARED not in text
    assert "BODY-MARKER" not in text


async def test_a_422_renders_undecodable_input_safely(runtimes: dict[str, ServiceRuntime]) -> None:
    async with client(runtimes["token-service"]) as http:
        response = await http.post("/v1/leases", headers={**BEARER, **TEXT}, content=NOT_UTF8)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert set(error) <= {"type", "loc", "msg", "input"}
    assert "\\xff" in error.get("input", "\\xff")  # shown escaped, or not at all


# --- the pure parts --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "depth"),
    [(b"{}", 1), (b'{"a": [1, {"b": "[[[["}]}', 3), (b'"\\"[[["', 0), (b"[[[", 3), (b'"unterminated [[', 0)],
)
def test_json_depth_is_counted_outside_strings(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


def test_json_within_the_depth_limit_is_read() -> None:
    assert load_json(deep(MAX_JSON_DEPTH)) is not None
    with pytest.raises(RejectedDeliveryError) as caught:
        load_json(deep(MAX_JSON_DEPTH + 1))
    assert (caught.value.status, caught.value.reason) == (400, "too_deep")


@pytest.mark.parametrize(
    "formula",
    ["-" * 5000 + "1", "-" * 21 + "1", "(" * 5000 + "1" + ")" * 5000, "(" * 21 + "1" + ")" * 21, "1" + "+1" * 5000],
)
def test_deep_formulas_are_formula_errors_not_recursion_errors(formula: str) -> None:
    with pytest.raises(ValueError, match="more than"):
        parse_formula(formula)


def test_short_runs_of_signs_still_parse() -> None:
    parse_formula("--1")
    parse_formula("-+-lines[].qty_total * -(2 - -1)")


FORMULA_ALPHABET = st.sampled_from(["-", "+", "*", "/", "(", ")", " ", "1", "2.5", "lines[].qty_total", "x", "é", "."])


@settings(max_examples=examples(500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    formula=st.one_of(
        st.text(max_size=300),
        st.lists(FORMULA_ALPHABET, max_size=400).map("".join),
        st.tuples(st.integers(0, 3000), st.sampled_from(["-", "+", "(", "-("])).map(lambda t: t[1] * t[0] + "1"),
    )
)
def test_the_formula_parser_raises_nothing_but_its_own_error(formula: str) -> None:
    with contextlib.suppress(ValueError):
        parse_formula(formula)


def test_json_bodies_in_the_corpus_are_what_they_claim() -> None:
    with pytest.raises(RecursionError):
        json.loads(deep(10_000))  # the input that used to reach the parser
