"""The JSON bodies the server sends: OpenAI's `chat.completion`, model list and errors."""

from __future__ import annotations

import time
from typing import Any

from ._model import Choice, Completion

#: The fingerprint every completion carries, so logs show it came from the simulation.
SYSTEM_FINGERPRINT = "fp_simulated"


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


def chat_completion(completion: Completion, *, created: int | None = None) -> dict[str, Any]:
    """`completion` in the exact shape of OpenAI's `chat.completion` object."""
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": completion.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
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
    """`GET /v1/models`: the one simulated model (any name is accepted in requests)."""
    return {"object": "list",
            "data": [{"id": model_id, "object": "model", "created": 0,
                      "owned_by": "mipro-simulated"}]}


def error(message: str, *, type: str = "invalid_request_error", param: str | None = None,
          code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
