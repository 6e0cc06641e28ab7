"""A zero-latency task app on the task-app contract, for the performance benchmark.

    ENVIRONMENT_API_KEY=... python -m bench.fake_task_app --host 127.0.0.1 --port 8102 \\
        [--latency-ms 50]

Each `POST /rollout` makes exactly one OpenAI-style chat call, a system and a user message,
to `policy.config.inference_url` with `/chat/completions` inserted before the query string
(so the backend's interceptor hop is exercised), then answers with a deterministic reward in
`metrics.outcome_reward`: a hash of the seed and the model's reply, in [0, 1). With
`--latency-ms L` it sleeps L ms after the model call, before answering. When the model call
fails it answers 502, as real task apps do. `GET /health`, `GET /task_info` and `GET /`
answer as the contract says; a missing or wrong environment key is a 400 `unauthorised`.
Built on `bench._http` so that it costs as little CPU as possible per rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
from collections.abc import Awaitable

from ._http import HttpClient, Request, Response, json_response, run_forever

SERVICE = "bench-task-app"
BASELINE_INSTRUCTION = "You are a benchmark assistant. Reply with one short sentence."
_REWARD_SCALE = float(2**64)


def chat_url(inference_url: str) -> str:
    """`inference_url` with `/chat/completions` inserted before the query string."""
    base, question, query = inference_url.partition("?")
    return base.rstrip("/") + "/chat/completions" + (question + query)


def reward(seed: int, reply: str) -> float:
    """A deterministic reward in [0, 1) from the seed and the model's reply."""
    digest = hashlib.blake2b(f"{seed}\n{reply}".encode(), digest_size=8).digest()
    return round(int.from_bytes(digest, "big") / _REWARD_SCALE, 6)


def _presented_key(request: Request) -> str:
    key = request.headers.get("x-api-key", "")
    if not key:
        authorization = request.headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            key = authorization[7:].strip()
    return key


def _unauthorised() -> Response:
    return json_response(400, {"detail": {"error": {
        "code": "unauthorised", "message": "missing or wrong X-API-Key"}}})


class TaskApp:
    """The request handler; one model client shared by every rollout."""

    def __init__(self, environment_key: str, *, latency_seconds: float = 0.0,
                 model_timeout: float = 60.0) -> None:
        self._key = environment_key
        self._latency = latency_seconds
        self._client = HttpClient(timeout=model_timeout)

    def close(self) -> None:
        self._client.close()

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path
        if request.method == "GET" and path == "/":
            return json_response(200, {"status": "ok", "service": SERVICE})
        if not self._key:
            return json_response(503, {"detail": {"error": {
                "code": "missing_environment_api_key",
                "message": "ENVIRONMENT_API_KEY is not set"}}})
        if not hmac.compare_digest(_presented_key(request), self._key):
            return _unauthorised()
        if request.method == "POST" and path == "/rollout":
            return self._rollout(request)
        if request.method == "GET" and path == "/health":
            return json_response(200, {"healthy": True, "service": SERVICE})
        if request.method == "GET" and path == "/task_info":
            return json_response(200, {"taskset": {
                "name": SERVICE, "description": "a zero-latency task for the benchmark"}})
        return json_response(404, {"detail": f"no route {request.method} {path}"})

    async def _rollout(self, request: Request) -> Response:
        try:
            body = json.loads(request.body)
            seed = int(body["env"]["seed"])
            config = body["policy"]["config"]
            url = chat_url(str(config["inference_url"]))
        except (ValueError, KeyError, TypeError) as error:
            return json_response(422, {"detail": f"bad rollout request: {error!r}"})
        call = json.dumps({
            "model": config.get("model", ""),
            "messages": [{"role": "system", "content": BASELINE_INSTRUCTION},
                         {"role": "user", "content": f"Seed {seed}: say something."}],
            "temperature": 0.0,
            "max_tokens": 32,
        }, separators=(",", ":")).encode()
        try:
            status, _, answer = await self._client.post(url, call, {
                "content-type": "application/json", "x-api-key": self._key})
        except (OSError, TimeoutError, ValueError) as error:
            return json_response(502, {"detail": f"model call failed: {error!r}"})
        if status != 200:
            return json_response(502, {"detail": f"model answered {status}: "
                                                 f"{answer[:300].decode(errors='replace')}"})
        try:
            reply = json.loads(answer)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            return json_response(502, {"detail": "the model's answer has no message content"})
        if self._latency:
            await asyncio.sleep(self._latency)
        score = reward(seed, reply)
        return json_response(200, {
            "run_id": body.get("run_id", ""),
            "trajectories": [],
            "metrics": {"outcome_reward": score, "mean_return": score,
                        "num_steps": 1, "num_episodes": 1},
            "aborted": False,
            "ops_executed": 2,
        })


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="sleep this long after the model call, before answering")
    args = parser.parse_args(argv)
    if args.latency_ms < 0:
        parser.error(f"--latency-ms must be non-negative, got {args.latency_ms}")
    key = os.environ.get("ENVIRONMENT_API_KEY", "")
    run_forever(lambda: TaskApp(key, latency_seconds=args.latency_ms / 1000), args.host,
                args.port, name=SERVICE)


if __name__ == "__main__":
    main()
