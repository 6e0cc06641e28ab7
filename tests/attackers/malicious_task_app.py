"""A task app that attacks the interceptor with the inference URL it is given, for tests only.

    python -m tests.attackers.malicious_task_app --host 127.0.0.1 --port P --record FILE

It answers `/health` and `/task_info` like a task app and scores every rollout 1.0, but a
rollout's model calls are attacks, chosen by `env.config.attack`:

- `abuse` (on the first rollout of the job only): every abuse of the interceptor in `ABUSES`
  -- forged, tampered and guessed tokens, no key, `n=8`, `stream`, NaN, a 12 MB body, token
  caps of 100000 and fields like `service_tier` and `store` -- one call each;
- `flood`: model calls until one is refused (at most 40), to find the per-rollout bound;
- `budget`: model calls until one is refused (at most 10), to find the job's budget;
- on every rollout, first the inference URL of the rollout before it (finished by then), and
  half a second after answering, its own URL again (finished too): replays.

Each call's user message is `attack:<name>`, so the fake model's record shows which attacks
reached the provider. `--record FILE` appends one JSON line per call:
`{"attack", "rollout", "status", "dropped", "error"}` (`dropped`: the
`X-Mipro-Dropped-Fields` header).

With `--expected-key K` it also checks the caller's `X-API-Key` and, when it is not `K`,
answers 400 exactly like the synth-ai 0.2.24 Banking77 task app does, quoting the first 15
characters of both keys (`allowed_first15`, `got_first15`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import threading
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOOL = {"type": "function", "function": {
    "name": "classify_intent", "description": "Pick the intent.",
    "parameters": {"type": "object", "properties": {"intent": {"type": "string"}},
                   "required": ["intent"]}}}
HUGE_BODY_BYTES = 12 * 1024 * 1024
#: The rollout whose request is being served (copied into its background replay).
_ROLLOUT: ContextVar[str] = ContextVar("rollout", default="")


def chat_url(inference_url: str, token: str | None = None) -> str:
    """`/chat/completions` inserted before the query; `token` replaces the URL's token."""
    parts = urlsplit(inference_url)
    path = parts.path.rstrip("/")
    if token is not None:
        path = path.rsplit("/", 1)[0] + "/" + token
    return urlunsplit((parts.scheme, parts.netloc, path + "/chat/completions", parts.query, ""))


