# rtml: `make demo` runs the whole loop, `make test` the test suite. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export SPARK_LOCAL_IP := 127.0.0.1
export PYTHONHASHSEED := 0

.PHONY: install system-deps up down status demo test test-unit bench security faults lint clean

install: $(STAMP)

system-deps:
	@bash infra/install_system_deps.sh

$(STAMP): pyproject.toml requirements.lock
	@$(MAKE) --no-print-directory system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e ".[dev]"
	@touch $(STAMP)

up: install
	$(BIN)/rtml up

down:
	@test -x $(BIN)/rtml && $(BIN)/rtml down || true

status: install
	$(BIN)/rtml status

demo: install
	$(BIN)/rtml demo

test: install
	$(BIN)/python -m pytest -q -m "not faults" --durations=20 $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -q -m "not integration and not faults" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m tests.benchmarks.run $(BENCH_ARGS)

# Security probes against the real local stack (started and stopped here when not running) and a prediction
# service: tests/benchmarks/results/security.json. SECURITY_ARGS=--fast: only the probes `make test` runs.
security: install
	$(BIN)/python -m tests.security.run $(SECURITY_ARGS)

# The fault matrix against the real local stack -> tests/benchmarks/results/reliability.json (FAULTS_ARGS=--short: CI)
faults: install
	$(BIN)/python -m pytest -q -m faults
	$(BIN)/python -m tests.faults.run $(FAULTS_ARGS)

lint: install
	$(BIN)/ruff check .

clean: down
	rm -rf .rtml .pytest_cache .ruff_cache
