"""Fuzzing a service's HTTP API with schemathesis: the service runs in this process (uvicorn in a thread, its lifespan
on: broker, state store, start hooks), every operation of its own OpenAPI is called with generated requests, and each
answer is checked: never a 5xx, and the declared schema where one is declared."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from m3bridge.tansu import free_port
from shared.runtime import ServiceRuntime

#: Generated requests per operation and generation mode: a few in `make test`, many in `make fuzz`.
EXAMPLES = int(os.environ.get("M3B_FUZZ_EXAMPLES", "15"))
#: A request that takes longer than this is a hang, counted as a crash.
REQUEST_TIMEOUT_S = 30.0


@dataclass
class Figures:
    """What the fuzzing of one service (or one parser) did, over all its runs."""

    requests: int = 0
    server_errors: int = 0
    crashes: int = 0
    schema_mismatches: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # the first failures, to reproduce

    def note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)

    def answered(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


class Served:
    """A service runtime behind a real HTTP server in a thread of this process (lifespan included)."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            runtime.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"fuzz-{runtime.name}", daemon=True)

    def start(self, timeout_s: float = 60) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError(f"{self.runtime.name} did not start")
            time.sleep(0.05)
        self.wait_ready(timeout_s)

    def readyz(self) -> httpx.Response:
        return httpx.get(f"{self.url}/readyz", timeout=10)

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            response = self.readyz()
            if response.status_code == 200:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.runtime.name} not ready: {response.text}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@contextlib.contextmanager
def served(runtime: ServiceRuntime) -> Iterator[Served]:
    server = Served(runtime)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Building a runtime configures logging for the whole process; later tests expect pytest's own."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


Answers = dict[str, list[requests.Response]]


def fuzz(
    server: Served,
    figures: Figures,
    *,
    headers: Mapping[str, str] | None = None,
    examples: int = EXAMPLES,
    conformance: bool = True,
) -> Answers:
    """Every operation of the service's OpenAPI, with valid and invalid generated requests; `headers` (credentials)
    are sent with each. Returns the answers by operation; the figures count what happened."""
    schema = schemathesis.openapi.from_dict(server.runtime.app.openapi())
    checks = [not_a_server_error, *([response_schema_conformance] if conformance else [])]
    answers: Answers = {}
    session = requests.Session()
    sent = dict(headers or {})
    for result in schema.get_all_operations():
        operation = result.ok()
        answers[operation.label] = []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = _one_operation(operation, mode, server.url, session, sent, checks, figures, answers, examples)
            with contextlib.suppress(Unsatisfiable):  # e.g. no invalid request exists for an operation without input
                run()
        if operation.method.upper() == "POST" and len(operation.body) == 0:
            # The route reads the body itself (webhooks, BODs): the schema cannot say what to send, so send anything.
            _raw_bodies(operation.path, server.url, session, sent, figures, answers, examples)()
    return answers


def _one_operation(
    operation: Any,
    mode: GenerationMode,
    url: str,
    session: requests.Session,
    headers: dict[str, str],
    checks: list[Any],
    figures: Figures,
    answers: Answers,
    examples: int,
) -> Callable[[], None]:
    label = operation.label

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is counted once, none retried
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        figures.requests += 1
        try:
            response = case.call(base_url=url, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # a dropped connection, a hang: the service crashed on this input
            figures.crashes += 1
            figures.note(f"{label}: {type(exc).__name__}: {exc}\n{case.as_curl_command()}")
            return
        figures.answered(response.status_code)
        answers[label].append(response)
        if response.status_code >= 500:
            figures.server_errors += 1
            figures.note(f"{label} -> {response.status_code} {response.text[:300]}\n{case.as_curl_command()}")
            return
        try:
            case.validate_response(response, checks=checks)
        except Exception as exc:
            figures.schema_mismatches += 1
            figures.note(f"{label} -> {response.status_code}: {str(exc)[:400]}\n{case.as_curl_command()}")

    return run  # type: ignore[no-any-return]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=30,
)
BODIES = st.one_of(
    st.binary(max_size=4000),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(
        st.sampled_from(["event", "Event", "DocNo", "DocType", "CMAccountNo", "Revision", "data", "document"]),
        JSON_VALUES,
        max_size=6,
    ).map(lambda value: json.dumps(value).encode()),
    st.text(max_size=400).map(lambda text: f"<?xml version='1.0'?><SyncItemMaster>{text}</SyncItemMaster>".encode()),
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/xml", "text/xml", "text/plain", "multipart/form-data; boundary=b", ""]
)


def _raw_bodies(
    path: str,
    url: str,
    session: requests.Session,
    headers: dict[str, str],
    figures: Figures,
    answers: Answers,
    examples: int,
) -> Callable[[], None]:
    label = f"POST {path}"

    @settings(
        max_examples=examples * 2,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(body=BODIES, content_type=CONTENT_TYPES)
    def run(body: bytes, content_type: str) -> None:
        figures.requests += 1
        sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
        what = f"(body {body[:200]!r}, content type {content_type!r})"
        try:
            response = session.post(f"{url}{path}", data=body, headers=sent, timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:
            figures.crashes += 1
            figures.note(f"{label}: {type(exc).__name__}: {exc} {what}")
            return
        figures.answered(response.status_code)
        answers.setdefault(label, []).append(response)
        if response.status_code >= 500:
            figures.server_errors += 1
            figures.note(f"{label} -> {response.status_code} {response.text[:300]} {what}")

    return run  # type: ignore[no-any-return]
