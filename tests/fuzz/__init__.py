"""The fuzz suite: schemathesis against every service's OpenAPI on a real local run (`make fuzz`; a short lane in
`make test`). Property tests of the parsers that take outside input are unit tests (tests/unit)."""

import os

#: Examples per property in `make test`: enough to run every strategy's branches, derandomised (the same inputs every
#: run, see tests/conftest.py), so the suite stays fast and a failure there is reproducible.
QUICK_EXAMPLES = 25


def fuzzing() -> bool:
    """True under `make fuzz`, which sets M3B_FUZZ_EXAMPLES."""
    return bool(os.environ.get("M3B_FUZZ_EXAMPLES"))


def examples(fuzz: int, quick: int = QUICK_EXAMPLES) -> int:
    """Hypothesis examples for a property test: `quick` in `make test`; under `make fuzz` at least `fuzz`, or
    M3B_FUZZ_EXAMPLES when that is more."""
    if not fuzzing():
        return quick
    return max(fuzz, int(os.environ["M3B_FUZZ_EXAMPLES"]))
