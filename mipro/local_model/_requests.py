"""Validating a chat completion request body for the local model.

Malformed requests raise `InvalidRequestError`, which the server answers with a 400 in
OpenAI's error shape: `{"error": {"message", "type": "invalid_request_error", "param",
"code"}}`. The checks follow what the OpenAI API rejects: no model, no messages, unknown
roles, content of the wrong type, malformed tools, a `tool_choice` naming an unknown
function, out-of-range sampling parameters, streaming (this server does not stream).

`parse_chat_request` reads the part every chat completion has (`ChatRequest`);
`parse_request` adds what a real model also honours: `response_format`, `stop`, `top_p`, and
the raw tool calls of earlier assistant messages, so the model sees the whole conversation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_CHOICES = 8


class InvalidRequestError(ValueError):
    """A request the API refuses; `param` names the offending field (or None)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Message:
    """One chat message with its content flattened to text."""

    role: str
    text: str


@dataclass(frozen=True)
class Tool:
    """A function tool: its name and JSON-schema parameters."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatRequest:
    """The part of a `POST /v1/chat/completions` body every OpenAI-compatible server reads."""

    model: str
    messages: tuple[Message, ...]
    #: The messages as sent (their tool calls included).
    raw_messages: list[Any]
    tools: tuple[Tool, ...] = ()
    #: "none", "auto", "required", or the name of the function to call.
    tool_choice: str = "auto"
    temperature: float = 1.0
    seed: int | None = None
    max_tokens: int | None = None
    n: int = 1

    @property
    def system(self) -> str | None:
        """The system (or developer) instructions, joined; None when there are none."""
        parts = [m.text for m in self.messages if m.role in ("system", "developer")]
        return "\n\n".join(parts) if parts else None

    @property
    def last_user(self) -> str:
        """The text of the last user message ("" when there is none)."""
        return next((m.text for m in reversed(self.messages) if m.role == "user"), "")


def _content_text(content: Any, param: str, *, may_be_null: bool) -> str:
    if content is None:
        if may_be_null:
            return ""
        raise InvalidRequestError(f"Invalid value for '{param}': expected a string or an "
                                  "array of content parts, got null.", param)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidRequestError(
                    f"Invalid content part: '{param}[{index}]' must be an object with a "
                    "'type'.", f"{param}[{index}]")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise InvalidRequestError(f"Missing required parameter: "
                                              f"'{param}[{index}].text'.",
                                              f"{param}[{index}].text")
                texts.append(part["text"])
        return "\n".join(texts)
    raise InvalidRequestError(f"Invalid type for '{param}': expected a string or an array of "
                              f"content parts, got {type(content).__name__}.", param)


def _messages(value: Any) -> tuple[Message, ...]:
    if value is None:
        raise InvalidRequestError("Missing required parameter: 'messages'.", "messages")
    if not isinstance(value, list):
        raise InvalidRequestError("Invalid type for 'messages': expected an array.", "messages")
    if not value:
        raise InvalidRequestError("Invalid 'messages': empty array. Expected an array with "
                                  "at least one message.", "messages")
    messages = []
    for index, raw in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(raw, dict):
            raise InvalidRequestError(f"Invalid type for '{where}': expected an object.", where)
        role = raw.get("role")
        if role not in ROLES:
            raise InvalidRequestError(
                f"Invalid value for '{where}.role': {role!r}. Supported values are: "
                + ", ".join(f"'{r}'" for r in ROLES) + ".", f"{where}.role")
        tool_calls = raw.get("tool_calls")
        if tool_calls is not None and (role != "assistant" or not isinstance(tool_calls, list)):
            raise InvalidRequestError(f"Invalid '{where}.tool_calls': only assistant messages "
                                      "carry a list of tool calls.", f"{where}.tool_calls")
        if role == "tool" and not isinstance(raw.get("tool_call_id"), str):
            raise InvalidRequestError(f"Missing required parameter: '{where}.tool_call_id'.",
                                      f"{where}.tool_call_id")
        if "content" not in raw and role != "assistant":
            raise InvalidRequestError(f"Missing required parameter: '{where}.content'.",
                                      f"{where}.content")
        text = _content_text(raw.get("content"), f"{where}.content",
                             may_be_null=role == "assistant")
        messages.append(Message(role, text))
    return tuple(messages)


def _tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequestError("Invalid type for 'tools': expected an array.", "tools")
    tools = []
    for index, raw in enumerate(value):
        where = f"tools[{index}]"
        if not isinstance(raw, dict) or raw.get("type") != "function":
            raise InvalidRequestError(f"Invalid value for '{where}.type': only 'function' "
                                      "tools are supported.", f"{where}.type")
        function = raw.get("function")
        if not isinstance(function, dict):
            raise InvalidRequestError(f"Missing required parameter: '{where}.function'.",
                                      f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise InvalidRequestError(f"Invalid '{where}.function.name': expected a string of "
                                      "letters, digits, '_' or '-' (at most 64).",
                                      f"{where}.function.name")
        parameters = function.get("parameters", {})
        if not isinstance(parameters, dict):
            raise InvalidRequestError(f"Invalid type for '{where}.function.parameters': "
                                      "expected an object.", f"{where}.function.parameters")
        tools.append(Tool(name, parameters))
    return tuple(tools)


def _tool_choice(value: Any, tools: tuple[Tool, ...]) -> str:
    if value is None:
        return "auto" if tools else "none"
    if not tools:
        raise InvalidRequestError("Invalid value for 'tool_choice': 'tool_choice' is only "
                                  "allowed when 'tools' are specified.", "tool_choice")
    if value in ("none", "auto", "required"):
        return str(value)
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if name in {tool.name for tool in tools}:
            return str(name)
        raise InvalidRequestError(f"Invalid value for 'tool_choice': no function named "
                                  f"{name!r} in 'tools'.", "tool_choice")
    raise InvalidRequestError("Invalid value for 'tool_choice': expected 'none', 'auto', "
                              "'required' or a function.", "tool_choice")


def _number(body: dict[str, Any], name: str, low: float, high: float,
            default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequestError(f"Invalid type for '{name}': expected a number.", name)
    if not low <= value <= high:
        raise InvalidRequestError(f"Invalid '{name}': {value} is not between {low:g} and "
                                  f"{high:g}.", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int, high: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"Invalid type for '{name}': expected an integer.", name)
    if value < low or (high is not None and value > high):
        limit = f"at least {low}" if high is None else f"between {low} and {high}"
        raise InvalidRequestError(f"Invalid '{name}': {value} must be {limit}.", name)
    return value


def parse_chat_request(body: Any) -> ChatRequest:
    """The validated request in `body` (decoded JSON); raises `InvalidRequestError`."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError("You must provide a model parameter.", "model")
    messages = _messages(body.get("messages"))
    tools = _tools(body.get("tools"))
    max_tokens = _integer(body, "max_completion_tokens", 1, None)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1, None)
    return ChatRequest(
        model=model,
        messages=messages,
        raw_messages=body["messages"],
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        temperature=_number(body, "temperature", 0.0, 2.0, 1.0),
        seed=_integer(body, "seed", -(2**63), 2**63 - 1),
        max_tokens=max_tokens,
        n=_integer(body, "n", 1, MAX_CHOICES) or 1,
    )


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
    #: The chat messages as the model's chat template takes them: role and text content
    #: (earlier tool calls not yet written in; see `_constraints.with_history_calls`).
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
    """The conversation for the chat template, text only: `developer` is a system message.
    An assistant's earlier tool calls are written in by `_constraints.with_history_calls`,
    in the form the model itself writes a call under this request's grammar."""
    return tuple({"role": "system" if m.role == "developer" else m.role, "content": m.text}
                 for m in chat.messages)


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
