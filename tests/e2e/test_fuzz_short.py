"""The fuzz suite's short lane: a few schemathesis cases per operation and phase against every service of a local
run, with keys and without; no 5xx, no request left without an answer, no 2xx without a key, every process alive
and ready afterwards, and a canary quote still becomes its M3 order (`make fuzz` is the long lane)."""

from pathlib import Path

from services import SERVICES
from tests.fuzz.run import fuzz_everything


def test_every_service_survives_a_short_fuzz_with_nothing_lost(tmp_path: Path) -> None:
    run = fuzz_everything(tmp_path, examples=3, seed=20261202)
    assert {result.service for result in run.results} == set(SERVICES)
    assert all(result.requests > 0 for result in run.results)
    assert run.problems == [], "\n".join(run.problems) + f"\nlogs: {tmp_path / 'stack.log'}"
