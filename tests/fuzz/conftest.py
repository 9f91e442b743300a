"""The fuzz lane: every service's OpenAPI under schemathesis, and the parsers of outside input under hypothesis.

`make test` runs a few examples per operation; `make fuzz` (M3B_FUZZ_EXAMPLES=500) many, and prints a table of what
was tried and what failed per service and parser at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.harness import EXAMPLES, Figures
from tests.stack import IonSim, QuoteWerksSim, TokenService, start_ion, start_quotewerks, start_token_service

#: Keys of the M3 callers fuzzed against the token-service process.
CALLER_KEYS = {"catalog-sync": "fuzz-catalog-sync-key-0001", "inventory-query": "fuzz-inventory-query-key-0001"}

_FIGURES: dict[str, Figures] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Service fuzzing needs the real broker (integration); the parser properties need nothing (unit)."""
    for item in items:
        path = item.path.as_posix()
        if "/tests/fuzz/" not in path:
            continue
        item.add_marker(pytest.mark.integration if path.endswith("/test_services.py") else pytest.mark.unit)


def figures_of(name: str) -> Figures:
    """The session's figures of one service or parser, for the table at the end."""
    return _FIGURES.setdefault(name, Figures())


@pytest.fixture(scope="session")
def fuzz_ion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IonSim]:
    ion = start_ion(tmp_path_factory.mktemp("fuzz-ion"))
    try:
        yield ion
    finally:
        ion.stop()


@pytest.fixture(scope="session")
def fuzz_token_service(fuzz_ion: IonSim, kafka_bootstrap: str) -> Iterator[TokenService]:
    """The token-service the M3 callers lease from (a process; the token-service under fuzzing runs in this one)."""
    service = start_token_service(fuzz_ion, kafka_bootstrap, CALLER_KEYS)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def fuzz_quotewerks() -> Iterator[QuoteWerksSim]:
    quotewerks = start_quotewerks("http://127.0.0.1:9/unused", "unused-secret")
    try:
        yield quotewerks
    finally:
        quotewerks.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"fuzzing (M3B_FUZZ_EXAMPLES={EXAMPLES})")
    write(f"{'service / parser':<26}{'tried':>8}{'5xx':>6}{'crashes':>9}{'schema':>8}  statuses")
    total = Figures()
    for name, figures in sorted(_FIGURES.items()):
        statuses = " ".join(f"{code}:{count}" for code, count in sorted(figures.statuses.items()))
        write(
            f"{name:<26}{figures.requests:>8}{figures.server_errors:>6}{figures.crashes:>9}"
            f"{figures.schema_mismatches:>8}  {statuses}"
        )
        total.requests += figures.requests
        total.server_errors += figures.server_errors
        total.crashes += figures.crashes
        total.schema_mismatches += figures.schema_mismatches
    write(f"{'total':<26}{total.requests:>8}{total.server_errors:>6}{total.crashes:>9}{total.schema_mismatches:>8}")
    for name, figures in sorted(_FIGURES.items()):
        for example in figures.examples:
            write(f"{name}: {example}")
