"""The transport-free core of the simulated model: `SimulatedModel.complete(request)`.

It decides what a request gets, deterministically:

- with tools (and `tool_choice` other than "none"): a call of the named or first function,
  whose arguments are filled by the bag-of-words classifier (`_classifier.py`);
- the proposer's meta-prompt (`## Task` ... `## Write`): one new instruction
  (`_proposer.py`);
- anything else: a short fixed reply saying that this is a simulated model.

The answer depends only on the request (messages, tools, temperature, seed), never on the
time or on earlier requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import _rng
from ._classifier import classify, free_text_answer
from ._proposer import is_proposal_request, parse_meta_prompt, write_instruction
from ._requests import ChatRequest, Tool
from ._text import approx_tokens, words

#: The tokens one message adds beyond its content (role and separators).
MESSAGE_OVERHEAD_TOKENS = 4


@dataclass(frozen=True)
class ToolCall:
    """One function call of a choice; `arguments` is a JSON string."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Choice:
    """One answer: text content, or tool calls."""

    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    #: What the model decided, for the record: the label, or the text.
    answer: str
    completion_tokens: int


@dataclass(frozen=True)
class Completion:
    """The model's answer to one request."""

    id: str
    model: str
    choices: tuple[Choice, ...]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)


def generic_reply(request: ChatRequest) -> str:
    """The reply to a chat the simulation has no behaviour for."""
    count = len(words(request.last_user))
    return (f"This is a simulated model, not a language model: it classifies with tools and "
            f"writes instructions for the proposer's meta-prompt. Your message had {count} "
            f"words.")


def prompt_tokens(request: ChatRequest) -> int:
    """The approximate prompt size: messages, their overhead and the tool schemas."""
    total = sum(approx_tokens(m.text) + MESSAGE_OVERHEAD_TOKENS for m in request.messages) + 2
    if request.tools:
        total += approx_tokens(json.dumps([{"name": t.name, "parameters": t.parameters}
                                           for t in request.tools]))
    return total


def _schema_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return str(kind)


class SimulatedModel:
    """Answers chat completion requests like a (small, transparent) model would."""

    def complete(self, request: ChatRequest) -> Completion:
        key = _rng.digest(request.seed, request.raw_messages).hex()
        choices = tuple(self._choice(request, index) for index in range(request.n))
        tools = [{"name": t.name, "parameters": t.parameters} for t in request.tools]
        completion_id = "chatcmpl-sim" + _rng.digest(
            key, request.model, tools, request.tool_choice, request.temperature,
            request.n).hex()[:24]
        return Completion(completion_id, request.model, choices, prompt_tokens(request))

    # ------------------------------------------------------------------ choices

    def _choice(self, request: ChatRequest, index: int) -> Choice:
        last = request.messages[-1]
        wants_tool = bool(request.tools) and request.tool_choice != "none" and not (
            request.tool_choice == "auto" and last.role in ("tool", "function"))
        if wants_tool:
            return self._tool_choice(request, index)
        return self._text_choice(request, index)

    def _noise_key(self, request: ChatRequest, index: int) -> tuple[object, ...]:
        key: tuple[object, ...] = (request.seed, request.raw_messages)
        return key if index == 0 else (*key, index)

    def _tool_choice(self, request: ChatRequest, index: int) -> Choice:
        tool = next((t for t in request.tools if t.name == request.tool_choice),
                    request.tools[0])
        arguments, answer = self._arguments(request, tool, index)
        encoded = json.dumps(arguments)
        call_id = "call_" + _rng.digest("call", request.seed, request.raw_messages, index,
                                        tool.name, encoded).hex()[:24]
        tokens = approx_tokens(tool.name) + approx_tokens(encoded) + 3
        return Choice(None, (ToolCall(call_id, tool.name, encoded),), "tool_calls", answer,
                      tokens)

    def _arguments(self, request: ChatRequest, tool: Tool,
                   index: int) -> tuple[dict[str, Any], str]:
        properties = tool.parameters.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = tool.parameters.get("required")
        names = [n for n in required if n in properties] if isinstance(required, list) \
            else list(properties)
        system = request.system or ""
        arguments: dict[str, Any] = {}
        answers: list[str] = []
        for name in names:
            schema = properties[name] if isinstance(properties[name], dict) else {}
            key = (*self._noise_key(request, index), tool.name, name)
            enum = schema.get("enum")
            if isinstance(enum, list) and enum:
                options = [str(value) for value in enum]
                label = classify(system, request.last_user, options, noise_key=key,
                                 temperature=request.temperature).label
                arguments[name] = enum[options.index(label)]
                answers.append(label)
                continue
            kind = _schema_type(schema)
            if kind == "string":
                text = free_text_answer(system, request.last_user, noise_key=key,
                                        temperature=request.temperature)
                arguments[name] = text
                answers.append(text)
            else:
                arguments[name] = {"integer": 0, "number": 0.0, "boolean": False,
                                   "array": [], "object": {}}.get(kind)
        return arguments, answers[0] if answers else json.dumps(arguments)

    def _text_choice(self, request: ChatRequest, index: int) -> Choice:
        user = request.last_user
        if request.messages[-1].role in ("tool", "function"):
            text = "Done: the tool call returned its result."
        elif user and is_proposal_request(user):
            text = write_instruction(parse_meta_prompt(user),
                                     key=(*self._noise_key(request, index), request.temperature))
        else:
            text = generic_reply(request)
        finish = "stop"
        tokens = approx_tokens(text)
        if request.max_tokens is not None and tokens > request.max_tokens:
            text, tokens, finish = _truncate(text, request.max_tokens), request.max_tokens, \
                "length"
        return Choice(text, (), finish, text, tokens)


def _truncate(text: str, max_tokens: int) -> str:
    """The longest prefix of whole words of `text` within `max_tokens`."""
    kept: list[str] = []
    for word in text.split(" "):
        if approx_tokens(" ".join([*kept, word])) > max_tokens:
            break
        kept.append(word)
    return " ".join(kept)
