# The two README commands are `make demo` and `make test`; everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432

.PHONY: demo test lint format bench install dev services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[examples]' 
	touch $@

# torch first, pinned: the CPU build that lies on this disk; the open range of the finetune
# extra would otherwise pull a CUDA build of several GB.
$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[kafka,postgres,aws,ray,finetune,dev]'
	# checkov (the Terraform scan) pins packages that clash with the project's: its own venv
	$(PYTHON) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/python -m pip install -q --disable-pip-version-check checkov==3.3.30
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

## demo: create .venv, install EventOps and run the event loop on embedded defaults
demo: install
	$(BIN)/eventops demo

## services: start what the tests need and is not running (PostgreSQL, promtool, Chromium); Kafka (tansu) is started by the tests
services:
	@if ! $(BIN)/python -c "import socket; socket.create_connection(('$(PG_HOST)', $(PG_PORT)), 2)" 2>/dev/null; then \
		echo "PostgreSQL is not answering on $(PG_HOST):$(PG_PORT); starting it"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	fi
	@$(BIN)/python -c "import socket; socket.create_connection(('$(PG_HOST)', $(PG_PORT)), 5)" \
		|| (echo "PostgreSQL unreachable on $(PG_HOST):$(PG_PORT): the tests need it" >&2; exit 1)
	@command -v promtool >/dev/null || { echo "promtool missing; installing Debian's prometheus package"; \
		apt-get install -y -q --no-install-recommends prometheus >/dev/null \
		|| { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }; }
	@command -v promtool >/dev/null || (echo "promtool not found: the deploy/prometheus tests need it" >&2; exit 1)
	@command -v chromium >/dev/null || { echo "chromium missing; installing Debian's chromium package (UI tests)"; \
		apt-get install -y -q --no-install-recommends chromium >/dev/null \
		|| { apt-get update -q && apt-get install -y -q --no-install-recommends chromium >/dev/null; }; }
	@command -v chromium >/dev/null || (echo "chromium not found: the tests/e2e UI tests need it" >&2; exit 1)

## lint: formatting, lint rules, strict typing and the layer contract
lint: dev
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pre-commit run detect-secrets --all-files --show-diff-on-failure
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

format: dev
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

## test: install test dependencies, start services, lint, run the whole suite (slow tests included)
test: dev services lint
	$(BIN)/python -m pytest

## bench: run the benchmarks and rewrite their tables in benchmarks/README.md
bench: dev
	$(BIN)/python benchmarks/bench_bus.py --write-readme
	$(BIN)/python benchmarks/bench_ingest.py --write-readme
	$(BIN)/python benchmarks/bench_ingest_http.py --write-readme
	$(BIN)/python benchmarks/bench_pipelines.py --write-readme
	$(BIN)/python benchmarks/bench_serving.py --write-readme
	$(BIN)/python benchmarks/bench_drift.py --write-readme
	$(BIN)/python benchmarks/bench_loop.py --write-readme
	$(BIN)/python benchmarks/bench_finetune.py --lora --write-readme
	$(BIN)/python benchmarks/bench_profiles.py --write-readme
	$(BIN)/python benchmarks/bench_aws.py --write-readme

clean:
	rm -rf $(VENV) .eventops .mypy_cache .ruff_cache .pytest_cache
