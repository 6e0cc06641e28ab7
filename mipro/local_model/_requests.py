"""Validating a chat completion request body for the local model.

The checks common to every OpenAI-compatible server here (model, messages, tools,
`tool_choice`, sampling ranges) are the simulated model's (`parse_chat_request`); this adds
what only a real model needs: `response_format`, `stop`, `top_p`, and the raw tool calls of
earlier assistant messages, so the model sees the whole conversation. Streaming is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from mipro.simulated_model import ChatRequest, InvalidRequestError, parse_chat_request

#: Stop sequences one request may give at most (OpenAI's limit).
MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True)
class ResponseFormat:
    """`response_format`: "text", "json_object", or "json_schema" with its `schema`."""

    type: str
    schema: dict[str, Any] | None = None
    name: str = ""


@dataclass(frozen=True)
class LocalRequest:
    """A validated request: the common part plus what the local model also honours."""

    chat: ChatRequest
    #: The chat messages as the model's chat template takes them: role and text content.
    messages: tuple[dict[str, str], ...]
    response_format: ResponseFormat
    stop: tuple[str, ...] = ()
    top_p: float | None = None
    #: The functions' descriptions by name, for the prompt.
    tool_descriptions: dict[str, str] = field(default_factory=dict)


def _response_format(value: Any) -> ResponseFormat:
    if value is None:
        return ResponseFormat("text")
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object",
                                                                "json_schema"):
        raise InvalidRequestError("Invalid value for 'response_format.type': expected 'text', "
                                  "'json_object' or 'json_schema'.", "response_format.type")
    if value["type"] != "json_schema":
        return ResponseFormat(value["type"])
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InvalidRequestError("Missing required parameter: 'response_format.json_schema"
                                  ".name'.", "response_format.json_schema.name")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise InvalidRequestError("Invalid type for 'response_format.json_schema.schema': "
                                  "expected an object.", "response_format.json_schema.schema")
    return ResponseFormat("json_schema", schema, spec["name"])


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) \
            or len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(f"Invalid 'stop': expected a non-empty string or an array of "
                                  f"at most {MAX_STOP_SEQUENCES} of them.", "stop")
    return tuple(stops)


def _top_p(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 <= value <= 1:
        raise InvalidRequestError("Invalid 'top_p': expected a number between 0 and 1.",
                                  "top_p")
    return float(value)


def _template_messages(chat: ChatRequest) -> tuple[dict[str, str], ...]:
    """The conversation for the chat template: `developer` is a system message, and an
    assistant's tool calls are written out as JSON so the model sees what it called."""
    messages = []
    for parsed, raw in zip(chat.messages, chat.raw_messages, strict=True):
        role = "system" if parsed.role == "developer" else parsed.role
        text = parsed.text
        calls = raw.get("tool_calls") if isinstance(raw, dict) else None
        if calls:
            written = json.dumps([call.get("function", call) for call in calls
                                  if isinstance(call, dict)], ensure_ascii=False)
            text = f"{text}\n{written}".strip()
        messages.append({"role": role, "content": text})
    return tuple(messages)


def _descriptions(tools: Any) -> dict[str, str]:
    descriptions = {}
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("description"), str):
            descriptions[str(function.get("name"))] = function["description"].strip()
    return descriptions


def parse_request(body: Any) -> LocalRequest:
    """The validated request in `body` (decoded JSON); raises `InvalidRequestError`."""
    if isinstance(body, dict) and body.get("stream"):
        raise InvalidRequestError("This server does not stream; send 'stream': false.",
                                  "stream")
    chat = parse_chat_request(body)
    return LocalRequest(chat=chat, messages=_template_messages(chat),
                        response_format=_response_format(body.get("response_format")),
                        stop=_stop(body.get("stop")), top_p=_top_p(body.get("top_p")),
                        tool_descriptions=_descriptions(body.get("tools")))
