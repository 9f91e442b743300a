# M3 Bridge. `make run` starts everything locally; `make test` runs the whole suite (CI calls it).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-all test-slow test-unit lint fmt docs bench chaos fuzz keys venv system clean help

help:
	@echo "make run    - the embedded stack: broker, state, every service (Ctrl-C stops it)"
	@echo "make test   - the test suite (unit, integration, e2e) against a real broker and PostgreSQL, in parallel"
	@echo "make test-all - make test, then the longer variants (make test-slow)"
	@echo "make lint   - ruff and mypy"
	@echo "make docs  - regenerate docs/asyncapi.json and the README settings table"
	@echo "make bench - benchmarks: M3 path, quote to order, availability, full load (.venv/bin/python -m bench month-end: month end)"
	@echo "make chaos - the quote-to-order path under M3 faults, kills, 429s, poison, a kill at every crash point (CHAOS_ARGS='-s a,p -n 40')"
	@echo "make fuzz  - schemathesis against every service's OpenAPI on a local run (FUZZ_ARGS='-n 200 -s quote-ingest')"

# The Debian packages the two commands need (python3.11, unixODBC + FreeTDS, promtool), installed when missing.
system:
	@bash deploy/dev/system-packages.sh

$(STAMP): pyproject.toml | system
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: system $(STAMP)
	$(BIN)/m3bridge run $(if $(QUOTEWERKS),--quotewerks $(QUOTEWERKS))

# Independent test files run in parallel workers, each with its own broker and database (a module's processes stay
# on one worker), in collection order so the long end-to-end files start first; TEST_WORKERS=0 runs them in this
# process.
TEST_WORKERS ?= 4
PYTEST := $(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: system $(STAMP)
	$(PYTEST) -m "not slow"

# The longer variants left out of make test (marked slow): the other ways to start the local run.
test-slow: system $(STAMP)
	$(PYTEST) -m slow

test-all: test test-slow

test-unit: system $(STAMP)
	$(BIN)/pytest -q -m unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services m3bridge simulators tests bench

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: $(STAMP)
	$(BIN)/m3bridge docs

keys: $(STAMP)
	$(BIN)/m3bridge keys --out deploy/secrets

# Benchmarks print figures and ratios; targets are judged by reading them, never by the test suite.
bench: $(STAMP)
	$(BIN)/python -m bench

# Chaos scenarios against the real processes; one table row each, exit 1 on any defect. Options:
# CHAOS_ARGS='-s a,e,p -n 40' (scenarios a-e, p: the crash-point matrix; quotes per scenario);
# `$(BIN)/python -m tests.chaos --help`.
CHAOS_ARGS ?=
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

# The property tests of the parsers that take outside input with FUZZ_EXAMPLES cases each, then every service's
# OpenAPI fuzzed on a local run (with its keys and without) and a canary quote: a table of requests, 5xx and crashes
# per service, exit 1 on any. FUZZ_ARGS='-n 200 --seed 7 -s bod-listener,quote-ingest'.
FUZZ_EXAMPLES ?= 2000
FUZZ_ARGS ?=
fuzz: $(STAMP)
	M3B_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -p no:cacheprovider tests/unit/test_properties_*.py \
		tests/unit/test_bad_inputs.py tests/unit/test_ims.py tests/integration/test_bod_listener.py
	$(BIN)/python -m tests.fuzz $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