def body(attack: str, **extra: Any) -> dict[str, Any]:
    return {"model": "anything", "messages": [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": f"attack:{attack}"}],
        "tools": [TOOL], "tool_choice": "required", **extra}


def _tampered(token: str) -> str:
    """The token with its claims naming another rollout, the signature kept."""
    version, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["r"] = claims["r"] + "x"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{version}.{forged}.{signature}"


def _flipped(token: str) -> str:
    """The token with the last character of its signature changed."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


#: name -> (URL maker, body or raw bytes, headers maker) of each one-shot abuse.
Abuse = tuple[Callable[[str, str], str], bytes | dict[str, Any], bool]
ABUSES: dict[str, Abuse] = {
    "forged_signature": (lambda url, tok: chat_url(url, _flipped(tok)), body("x"), True),
    "tampered_claims": (lambda url, tok: chat_url(url, _tampered(tok)), body("x"), True),
    "guessed_token": (lambda url, tok: chat_url(url, "t_guessed123"), body("x"), True),
    "no_token": (lambda url, tok: url.split("/v1/")[0] + "/v1/chat/completions", body("x"),
                 True),
    "no_key": (lambda url, tok: chat_url(url), body("x"), False),
    "n8": (lambda url, tok: chat_url(url), body("n8", n=8), True),
    "stream": (lambda url, tok: chat_url(url), body("stream", stream=True), True),
    "nan": (lambda url, tok: chat_url(url),
            json.dumps(body("nan", temperature=float("nan"))).encode(), True),
    "huge_body": (lambda url, tok: chat_url(url),
                  json.dumps(body("huge_body", padding="x" * HUGE_BODY_BYTES)).encode(), True),
    "max_tokens": (lambda url, tok: chat_url(url), body("max_tokens", max_tokens=100000), True),
    "max_completion_tokens": (lambda url, tok: chat_url(url),
                              body("max_completion_tokens", max_completion_tokens=100000), True),
    "extra_fields": (lambda url, tok: chat_url(url), body(
        "extra_fields", service_tier="priority", store=True, metadata={"a": "b"},
        stream_options={"include_usage": True}, logprobs=True, top_logprobs=20), True),
}


class Recorder:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        if self._path is None:
            return
        with self._lock, self._path.open("a") as out:
            out.write(json.dumps(entry) + "\n")


def banking77_rejection(request: Request) -> JSONResponse | None:
    """The Banking77 app's 400 for a wrong key, or None when the key is right (or unchecked)."""
    expected: str | None = request.app.state.expected_key
    got = request.headers.get("x-api-key", "")
    if expected is None or got == expected:
        return None
    return JSONResponse({"detail": {"error": {
        "code": "unauthorised", "message": "API key missing or invalid",
        "allowed_first15": [expected[:15]], "allowed_count": 1,
        "got_first15": [got[:15]], "got_lens": [len(got)]}}}, status_code=400)


async def _call(app: Starlette, attack: str, url: str, payload: bytes | dict[str, Any],
                key: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    client: httpx.AsyncClient = app.state.client
    try:
        response = await client.post(url, content=content, headers=headers)
    except httpx.HTTPError as exc:
        app.state.record.write({"attack": attack, "rollout": _ROLLOUT.get(), "status": 0,
                                "dropped": "", "error": type(exc).__name__})
        return 0
    app.state.record.write({"attack": attack, "rollout": _ROLLOUT.get(),
                            "status": response.status_code,
                            "dropped": response.headers.get("x-mipro-dropped-fields", ""),
                            "error": response.text[:300] if response.status_code >= 300
                            else ""})
    return response.status_code


async def _until_refused(app: Starlette, attack: str, url: str, key: str, limit: int) -> None:
    for _ in range(limit):
        if await _call(app, attack, chat_url(url), body(attack), key) != 200:
            return


async def _replay_later(app: Starlette, url: str, key: str) -> None:
    await asyncio.sleep(0.5)
    await _call(app, "replay_after_end", chat_url(url), body("replay_after_end"), key)


async def rollout(request: Request) -> JSONResponse:
    app = request.app
    if (rejection := banking77_rejection(request)) is not None:
        return rejection
    payload = await request.json()
    _ROLLOUT.set(str(payload.get("run_id", "")))
    key = request.headers.get("x-api-key", "")
    url: str = payload["policy"]["config"]["inference_url"]
    token = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    attack = (payload.get("env", {}).get("config") or {}).get("attack", "")
    previous, app.state.previous_url = app.state.previous_url, url
    if previous is not None:
        await _call(app, "replay_previous", chat_url(previous), body("replay_previous"), key)
    if attack == "abuse" and not app.state.abused:
        app.state.abused = True
        for name, (make_url, attack_body, with_key) in ABUSES.items():
            await _call(app, name, make_url(url, token), attack_body, key if with_key else None)
    elif attack == "flood":
        await _until_refused(app, "flood", url, key, 40)
    elif attack == "budget":
        await _until_refused(app, "budget", url, key, 10)
    else:
        await _call(app, "legit", chat_url(url), body("legit"), key)
    task = asyncio.create_task(_replay_later(app, url, key))
    app.state.background.add(task)
    task.add_done_callback(app.state.background.discard)
    return JSONResponse({"run_id": payload.get("run_id"), "metrics": {"outcome_reward": 1.0}})


async def health(request: Request) -> JSONResponse:
    return banking77_rejection(request) or JSONResponse({"healthy": True})


async def task_info(request: Request) -> JSONResponse:
    return JSONResponse({"task": {"id": "attacker", "name": "attacker"}})


def create_app(record: Path | None, expected_key: str | None = None) -> Starlette:
    app = Starlette(routes=[Route("/", lambda request: JSONResponse({"service": "attacker"})),
                            Route("/health", health), Route("/task_info", task_info),
                            Route("/rollout", rollout, methods=["POST"])])
    app.state.record = Recorder(record)
    app.state.client = httpx.AsyncClient(timeout=60.0)
    app.state.previous_url = None
    app.state.abused = False
    app.state.background = set()
    app.state.expected_key = expected_key
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, default=None)
    parser.add_argument("--expected-key", default=None)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.record, args.expected_key), host=args.host, port=args.port,
                log_config=None, access_log=False)


if __name__ == "__main__":
    main()
