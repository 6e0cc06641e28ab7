"""A flaky task app: a proxy in front of a real task app that breaks `POST /rollout` on purpose.

    python -m tests.faults.flaky_task_app --host 127.0.0.1 --port P \\
        --upstream http://127.0.0.1:Q [--fail-rate 0.2] [--hang-rate 0.05] \\
        [--garbage-rate 0.05] [--seed 0] [--log PATH] [--fail-all-after N] \\
        [--fail-all-mode 503|drop] [--hang-seconds 3600] [--upstream-timeout 600] \\
        [--delay-seconds 0] [--task-info-delay-seconds 0]

Every request is forwarded to the upstream task app as sent (method, path, query, headers
with the auth ones, body), so `/`, `/health` and `/task_info` behave exactly like the real
app's. Only `POST /rollout` may get a fault instead, chosen by `decide_fault()` from a hash
of (seed, run_id, attempt), where `attempt` counts the `/rollout`s this process received for
that run_id, starting at 1. The faults are exclusive and the rates are their marginal
probabilities:

- `"500"`: a 500 with a JSON error body; the upstream never sees the rollout.
- `"hang"`: no answer until the client disconnects (or `--hang-seconds` pass, then 504);
  other requests are served meanwhile.
- `"garbage"`: a 200 whose body is not JSON (`<html>oops`), labelled `application/json`.

With `--fail-all-after N`, every rollout after the N-th one received fails (fault
`"fail_all"`): a 503 by default, or with `--fail-all-mode drop` the connection is closed
after the status line, before the body, so the client gets a transport error
(`httpx.RemoteProtocolError`) as from an app that died mid-answer.

`GET /_faults/stats` (answered here, no auth) returns the counts by fault kind.
`--log PATH` appends one JSON line per `/rollout` received:
`{"n", "run_id", "attempt", "seed", "fault", "status", "upstream_status", "reward",
"completed", "t_received", "t"}`, where `t`/`t_received` are `time.monotonic()` seconds
(system-wide on Linux) and `completed` is true when the rollout was forwarded and the
upstream answered 2xx with a reward. A forwarded rollout completes, and is logged, even when
its client has gone away meanwhile. A hang is logged when it starts (`status` null).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.faults import JsonLines, forward, upstream_response

Fault = Literal["500", "hang", "garbage"]
#: Every kind a `/rollout` may get instead of being forwarded, as logged and counted.
FAULT_KINDS: tuple[str, ...] = ("500", "hang", "garbage", "fail_all")
FailAllMode = Literal["503", "drop"]
GARBAGE_BODY = b"<html>oops"
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

log = structlog.get_logger("flaky-task-app")


# --------------------------------------------------------------------------- decision


@dataclass(frozen=True)
class FaultRates:
    """Marginal probability of each fault on one `/rollout`; they must sum to at most 1."""

    #: Answer 500. Default 0.2.
    fail: float = 0.2
    #: Hang until the client disconnects. Default 0.05.
    hang: float = 0.05
    #: Answer 200 with a body that is not JSON. Default 0.05.
    garbage: float = 0.05

    def __post_init__(self) -> None:
        for name in ("fail", "hang", "garbage"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} rate must be within [0, 1], got {value!r}")
        if self.fail + self.hang + self.garbage > 1.0 + 1e-9:
            raise ValueError("the fault rates must sum to at most 1")


def fault_draw(seed: int, run_id: str, attempt: int) -> float:
    """A number in [0, 1) fixed by (seed, run_id, attempt): SHA-256, first 8 bytes."""
    digest = hashlib.sha256(f"{seed}\x00{run_id}\x00{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def decide_fault(seed: int, run_id: str, attempt: int, rates: FaultRates) -> Fault | None:
    """The fault for attempt `attempt` (1-based) of rollout `run_id`, or None to forward.

    Pure and deterministic: tests call it to predict what the server will do.
    """
    u = fault_draw(seed, run_id, attempt)
    if u < rates.fail:
        return "500"
    if u < rates.fail + rates.hang:
        return "hang"
    if u < rates.fail + rates.hang + rates.garbage:
        return "garbage"
    return None


def rollout_reward(body: Any) -> float | None:
    """The reward of a rollout response, in the contract's order, or None if it has none.

    `metrics.outcome_reward`, `metrics.mean_return`, `metrics.outcome_score`,
    `reward_info.outcome_reward`, then the mean of `metrics.episode_returns` or
    `metrics.episode_rewards`.
    """
    if not isinstance(body, dict):
        return None
    metrics = body.get("metrics") if isinstance(body.get("metrics"), dict) else {}
    reward_info = body.get("reward_info") if isinstance(body.get("reward_info"), dict) else {}
    for value in (metrics.get("outcome_reward"), metrics.get("mean_return"),
                  metrics.get("outcome_score"), reward_info.get("outcome_reward")):
        if _is_number(value):
            return float(value)
    for key in ("episode_returns", "episode_rewards"):
        values = metrics.get(key)
        if isinstance(values, list) and values and all(_is_number(v) for v in values):
            return sum(float(v) for v in values) / len(values)
    return None


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _identify(body: bytes) -> tuple[str | None, Any]:
    """The run_id (or trace_correlation_id) and env.seed of a rollout request, if readable."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    run_id = parsed.get("run_id") or parsed.get("trace_correlation_id")
    env = parsed.get("env") if isinstance(parsed.get("env"), dict) else {}
    return (run_id if isinstance(run_id, str) else None), env.get("seed")


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Config:
    """How one flaky task app behaves."""

    upstream: str
    rates: FaultRates = field(default_factory=FaultRates)
    seed: int = 0
    #: Every rollout after this many received fails; None: never.
    fail_all_after: int | None = None
    fail_all_mode: FailAllMode = "503"
    #: How long a hang lasts if the client never disconnects; then a 504.
    hang_seconds: float = 3600.0
    upstream_timeout: float = 600.0
    log: Path | None = None
    #: Seconds every forwarded rollout waits first (a slower task app; 0: none).
    delay_seconds: float = 0.0
    #: Seconds `GET /task_info` waits before it is forwarded (a slow preflight; 0: none).
    task_info_delay_seconds: float = 0.0


