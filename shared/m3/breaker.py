"""A circuit breaker per M3 program: when one program keeps failing (5xx, timeouts, dropped connections), stop
sending it requests for a while instead of adding to an outage, and let one probe through to find out whether it
is back.

- closed: calls go through; `failures` consecutive transient failures of a program open its circuit;
- open: calls fail at once with `M3CircuitOpenError` (its `retry_after_s` says when a probe may go) — no lease is
  taken, nothing reaches the Gateway;
- half-open, after `reset_after_s`: one call goes through as the probe, the others still fail at once; the probe's
  success closes the circuit, its failure opens it again for another `reset_after_s`.

An answer from M3 (records, or a business NOK) counts as success: the program works, the data was wrong. A 429 or
401 counts as neither (the rate budget and the token are handled elsewhere). One breaker object serves one
process (the service's `M3Client`); the state is not shared between replicas, which each find out for themselves.

Written here rather than taken from a library: the breaker must tell the retry loop how long the circuit stays
open (so a caller with a short deadline gives up at once and one with a long deadline waits for the probe), and
the libraries looked at (purgatory, aiobreaker, circuitbreaker) expose no remaining open time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter, Gauge

from shared.m3.errors import M3TransientError

State = Literal["closed", "open", "half_open"]
_STATE_VALUE: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}

circuit_state = Gauge(
    "m3bridge_m3_circuit_state", "Circuit breaker per M3 program: 0 closed, 1 half-open, 2 open.", ["program"]
)
circuit_rejections = Counter(
    "m3bridge_m3_circuit_rejections_total", "M3 calls refused because the program's circuit was open.", ["program"]
)
circuit_openings = Counter("m3bridge_m3_circuit_openings_total", "Times a program's circuit opened.", ["program"])


class M3CircuitOpenError(M3TransientError):
    """The program failed repeatedly and is given a rest; nothing was sent. Retry after `retry_after_s`."""

    def __init__(self, program: str, transaction: str, *, retry_after_s: float, failures: int) -> None:
        super().__init__(
            f"circuit open after {failures} consecutive failures; next probe in {retry_after_s:.1f}s",
            program=program,
            transaction=transaction,
        )
        self.retry_after_s = retry_after_s


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreakers:
    def __init__(
        self,
        *,
        failures: int = 5,
        reset_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        programs: Iterable[str] = (),
    ) -> None:
        """`programs`: the ones the service calls; their state gauge reads 0 (closed) from now on, not only after
        their first call."""
        if failures < 1 or reset_after_s <= 0:
            raise ValueError("failures must be >= 1 and reset_after_s > 0")
        self.failures = failures
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}
        for program in programs:
            self._publish(program)

    def state(self, program: str) -> State:
        circuit = self._circuits.get(program)
        if circuit is None or circuit.opened_at is None:
            return "closed"
        if circuit.probing or self._clock() - circuit.opened_at >= self.reset_after_s:
            return "half_open"
        return "open"

    def states(self) -> dict[str, State]:
        """Programs whose circuit is not closed (for health details)."""
        return {program: s for program in self._circuits if (s := self.state(program)) != "closed"}

    def before_call(self, program: str, transaction: str) -> None:
        """Raises M3CircuitOpenError when the call must not go; otherwise the caller must report its outcome
        (`succeeded`, `failed` or `released`)."""
        circuit = self._circuits.get(program)
        if circuit is None or circuit.opened_at is None:
            return
        waited = self._clock() - circuit.opened_at
        if waited < self.reset_after_s or circuit.probing:
            circuit_rejections.labels(program).inc()
            remaining = max(self.reset_after_s - waited, 0.0) if not circuit.probing else min(1.0, self.reset_after_s)
            raise M3CircuitOpenError(program, transaction, retry_after_s=remaining, failures=circuit.failures)
        circuit.probing = True  # this call is the probe
        self._publish(program)

    def succeeded(self, program: str) -> None:
        circuit = self._circuits.get(program)
        if circuit is None:
            return
        circuit.failures, circuit.opened_at, circuit.probing = 0, None, False
        self._publish(program)

    def failed(self, program: str) -> None:
        circuit = self._circuits.setdefault(program, _Circuit())
        circuit.failures += 1
        if circuit.probing or (circuit.opened_at is None and circuit.failures >= self.failures):
            if circuit.opened_at is None or circuit.probing:
                circuit_openings.labels(program).inc()
            circuit.opened_at, circuit.probing = self._clock(), False
        self._publish(program)

    def released(self, program: str) -> None:
        """The call ended without saying anything about the program (429, 401, cancelled): a probe may go again."""
        circuit = self._circuits.get(program)
        if circuit is not None and circuit.probing:
            circuit.probing = False
            self._publish(program)

    def _publish(self, program: str) -> None:
        circuit_state.labels(program).set(_STATE_VALUE[self.state(program)])
