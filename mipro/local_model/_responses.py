"""The JSON bodies the server sends: OpenAI's `chat.completion`, model list and errors."""

from __future__ import annotations

import time
from typing import Any

from ._model import Choice, Completion


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.content,
                               "refusal": None}
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in choice.tool_calls
        ]
    return message


def chat_completion(completion: Completion, *, fingerprint: str) -> dict[str, Any]:
    """`completion` in the exact shape of OpenAI's `chat.completion` object."""
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": completion.model,
        "system_fingerprint": fingerprint,
        "choices": [
            {"index": index, "message": _message(choice), "logprobs": None,
             "finish_reason": choice.finish_reason}
            for index, choice in enumerate(completion.choices)
        ],
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
    }


def model_list(model_id: str) -> dict[str, Any]:
    """`GET /v1/models`: the one loaded model (any name is accepted in requests)."""
    return {"object": "list",
            "data": [{"id": model_id, "object": "model", "created": 0,
                      "owned_by": "mipro-local"}]}


def error(message: str, *, type: str = "invalid_request_error", param: str | None = None,
          code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
