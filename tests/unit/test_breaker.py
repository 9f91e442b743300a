"""The circuit breaker per M3 program (shared/m3/breaker.py) with a controlled clock."""

import re
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from services import m3_callers
from shared.m3 import m3_client_for
from shared.m3.breaker import CircuitBreakers, M3CircuitOpenError
from shared.m3.transactions import PROGRAMS_BY_SERVICE
from shared.platform.settings import M3CallerSettings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breakers() -> tuple[CircuitBreakers, Clock]:
    clock = Clock()
    return CircuitBreakers(failures=3, reset_after_s=30, clock=clock), clock


def test_consecutive_failures_open_the_circuit_of_that_program_only() -> None:
    cb, clock = breakers()
    for _ in range(2):
        cb.before_call("OIS100MI", "Confirm")
        cb.failed("OIS100MI")
    assert cb.state("OIS100MI") == "closed"
    cb.before_call("OIS100MI", "Confirm")
    cb.failed("OIS100MI")
    assert cb.state("OIS100MI") == "open"
    clock.now += 10
    with pytest.raises(M3CircuitOpenError) as refused:
        cb.before_call("OIS100MI", "GetHead")
    assert refused.value.retry_after_s == pytest.approx(20)
    assert refused.value.retryable
    assert "OIS100MI/GetHead" in str(refused.value)
    cb.before_call("CRS610MI", "GetBasicData")  # another program is not affected
    assert cb.states() == {"OIS100MI": "open"}


def test_a_success_in_between_resets_the_count() -> None:
    cb, _ = breakers()
    for outcome in ("failed", "failed", "succeeded", "failed", "failed"):
        cb.before_call("MMS200MI", "GetItmBasic")
        getattr(cb, outcome)("MMS200MI")
    assert cb.state("MMS200MI") == "closed"


def test_after_the_reset_time_one_probe_goes_and_its_success_closes_the_circuit() -> None:
    cb, clock = breakers()
    for _ in range(3):
        cb.failed("OIS100MI")
    clock.now += 30
    assert cb.state("OIS100MI") == "half_open"
    cb.before_call("OIS100MI", "Confirm")  # the probe
    with pytest.raises(M3CircuitOpenError):
        cb.before_call("OIS100MI", "Confirm")  # only one at a time
    cb.succeeded("OIS100MI")
    assert cb.state("OIS100MI") == "closed"
    cb.before_call("OIS100MI", "Confirm")


def test_a_failed_probe_opens_the_circuit_again_for_the_full_time() -> None:
    cb, clock = breakers()
    for _ in range(3):
        cb.failed("OIS100MI")
    clock.now += 31
    cb.before_call("OIS100MI", "Confirm")
    cb.failed("OIS100MI")
    assert cb.state("OIS100MI") == "open"
    clock.now += 29
    with pytest.raises(M3CircuitOpenError) as refused:
        cb.before_call("OIS100MI", "Confirm")
    assert refused.value.retry_after_s == pytest.approx(1)


def test_a_probe_that_says_nothing_lets_the_next_call_probe() -> None:
    cb, clock = breakers()
    for _ in range(3):
        cb.failed("OIS100MI")
    clock.now += 30
    cb.before_call("OIS100MI", "Confirm")
    cb.released("OIS100MI")  # e.g. a 429 or a cancelled call
    cb.before_call("OIS100MI", "Confirm")
    assert cb.state("OIS100MI") == "half_open"


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreakers(failures=0)


def _state_gauge(program: str) -> float | None:
    return REGISTRY.get_sample_value("m3bridge_m3_circuit_state", {"program": program})


def test_the_state_gauge_reads_closed_for_the_given_programs_before_any_call() -> None:
    assert _state_gauge("TST901MI") is None
    CircuitBreakers(programs=("TST901MI", "TST902MI"))
    assert _state_gauge("TST901MI") == 0
    assert _state_gauge("TST902MI") == 0


@pytest.mark.parametrize("service", sorted(PROGRAMS_BY_SERVICE))
async def test_each_m3_caller_exports_the_state_of_its_programs_from_the_start(service: str) -> None:
    settings = M3CallerSettings(service_name=service)
    async with httpx.AsyncClient() as http:
        client = m3_client_for(settings, http)
    assert set(client.breakers.states()) == set()
    for program in PROGRAMS_BY_SERVICE[service]:
        assert _state_gauge(program) == 0, program


def test_every_m3_caller_declares_the_programs_its_code_names() -> None:
    """The static list behind the gauges covers every MI program named in the service's own code."""
    assert set(PROGRAMS_BY_SERVICE) == set(m3_callers())
    for service in m3_callers():
        folder = ROOT / "services" / service.replace("-", "_")
        named = {m for path in folder.rglob("*.py") for m in re.findall(r"\b[A-Z]{3}\d{3}MI\b", path.read_text())}
        assert named <= set(PROGRAMS_BY_SERVICE[service]), f"{service}: {sorted(named)}"
        assert "MRS001MI" in PROGRAMS_BY_SERVICE[service], "the client's metadata look-up"
