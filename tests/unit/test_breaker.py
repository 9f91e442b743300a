"""The circuit breaker per M3 program (shared/m3/breaker.py) with a controlled clock."""

import pytest

from shared.m3.breaker import CircuitBreakers, M3CircuitOpenError

pytestmark = pytest.mark.unit


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
