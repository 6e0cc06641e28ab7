"""A rate-limited model: a proxy in front of an OpenAI-compatible server that answers 429 in
deterministic bursts.

    python -m tests.faults.rate_limited_model --host 127.0.0.1 --port P \\
        --upstream http://127.0.0.1:Q [--burst-every 10] [--burst-length 3] \\
        [--retry-after 0.5] [--log PATH] [--upstream-timeout 120]

Every request is forwarded to the upstream as sent. Requests are numbered in the order they
arrive, `k = 0, 1, 2, ...`, counting every path except `/health` and `/_faults/stats`
(so readiness probes never shift the pattern); request `k` with
`k % burst_every < burst_length` is not forwarded but answered

    429, Retry-After: <retry_after>, retry-after-ms: <retry_after in ms>
    {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded",
               "param": null, "code": "rate_limit_exceeded"}}

`Retry-After` is written as `f"{retry_after:g}"` (`0.5`, `2`). With the defaults, requests
0-2, 10-12, 20-22, ... are refused. `--burst-length 0` never refuses.

`GET /_faults/stats` (answered here) returns the counts. `--log PATH` appends one JSON line
per counted request: `{"n", "status", "t", "method", "path", "body_sha", "request_id",
"retry_after"}`, with `t` in `time.monotonic()` seconds (system-wide on Linux), `body_sha`
the SHA-256 hex of the request body (so a retry of the same request can be paired with its
429) and `request_id` the `X-Request-ID` header, if any. The line is written when the
request is answered; `t` is when it arrived.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.faults import JsonLines, forward, upstream_response

_UNCOUNTED = frozenset({"/health", "/_faults/stats"})
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

log = structlog.get_logger("rate-limited-model")


@dataclass(frozen=True)
class Config:
    """How one rate-limited model behaves."""

    upstream: str
    #: Bursts start every this many counted requests. Default 10.
    burst_every: int = 10
    #: Each burst refuses this many requests in a row. Default 3.
    burst_length: int = 3
    #: Seconds sent in `Retry-After`. Default 0.5.
    retry_after: float = 0.5
    upstream_timeout: float = 120.0
    log: Path | None = None

    def __post_init__(self) -> None:
        if self.burst_every < 1:
            raise ValueError(f"burst_every must be at least 1, got {self.burst_every}")
        if self.burst_length < 0:
            raise ValueError(f"burst_length must be at least 0, got {self.burst_length}")
        if self.retry_after < 0:
            raise ValueError(f"retry_after must be at least 0, got {self.retry_after}")


def is_rate_limited(k: int, burst_every: int, burst_length: int) -> bool:
    """Whether counted request `k` (0-based) gets a 429."""
    return k % burst_every < burst_length


def retry_after_headers(seconds: float) -> dict[str, str]:
    """`Retry-After` in seconds as given, and OpenAI's `retry-after-ms`."""
    return {"Retry-After": f"{seconds:g}", "retry-after-ms": str(round(seconds * 1000))}


def rate_limit_body() -> dict[str, Any]:
    """OpenAI's 429 error body."""
    return {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded",
                      "param": None, "code": "rate_limit_exceeded"}}


@dataclass
class State:
    """Counters of one process; touched only from the event loop, so no locks."""

    counted: int = 0
    rate_limited: int = 0
    forwarded: int = 0
    upstream_errors: int = 0

    def stats(self) -> dict[str, int]:
        return {"requests": self.counted, "rate_limited": self.rate_limited,
                "forwarded": self.forwarded, "upstream_errors": self.upstream_errors}


async def handle(request: Request) -> Response:
    """Every path but `/_faults/stats`: a 429 in a burst, else the upstream's answer."""
    config: Config = request.app.state.config
    if request.url.path in _UNCOUNTED:
        return await _forward(request, await request.body())

    state: State = request.app.state.limits
    t = time.monotonic()
    # Numbered before any await, so concurrent requests get distinct numbers in arrival order.
    k = state.counted
    state.counted += 1
    body = await request.body()
    entry: dict[str, Any] = {
        "n": k, "t": t, "method": request.method, "path": request.url.path,
        "body_sha": hashlib.sha256(body).hexdigest(),
        "request_id": request.headers.get("x-request-id"), "retry_after": None,
    }
    if is_rate_limited(k, config.burst_every, config.burst_length):
        state.rate_limited += 1
        response: Response = JSONResponse(rate_limit_body(), 429,
                                          headers=retry_after_headers(config.retry_after))
        entry["retry_after"] = config.retry_after
    else:
        state.forwarded += 1
        response = await _forward(request, body)
    request.app.state.journal.write({**entry, "status": response.status_code})
    log.info("rate_limited.request", n=k, status=response.status_code, path=entry["path"])
    return response


async def _forward(request: Request, body: bytes) -> Response:
    config: Config = request.app.state.config
    try:
        resp = await forward(request.app.state.http, config.upstream, request, body)
    except httpx.HTTPError as exc:
        request.app.state.limits.upstream_errors += 1
        return JSONResponse({"error": {"message": f"upstream model unreachable: {exc!r}",
                                       "type": "upstream_error", "param": None,
                                       "code": None}}, 502)
    return upstream_response(resp)


async def stats(request: Request) -> JSONResponse:
    """`GET /_faults/stats`: the counts; also the readiness probe."""
    state: State = request.app.state.limits
    return JSONResponse(state.stats())


def create_app(config: Config) -> Starlette:
    """The rate-limited model's ASGI app, with one shared `httpx.AsyncClient`."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(config.upstream_timeout, connect=5.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            trust_env=False,
        ) as client:
            app.state.http = client
            log.info("rate_limited.started", upstream=config.upstream,
                     burst_every=config.burst_every, burst_length=config.burst_length,
                     retry_after=config.retry_after)
            yield

    app = Starlette(
        routes=[
            Route("/_faults/stats", stats, methods=["GET"]),
            Route("/{path:path}", handle, methods=_ALL_METHODS),
        ],
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.limits = State()
    app.state.journal = JsonLines(config.log)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults.rate_limited_model",
        description="A proxy in front of an OpenAI-compatible server that answers 429 with "
                    "Retry-After in deterministic bursts.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True,
                        help="the model server's base URL, without /v1")
    parser.add_argument("--burst-every", type=int, default=10,
                        help="a burst starts every this many requests (default 10)")
    parser.add_argument("--burst-length", type=int, default=3,
                        help="requests refused per burst (default 3)")
    parser.add_argument("--retry-after", type=float, default=0.5,
                        help="seconds sent in Retry-After (default 0.5)")
    parser.add_argument("--log", type=Path, default=None,
                        help="append one JSON line per counted request here")
    parser.add_argument("--upstream-timeout", type=float, default=120.0,
                        help="seconds to wait for the upstream (default 120)")
    args = parser.parse_args(argv)
    try:
        config = Config(upstream=args.upstream.rstrip("/"), burst_every=args.burst_every,
                        burst_length=args.burst_length, retry_after=args.retry_after,
                        upstream_timeout=args.upstream_timeout, log=args.log)
    except ValueError as exc:
        parser.error(str(exc))

    from mipro._logging import configure_logging

    configure_logging("rate-limited-model", level=os.environ.get("MIPRO_LOG_LEVEL", "info"),
                      fmt=os.environ.get("MIPRO_LOG_FORMAT", "auto"))
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_config=None,
                access_log=False, timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
