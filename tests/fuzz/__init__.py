"""The fuzz suite: schemathesis against every service's OpenAPI on a real local run (`make fuzz`; a short lane in
`make test`). Property tests of the parsers that take outside input are unit tests (tests/unit)."""

import os


def examples(default: int) -> int:
    """Hypothesis examples for a property test: `default` in `make test`, at least M3B_FUZZ_EXAMPLES in `make fuzz`."""
    return max(default, int(os.environ.get("M3B_FUZZ_EXAMPLES", "0")))
