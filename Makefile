# Two commands for a fresh machine: `make demo` and `make test`. Each sets up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo up test check lint protos bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## demo: a full offline optimization of the bundled example, through the gateway
demo: setup
	$(VENV)/bin/mipro demo

## up: the stack in the foreground (Ctrl-C stops it)
up: setup
	$(VENV)/bin/mipro up

## check: generated files fresh, Envoy config valid, lint clean
check: setup
	$(PY) -m gateway.codegen --check
	$(PY) -m gateway.config --check
	$(VENV)/bin/envoy --mode validate -c gateway/envoy.yaml
	$(VENV)/bin/ruff check .

## test: the checks, then every test (real processes: Envoy, gRPC servers, task app, model)
test: check
	$(PY) -m pytest -q

## bench: the search-efficiency benchmark (about 2 minutes on 2 cores; prints a table)
bench: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.search_efficiency

## protos: regenerate stubs, the descriptor set and the rendered Envoy configs
protos: setup
	$(PY) -m gateway.codegen
	$(PY) -m gateway.config

clean:
	rm -rf $(VENV) .mipro .pytest_cache
