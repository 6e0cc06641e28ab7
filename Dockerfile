# One image for every service of the stack; docker-compose.yml picks the command per service.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY mipro ./mipro
COPY orchestrator ./orchestrator
COPY proposer_service ./proposer_service
COPY gateway ./gateway
COPY examples ./examples
# The extra `local` (the model service) builds llama.cpp from source, which needs a compiler.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir ".[local]"
RUN useradd --create-home --uid 10001 mipro && mkdir -p /data && chown mipro /data
USER mipro
CMD ["python", "-m", "orchestrator"]
