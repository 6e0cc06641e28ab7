"""A deterministic fake of an OpenAI-compatible model server, for tests only.

    python -m tests.fakes.fake_model --host 127.0.0.1 --port P [--record FILE]

It is a wiring fake, not a model: every answer is picked by a SHA-256 of the request body,
so the same request always gets the same answer, and no part of the request is read for
its meaning. Scores measured against it are noise; they say nothing about the optimizer.

- `POST /v1/chat/completions` (also `/chat/completions`), with `usage`:
  - with `tools` (and `tool_choice` other than "none"): one call of the function
    `tool_choice` names, else of the first tool. Each argument of its `parameters` (the
    `required` ones, else all) is chosen by the hash: an enum argument is one of its enum
    values, a string argument the text `value-<hex>`, a number or boolean some value;
  - without tools: one sentence of `SENTENCES`, chosen by the hash, followed by a tag made
    from the hash, so different requests get different texts.
- `GET /v1/models` (also `/models`): the one model id, `fake`; any name is accepted.
- `GET /health`: `{"status": "ok", "healthy": true}`.

A body that is not a JSON object with a non-empty `model` and a non-empty list of
`messages`, or that asks to stream, gets a 400 in OpenAI's error shape.

`--record FILE` appends one JSON line per completion: `{"model", "system", "user",
"has_tools", "answer", "prompt_tokens", "completion_tokens", "request_fields",
"max_tokens", "max_completion_tokens", "n", "body_bytes"}`, the system (or developer)
messages joined (null when there are none), the last user message, what was answered (the
tool call's arguments, or the text), and what the request asked for: its field names, token
caps, `n` and size; then `roles`, every message's role in order, and `user_turns`, the text
of every user message (so demos inserted before the real one can be checked).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.faults import JsonLines

MODEL_ID = "fake"

#: The texts answered without tools: plain instruction-like sentences, each under a dozen
#: words, none written for a particular task.
SENTENCES = (
    "Read the input carefully and give the single best answer.",
    "Answer the request directly and keep the reply short.",
    "Decide what the user needs, then answer in one step.",
    "Follow the task description and pick exactly one option.",
    "Reply with the answer only, without any explanation.",
    "Consider every option before you decide, then answer.",
    "Be precise and consistent in every answer you give.",
    "Choose the answer that fits the message best.",
)


class BadRequest(ValueError):
    """A body the fake refuses; `param` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def error_body(message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": None}}


def digest(*parts: Any) -> str:
    """The SHA-256 hex of the canonical JSON of `parts`."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def tokens(text: str) -> int:
    """A token count that grows with the text: one per 4 characters, at least one."""
    return max(1, math.ceil(len(text) / 4))


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def validate(body: Any) -> dict[str, Any]:
    """`body` if it is a chat completion request the fake can answer; raises `BadRequest`."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise BadRequest("You must provide a model parameter.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise BadRequest("'messages' must be a non-empty array of objects with a 'role'.",
                         "messages")
    if body.get("stream"):
        raise BadRequest("The fake model does not stream; send 'stream': false.", "stream")
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise BadRequest("'tools' must be an array.", "tools")
    return body


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function to call, or None when the answer is text."""
    functions = [t["function"] for t in body.get("tools") or []
                 if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice")
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        named = [f for f in functions if f.get("name") == name]
        if not named:
            raise BadRequest(f"'tool_choice' names {name!r}, which is not in 'tools'.",
                             "tool_choice")
        return named[0]
    return functions[0]


def _argument(schema: Any, key: str) -> Any:
    schema = schema if isinstance(schema, dict) else {}
    number = int(key[:12], 16)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][number % len(schema["enum"])]
    kind = schema.get("type", "string")
    kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
    return {"string": f"value-{key[:8]}", "integer": number % 100,
            "number": (number % 1000) / 10, "boolean": number % 2 == 0,
            "array": [], "object": {}}.get(kind)


def arguments(function: dict[str, Any], key: str) -> dict[str, Any]:
    """The call's arguments: each parameter chosen by the hash `key` and its name."""
    parameters = function.get("parameters") if isinstance(function.get("parameters"), dict) \
        else {}
    properties = parameters.get("properties") if isinstance(parameters.get("properties"),
                                                            dict) else {}
    required = parameters.get("required")
    names = [n for n in required if n in properties] if isinstance(required, list) \
        else list(properties)
    return {name: _argument(properties[name], digest(key, name)) for name in names}


def complete(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The `chat.completion` object for a validated `body`, and what it answered."""
    key = digest(body)
    function = _chosen_tool(body)
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if function is None:
        answer = f"{SENTENCES[int(key[:8], 16) % len(SENTENCES)]} (variant {key[8:14]})"
        message["content"] = answer
        finish = "stop"
    else:
        answer = json.dumps(arguments(function, key))
        message["tool_calls"] = [{"id": f"call_{key[:24]}", "type": "function",
                                  "function": {"name": function.get("name", ""),
                                               "arguments": answer}}]
        finish = "tool_calls"
    prompt = tokens(json.dumps([body["messages"], body.get("tools")]))
    completion = tokens(answer)
    return {
        "id": f"chatcmpl-fake-{key[:24]}", "object": "chat.completion", "created": 0,
        "model": body["model"], "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }, answer


def record_entry(body: dict[str, Any], completion: dict[str, Any],
                 answer: str) -> dict[str, Any]:
    """The `--record` line of one answered request."""
    messages = body["messages"]
    system = [_text(m.get("content")) for m in messages if m["role"] in ("system", "developer")]
    user = next((_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
    return {"model": body["model"], "system": "\n\n".join(system) if system else None,
            "user": user, "has_tools": bool(body.get("tools")), "answer": answer,
            "prompt_tokens": completion["usage"]["prompt_tokens"],
            "completion_tokens": completion["usage"]["completion_tokens"],
            "request_fields": sorted(body), "max_tokens": body.get("max_tokens"),
            "max_completion_tokens": body.get("max_completion_tokens"), "n": body.get("n"),
            "body_bytes": len(json.dumps(body)), "roles": [m["role"] for m in messages],
            "user_turns": [_text(m.get("content")) for m in messages if m["role"] == "user"]}


async def chat_completions(request: Request) -> JSONResponse:
    try:
        decoded = json.loads(await request.body())
    except ValueError:
        return JSONResponse(error_body("The body is not valid JSON."), status_code=400)
    try:
        body = validate(decoded)
        completion, answer = complete(body)
    except BadRequest as exc:
        return JSONResponse(error_body(str(exc), exc.param), status_code=400)
    request.app.state.record.write(record_entry(body, completion, answer))
    return JSONResponse(completion)


async def models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [
        {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "tests"}]})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "healthy": True, "model": MODEL_ID})


def create_app(record: Path | None = None) -> Starlette:
    """The fake's ASGI app; `record` appends one JSON line per completion."""
    app = Starlette(routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ])
    app.state.record = JsonLines(record)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.fake_model",
        description="A deterministic fake OpenAI-compatible server for tests (not a model).")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, default=None,
                        help="append one JSON line per chat completion to this file")
    args = parser.parse_args(argv)
    from mipro._logging import configure_logging

    configure_logging("fake-model", level=os.environ.get("MIPRO_LOG_LEVEL", "info"),
                      fmt=os.environ.get("MIPRO_LOG_FORMAT", "auto"))
    uvicorn.run(create_app(args.record), host=args.host, port=args.port, log_config=None,
                access_log=False, timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