@dataclass
class State:
    """Counters of one process; touched only from the event loop, so no locks."""

    received: int = 0
    forwarded: int = 0
    completed: int = 0
    upstream_errors: int = 0
    hanging_now: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    attempts: dict[str, int] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "forwarded": self.forwarded,
            "completed": self.completed,
            "upstream_errors": self.upstream_errors,
            "faults": dict(self.faults),
            "hanging_now": self.hanging_now,
            "run_ids": len(self.attempts),
        }


# --------------------------------------------------------------------------- responses


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"error": {"code": code, "message": message}}}, status)


class HangResponse(Response):
    """Sends nothing until the client disconnects; after `seconds`, a 504.

    It waits on the ASGI `receive` channel, which yields `http.disconnect` when the client
    goes away (the body was read already), so it holds no thread and blocks nothing.
    """

    def __init__(self, state: State, seconds: float) -> None:
        super().__init__(
            json.dumps({"detail": {"error": {"code": "injected_hang_expired",
                                              "message": "injected hang ran out"}}}),
            status_code=504, media_type="application/json")
        self._state = state
        self._seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        self._state.hanging_now += 1
        try:
            await asyncio.wait_for(disconnected(), timeout=self._seconds)
        except TimeoutError:
            await super().__call__(scope, receive, send)
        finally:
            self._state.hanging_now -= 1


class DropResponse(Response):
    """Announces a 200 with a body, then returns without sending it: uvicorn closes the
    connection (logging "ASGI callable returned without completing response") and the
    client gets a transport error."""

    def __init__(self) -> None:
        super().__init__(b"", status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"4096")]})


# --------------------------------------------------------------------------- handlers


async def rollout(request: Request) -> Response:
    """`POST /rollout`: a fault, or the upstream's answer."""
    config: Config = request.app.state.config
    state: State = request.app.state.faults
    journal: JsonLines = request.app.state.journal
    t_received = time.monotonic()
    body = await request.body()
    run_id, seed = _identify(body)

    # Numbering happens before any await, so concurrent rollouts get distinct numbers.
    state.received += 1
    number = state.received
    attempt: int | None = None
    if run_id is not None:
        attempt = state.attempts.get(run_id, 0) + 1
        state.attempts[run_id] = attempt
    fault: str | None = None
    if config.fail_all_after is not None and number > config.fail_all_after:
        fault = "fail_all"
    elif run_id is not None and attempt is not None:
        fault = decide_fault(config.seed, run_id, attempt, config.rates)
    if fault is not None:
        state.faults[fault] += 1

    entry: dict[str, Any] = {
        "n": number, "run_id": run_id, "attempt": attempt, "seed": seed, "fault": fault,
        "status": None, "upstream_status": None, "reward": None, "completed": False,
        "t_received": t_received,
    }
    bound = log.bind(n=number, run_id=run_id, attempt=attempt, fault=fault)

    def finish(response: Response, status: int | None) -> Response:
        journal.write({**entry, "status": status, "t": time.monotonic()})
        bound.info("flaky.rollout", status=status)
        return response

    if fault == "500":
        return finish(_error(500, "injected_fault", "injected 500 from the flaky task app"),
                      500)
    if fault == "garbage":
        return finish(Response(GARBAGE_BODY, 200, media_type="application/json"), 200)
    if fault == "hang":
        return finish(HangResponse(state, config.hang_seconds), None)
    if fault == "fail_all":
        if config.fail_all_mode == "drop":
            return finish(DropResponse(), None)
        return finish(_error(503, "service_unavailable", "the task app is down (injected)"),
                      503)

    state.forwarded += 1
    if config.delay_seconds:
        await asyncio.sleep(config.delay_seconds)
    try:
        resp = await forward(request.app.state.http, config.upstream, request, body)
    except httpx.HTTPError as exc:
        state.upstream_errors += 1
        bound.warning("flaky.upstream_error", error=repr(exc))
        return finish(_error(502, "upstream_unreachable", f"upstream task app: {exc!r}"), 502)
    reward: float | None = None
    if resp.is_success:
        with contextlib.suppress(ValueError):
            reward = rollout_reward(resp.json())
    completed = reward is not None
    state.completed += completed
    entry.update(upstream_status=resp.status_code, reward=reward, completed=completed)
    return finish(upstream_response(resp), resp.status_code)


