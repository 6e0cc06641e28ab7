"""A scripted fake of an OpenAI-compatible model server, for tests only: it answers each chat
completion with the reply its script gives for the request, so a test can make a proposer
model send exactly the reply shapes real models send (JSON lists, questions back, echoes).

    python -m tests.fakes.scripted_model --port P --script FILE [--record FILE]

The script is JSON: `{"rules": [{"contains": TEXT, "reply": TEXT}, ...], "default": TEXT,
"refuse_response_format": false}`. The reply is that of the first rule whose `contains`
occurs in the request's last user message, else `default`. With `refuse_response_format`
a request that has a `response_format` gets the 400 some providers answer
(`param: response_format`). `--record FILE` appends one JSON line per request: `{"user",
"response_format", "seed", "status"}`. It reads nothing else of the request; its replies
say nothing about any model's quality.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.faults import JsonLines


def _last_user(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    return next((str(m.get("content") or "") for m in reversed(messages)
                 if isinstance(m, dict) and m.get("role") == "user"), "")


def reply_for(script: dict[str, Any], user: str) -> str:
    """The scripted reply to a request whose last user message is `user`."""
    for rule in script.get("rules", []):
        if rule["contains"] in user:
            return str(rule["reply"])
    return str(script.get("default", "Answer the request."))


def create_app(script: dict[str, Any], record: Path | None = None) -> Starlette:
    log = JsonLines(record)

    async def chat_completions(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        user = _last_user(body)
        entry = {"user": user, "response_format": body.get("response_format"),
                 "seed": body.get("seed")}
        if script.get("refuse_response_format") and body.get("response_format") is not None:
            log.write({**entry, "status": 400})
            return JSONResponse({"error": {
                "message": "response_format is not supported by this model",
                "type": "invalid_request_error", "param": "response_format", "code": None}},
                status_code=400)
        text = reply_for(script, user)
        log.write({**entry, "status": 200})
        return JSONResponse({
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0,
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": max(1, len(user) // 4),
                      "completion_tokens": max(1, len(text) // 4),
                      "total_tokens": max(1, len(user) // 4) + max(1, len(text) // 4)}})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "healthy": True})

    return Starlette(routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.scripted_model",
                                     description="A scripted fake OpenAI-compatible server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--script", type=Path, required=True)
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args(argv)
    script = json.loads(args.script.read_text(encoding="utf-8"))
    uvicorn.run(create_app(script, args.record), host=args.host, port=args.port,
                log_config=None, access_log=False, timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
