"""What a request allows the model to write, as a JSON schema, a grammar and a prompt note.

A small model cannot be trusted to produce a well-formed tool call or JSON by itself, so the
output is constrained: the JSON schema is compiled to a GBNF grammar (llama.cpp's own
converter, `llama_cpp.llama_grammar.json_schema_to_gbnf`) and sampling can only produce
text the grammar accepts. The model is also told, in a short note appended to the system
message, what it is writing, as OpenAI-compatible servers put tool definitions in the prompt.

- Tools, with `tool_choice` "required", a named function, or "auto" (unless the last message
  is a tool result: a model this small cannot decide well whether to call): with one
  candidate function the output is its arguments object, checked against `parameters`; with
  several it is `{"name": ..., "arguments": {...}}`, one of them.
- `response_format` `json_schema`: the output matches its `schema`; `json_object`: any JSON
  object. Tools win when a tool call is made.
- Otherwise the output is free text.

Earlier tool calls in the conversation (an assistant message's `tool_calls`, e.g. a few-shot
demo's answer) are written into that message as the text the model itself writes for a call
under this request's grammar (`written_call`, the inverse of `read_tool_call`): the bare
arguments object when the request allows one function and the call is to it, else
`{"name": ..., "arguments": {...}}`. So a demo's answer and the answer the model is asked for
read alike, as a server whose template renders tool calls in its own call syntax does. `tool`
messages keep their role and content, as the chat template renders them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._requests import InvalidRequestError, LocalRequest

TEXT, TOOL_CALL, JSON = "text", "tool_call", "json"


@dataclass(frozen=True)
class Constraint:
    """The shape of one request's output."""

    kind: str
    #: The JSON schema the output must match; None for free text (and for any JSON object).
    schema: dict[str, Any] | None = None
    #: Appended to the system message: what to write, in a sentence and a schema.
    note: str = ""
    #: For a tool call: the functions it may call, by name (one means the output is the
    #: arguments object itself).
    functions: tuple[str, ...] = field(default_factory=tuple)
    #: Where the schema came from, for error messages.
    param: str = ""


def _parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    return parameters or {"type": "object"}


def _shown(parameters: dict[str, Any]) -> str:
    """The part of a parameters schema the model reads: its properties when it has some."""
    properties = parameters.get("properties")
    return json.dumps(properties if isinstance(properties, dict) and properties else parameters,
                      ensure_ascii=False)


def _wants_tool(request: LocalRequest) -> bool:
    chat = request.chat
    return bool(chat.tools) and chat.tool_choice != "none" and not (
        chat.tool_choice == "auto" and chat.messages[-1].role in ("tool", "function"))


def constraint_for(request: LocalRequest) -> Constraint:
    """The constraint of `request`."""
    chat = request.chat
    descriptions = request.tool_descriptions
    if _wants_tool(request):
        tools = [t for t in chat.tools if t.name == chat.tool_choice] or list(chat.tools)
        if len(tools) == 1:
            tool = tools[0]
            about = f" ({descriptions[tool.name]})" if descriptions.get(tool.name) else ""
            index = chat.tools.index(tool)
            return Constraint(
                TOOL_CALL, _parameters(tool.parameters),
                f"Reply by calling the function {tool.name}{about} with JSON arguments "
                f"matching this schema: {_shown(tool.parameters)}",
                (tool.name,), f"tools[{index}].function.parameters")
        lines = [f"- {t.name}" + (f" ({descriptions[t.name]})" if descriptions.get(t.name)
                                  else "") + f": arguments {_shown(t.parameters)}" for t in tools]
        schema = {"anyOf": [
            {"type": "object",
             "properties": {"name": {"const": t.name}, "arguments": _parameters(t.parameters)},
             "required": ["name", "arguments"], "additionalProperties": False}
            for t in tools]}
        note = ('Reply by calling one of these functions, written as {"name": ..., '
                '"arguments": {...}}:\n' + "\n".join(lines))
        return Constraint(TOOL_CALL, schema, note, tuple(t.name for t in tools), "tools")
    response_format = request.response_format
    if response_format.type == "json_schema":
        schema = response_format.schema or {"type": "object"}
        return Constraint(JSON, schema, "Reply with a JSON object matching this schema: "
                          + json.dumps(schema, ensure_ascii=False),
                          param="response_format.json_schema.schema")
    if response_format.type == "json_object":
        return Constraint(JSON, None, "Reply with a JSON object.", param="response_format")
    return Constraint(TEXT)


def grammar_text(constraint: Constraint) -> str | None:
    """The GBNF grammar of `constraint`; None for free text. Raises `InvalidRequestError` when
    llama.cpp's converter cannot handle the schema."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if constraint.kind == TEXT:
        return None
    if constraint.schema is None:
        return str(JSON_GBNF)
    try:
        grammar = json_schema_to_gbnf(json.dumps(constraint.schema))
    except Exception as error:  # the converter raises bare AssertionError/ValueError/...
        raise InvalidRequestError(f"Invalid schema in '{constraint.param}': it cannot be turned "
                                  f"into a grammar ({error}).", constraint.param) from None
    return str(grammar)  # llama_cpp's converter is unannotated


def with_note(messages: tuple[dict[str, str], ...], note: str) -> list[dict[str, str]]:
    """`messages` with `note` appended to the first system message (or as a new one)."""
    out = [dict(m) for m in messages]
    if not note:
        return out
    for message in out:
        if message["role"] == "system":
            message["content"] = f"{message['content']}\n\n{note}".strip()
            return out
    return [{"role": "system", "content": note}, *out]


def read_tool_call(constraint: Constraint, text: str) -> tuple[str, str]:
    """The function name and JSON arguments string of a constrained tool-call output. An
    output cut short by `max_tokens` is returned as it is, as OpenAI does."""
    text = text.strip()
    if len(constraint.functions) == 1:
        return constraint.functions[0], text
    try:
        value = json.loads(text)
    except ValueError:
        return constraint.functions[0], text
    if not isinstance(value, dict) or value.get("name") not in constraint.functions:
        return constraint.functions[0], text
    return str(value["name"]), json.dumps(value.get("arguments", {}), ensure_ascii=False)


def written_call(constraint: Constraint, name: str, arguments: str) -> str:
    """The text the model writes, under `constraint`, for a call of `name` with `arguments`
    (a JSON string, as OpenAI sends it; kept as it is when it is not JSON)."""
    try:
        value: Any = json.loads(arguments)
    except ValueError:
        value = None
    if constraint.kind == TOOL_CALL and constraint.functions == (name,):
        return json.dumps(value, ensure_ascii=False) if value is not None else arguments
    return json.dumps({"name": name, "arguments": arguments if value is None else value},
                      ensure_ascii=False)


def with_history_calls(request: LocalRequest, constraint: Constraint) -> tuple[dict[str, str], ...]:
    """`request.messages` with each assistant message's tool calls written after its text,
    one call a line, by `written_call`."""
    out = []
    for message, raw in zip(request.messages, request.chat.raw_messages, strict=True):
        calls = raw.get("tool_calls") if isinstance(raw, dict) else None
        if not calls:
            out.append(message)
            continue
        lines = [message["content"]] if message["content"].strip() else []
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                arguments = function.get("arguments")
                lines.append(written_call(constraint, str(function.get("name", "")),
                                          arguments if isinstance(arguments, str)
                                          else json.dumps(arguments, ensure_ascii=False)))
        out.append({**message, "content": "\n".join(lines)})
    return tuple(out)
