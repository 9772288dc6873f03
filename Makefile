# riskstream — every target bootstraps what it needs; see `make help`.
SHELL := /bin/bash
# .venv's interpreter: a distribution's python3.11 when it can make venvs, else the first
# python3.11 on PATH (PYTHON=... overrides). Debian's and Ubuntu's are built with PGO and
# LTO, like the official images the Dockerfile uses; a pyenv build without
# --enable-optimizations ran the worker ~19 % and raw aiokafka ~27 % slower (see
# docs/PERFORMANCE.md, "Session 8").
ifndef PYTHON
PYTHON := $(shell for p in /usr/bin/python3.11 /usr/local/bin/python3.11; do \
	$$p -c 'import ensurepip, venv' >/dev/null 2>&1 && { echo $$p; exit; }; done; echo python3.11)
endif
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The score path's compiled kernels (streams/native): rebuilt when their sources change.
NATIVE := $(VENV)/.native
NATIVE_SRC := setup.py $(wildcard streams/native/*.pyx streams/native/*.pxi)
export OPENBLAS_NUM_THREADS ?= 1
export PYTHONDONTWRITEBYTECODE := 1

.DEFAULT_GOAL := help
.PHONY: help bootstrap demo test test-unit test-integration test-slow test-faults bench lint fmt up down status clean

help: ## list every target with one line each
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (riskstream needs Python 3.11)"; exit 1; }
	@PYTHON=$(PYTHON) bash ops/bootstrap-system.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" "setuptools>=77"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# pip's editable install above compiles the kernels; this rebuilds them only when
# streams.native finds them missing or older than their sources.
$(NATIVE): $(STAMP) $(NATIVE_SRC)
	@$(PY) -c "import streams.native as n, sys; sys.exit(not n.AVAILABLE)" 2>/dev/null \
	  || $(PY) -m pip install -q --no-deps -e .
	@$(PY) -c "import streams.native as n; print('score path kernels:', 'built' if n.AVAILABLE else n.MISSING)"
	@touch $(NATIVE)

bootstrap: $(STAMP) $(NATIVE) ## create .venv, install riskstream, system tools and the Kafka jars (cached)
	@PYTHON=$(PYTHON) bash ops/bootstrap-system.sh
	@$(PY) -m streams.services.kafka fetch

demo: bootstrap ## run the whole system end to end on embedded Kafka + Valkey, print a summary
	$(VENV)/bin/riskstream demo

test: bootstrap ## unit + integration tests against real Kafka and Valkey (< 15 min)
	$(PY) -m pytest -m "not slow and not faults" -q

test-unit: bootstrap ## unit tests and doctests only (no services)
	$(PY) -m pytest -m "not slow and not faults and not integration" -q

test-integration: bootstrap ## integration tests only (real Kafka + Valkey)
	$(PY) -m pytest -m "integration and not slow and not faults" -q tests/integration

test-slow: bootstrap ## the slow-marked suites (small-scale reports, long streams)
	$(PY) -m pytest -m slow -q

test-faults: bootstrap ## fault-injection suite: kill -9, Kafka restart, Redis outage, hostile input
	$(PY) -m pytest -m faults -q

bench: bootstrap ## benchmarks: print tables, write bench/results/*.json (never asserted)
	$(PY) -m bench

lint: bootstrap ## ruff + mypy (strict defs on streams/ and models/)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy streams models

fmt: $(STAMP) ## format the code with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

up: bootstrap ## start Kafka and Valkey in the background for running the pieces by hand
	$(VENV)/bin/riskstream up

down: $(STAMP) ## stop what `make up` started
	$(VENV)/bin/riskstream down

status: $(STAMP) ## show the services' addresses, pids and health
	$(VENV)/bin/riskstream status

clean: ## remove .venv, the compiled kernels and local state (keeps the Kafka jar cache)
	-$(VENV)/bin/riskstream down 2>/dev/null
	rm -rf $(VENV) .riskstream .pytest_cache .mypy_cache .ruff_cache build
	rm -f streams/native/*.c streams/native/*.so