async def passthrough(request: Request) -> Response:
    """Any other request: forwarded unchanged."""
    config: Config = request.app.state.config
    body = await request.body()
    if config.task_info_delay_seconds and request.url.path == "/task_info":
        await asyncio.sleep(config.task_info_delay_seconds)
    try:
        resp = await forward(request.app.state.http, config.upstream, request, body)
    except httpx.HTTPError as exc:
        return _error(502, "upstream_unreachable", f"upstream task app: {exc!r}")
    return upstream_response(resp)


async def stats(request: Request) -> JSONResponse:
    """`GET /_faults/stats`: counts by fault kind; also the readiness probe."""
    state: State = request.app.state.faults
    return JSONResponse(state.stats())


def create_app(config: Config) -> Starlette:
    """The flaky task app's ASGI app, with one shared `httpx.AsyncClient`."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(config.upstream_timeout, connect=5.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            trust_env=False,
        ) as client:
            app.state.http = client
            log.info("flaky.started", upstream=config.upstream, seed=config.seed,
                     fail=config.rates.fail, hang=config.rates.hang,
                     garbage=config.rates.garbage, fail_all_after=config.fail_all_after)
            yield

    app = Starlette(
        routes=[
            Route("/_faults/stats", stats, methods=["GET"]),
            Route("/rollout", rollout, methods=["POST"]),
            Route("/{path:path}", passthrough, methods=_ALL_METHODS),
        ],
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.faults = State()
    app.state.journal = JsonLines(config.log)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults.flaky_task_app",
        description="A proxy in front of a task app that makes POST /rollout fail, hang or "
                    "answer garbage, deterministically.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the real task app's base URL")
    parser.add_argument("--fail-rate", type=float, default=0.2, help="500s (default 0.2)")
    parser.add_argument("--hang-rate", type=float, default=0.05, help="hangs (default 0.05)")
    parser.add_argument("--garbage-rate", type=float, default=0.05,
                        help="non-JSON 200s (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="fault pattern seed (default 0)")
    parser.add_argument("--log", type=Path, default=None,
                        help="append one JSON line per /rollout here")
    parser.add_argument("--fail-all-after", type=int, default=None, metavar="N",
                        help="every rollout after the N-th received fails")
    parser.add_argument("--fail-all-mode", choices=["503", "drop"], default="503",
                        help="how they fail: 503, or drop the connection (default 503)")
    parser.add_argument("--hang-seconds", type=float, default=3600.0,
                        help="a hang ends with a 504 after this long (default 3600)")
    parser.add_argument("--delay-seconds", type=float, default=0.0,
                        help="seconds each forwarded rollout waits first (default 0)")
    parser.add_argument("--task-info-delay-seconds", type=float, default=0.0,
                        help="seconds GET /task_info waits before it is forwarded (default 0)")
    parser.add_argument("--upstream-timeout", type=float, default=600.0,
                        help="seconds to wait for the upstream (default 600)")
    args = parser.parse_args(argv)
    try:
        rates = FaultRates(fail=args.fail_rate, hang=args.hang_rate, garbage=args.garbage_rate)
    except ValueError as exc:
        parser.error(str(exc))
    if args.fail_all_after is not None and args.fail_all_after < 0:
        parser.error("--fail-all-after must be at least 0")
    config = Config(upstream=args.upstream.rstrip("/"), rates=rates, seed=args.seed,
                    fail_all_after=args.fail_all_after, fail_all_mode=args.fail_all_mode,
                    hang_seconds=args.hang_seconds, upstream_timeout=args.upstream_timeout,
                    log=args.log, delay_seconds=args.delay_seconds,
                    task_info_delay_seconds=args.task_info_delay_seconds)

    from mipro._logging import configure_logging

    configure_logging("flaky-task-app", level=os.environ.get("MIPRO_LOG_LEVEL", "info"),
                      fmt=os.environ.get("MIPRO_LOG_FORMAT", "auto"))
    # Hung requests would hold a graceful shutdown for an hour: cut it short.
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_config=None,
                access_log=False, timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
