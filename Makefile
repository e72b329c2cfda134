# Two commands a new user needs: `make run` and `make test`. Everything else is installed by these.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-m 'not slow'"`.
PYTEST_ARGS ?=
# Test processes: two on two cores (the suite spends a fifth of its time waiting on start-ups and
# servers); each test module stays on one process, its fixtures built once, the longest modules
# first (tests/conftest.py). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2

.PHONY: install run test test-deps image-test fuzz lint format clean bench

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/orchestrator submit configs/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# PostgreSQL and Chromium for the tracking-server and browser tests (installed only when missing).
test-deps:
	bash scripts/test-deps.sh

# pytest exits 5 when it collected no test; make treats that as a failure like any other.
test: lint test-deps
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The CPU training image built from the Dockerfile (mmdebstrap + buildah, no daemon, no registry) on
# a Debian base with a uid-1000 user, then `orchestrator validate` and 10 training steps in it as the
# image's user; about 6 minutes on 2 cores, 8 GB of disk while it runs. Not part of `make test`: CI
# runs it as its own step.
image-test: $(STAMP)
	bash scripts/image-test.sh

# The property-based tests with 10,000 examples each (make test runs a few dozen of each).
fuzz: $(STAMP)
	ORCHESTRATOR_FUZZ_EXAMPLES=10000 $(BIN)/pytest tests/spec/test_fuzz.py tests/test_fuzz_cli.py $(PYTEST_ARGS)

# Benchmarks 1-5 on the CPU (about 12 minutes on 2 cores; PostgreSQL for the tracking-server figures),
# written to benchmarks/RESULTS.md. Run it on an otherwise idle machine.
bench: $(STAMP) test-deps
	$(BIN)/python -m benchmarks.run_all

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) wheelhouse .pytest_cache .ruff_cache checkpoints mlflow.db mlruns test-artifacts
