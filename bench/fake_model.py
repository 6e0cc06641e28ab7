"""A zero-think OpenAI-compatible model for the performance benchmark.

    python -m bench.fake_model --host 127.0.0.1 --port 8090

`POST /v1/chat/completions` answers at once with a short sentence made from a hash of the
request body, with `usage`: the same request always gets the same answer and different
requests (another instruction, another seed, another proposal tip) get different ones. It
serves the policy calls that the interceptor forwards and the proposer service's calls alike:
a reply is a plausible short instruction, distinct per request, so proposals never collapse
as duplicates. It reads nothing else from the prompt. `GET /health` and `GET /v1/models`
answer too. Built on `bench._http` so that it costs as little CPU as possible per call.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

from ._http import Request, Response, json_response, run_forever

MODEL_ID = "bench-model"
_VERBS = ("Answer", "Reply", "Respond", "Write back", "Say")
_STYLES = ("briefly", "plainly", "precisely", "politely", "directly", "calmly", "clearly")


def reply_text(body: bytes) -> str:
    """The answer to a request body: short, deterministic, distinct per body."""
    digest = hashlib.blake2b(body, digest_size=12).hexdigest()
    verb = _VERBS[int(digest[0], 16) % len(_VERBS)]
    style = _STYLES[int(digest[1], 16) % len(_STYLES)]
    return (f"{verb} {style}, in the manner {digest[:8]}, weighing {digest[8:16]} "
            f"against {digest[16:24]}.")


def _chat(request: Request) -> Response:
    try:
        payload = json.loads(request.body)
    except ValueError:
        return json_response(400, {"error": {"message": "the body is not JSON",
                                             "type": "invalid_request_error"}})
    if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
        return json_response(400, {"error": {"message": "messages must be a list",
                                             "type": "invalid_request_error"}})
    text = reply_text(request.body)
    completion_tokens = len(text.split())
    return json_response(200, {
        "id": "chatcmpl-" + hashlib.blake2b(request.body, digest_size=8).hexdigest(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload.get("model") or MODEL_ID,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": len(request.body) // 4,
                  "completion_tokens": completion_tokens,
                  "total_tokens": len(request.body) // 4 + completion_tokens},
    })


def handle(request: Request) -> Response:
    """The whole server: three routes."""
    path = request.path
    if request.method == "POST" and path == "/v1/chat/completions":
        return _chat(request)
    if request.method == "GET" and path == "/health":
        return json_response(200, {"status": "ok"})
    if request.method == "GET" and path == "/v1/models":
        return json_response(200, {"object": "list", "data": [
            {"id": MODEL_ID, "object": "model", "owned_by": "bench"}]})
    return json_response(404, {"error": {"message": f"no route {request.method} {path}",
                                         "type": "not_found_error"}})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    run_forever(lambda: handle, args.host, args.port, name="fake-model")


if __name__ == "__main__":
    main()
