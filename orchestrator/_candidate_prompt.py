"""What a candidate does to a model call: per stage, an instruction and a demo set.

A candidate's prompt is a `CandidatePrompt`: for each stage of the task app, a `StagePrompt`
with the instruction that replaces the call's system message (None keeps the task app's own)
and the demonstrations inserted before the call's first conversational turn. It is a small
frozen record with a JSON form (`to_dict` / `from_dict`), so a rollout's grant can carry it
through a store to any interceptor replica.

Which stage a call belongs to (`stage_key`):

- the stage id the task app put in the inference URL, `/v1/<token>/<stage_id>/chat/completions`
  (the backend offers those URLs in `policy.config.stage_inference_urls`);
- else the fingerprint of the call's own system message, `sys:<12 hex digits>`.

A prompt of a single-stage job has one entry under `DEFAULT_STAGE` (""), which applies to every
call, whatever its stage: exactly the instruction-only rewrite of before, plus demos.

`apply_prompt` is the interceptor's one transformation of a call's messages; `demo_turns`
turns one observed call (its messages and the model's answer) into the turns of a demo, in
the task app's own shapes: the user turn, earlier assistant and tool turns of that call, and
the assistant's answer, tool calls included. An answer that ends in tool calls is followed by
one tool turn per call, taken from the task app's next call when it sent the results, else
with empty content (OpenAI-style APIs refuse an assistant tool call without its result).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The stage whose prompt applies to every call (single-stage jobs).
DEFAULT_STAGE = ""
#: What a stage id may look like, in the URL and in `modules[].stages[].stage_id`.
STAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FINGERPRINT_PREFIX = "sys:"
_SYSTEM_ROLES = ("system", "developer")
#: A demo whose turns are longer than this (in JSON characters) is not kept.
MAX_DEMO_CHARS = 8000

Message = dict[str, Any]


@dataclass(frozen=True)
class StagePrompt:
    """One stage's part of a candidate."""

    #: Replaces the call's system message; None keeps the task app's own.
    instruction: str | None = None
    #: Each demo is a sequence of turns (user, assistant, tool ...), inserted in order.
    demos: tuple[tuple[Message, ...], ...] = ()


@dataclass(frozen=True)
class CandidatePrompt:
    """A candidate's prompt: stage key -> its `StagePrompt`."""

    stages: tuple[tuple[str, StagePrompt], ...]

    @classmethod
    def single(cls, instruction: str | None,
               demos: tuple[tuple[Message, ...], ...] = ()) -> CandidatePrompt | None:
        """The prompt of a single-stage candidate; None when it changes nothing."""
        if instruction is None and not demos:
            return None
        return cls(((DEFAULT_STAGE, StagePrompt(instruction, demos)),))

    def for_call(self, key: str) -> StagePrompt | None:
        """The stage prompt for a call of stage `key`: the default one when the prompt has
        it, else the one of that stage, else None (the call passes through)."""
        table = dict(self.stages)
        return table.get(DEFAULT_STAGE) or table.get(key)

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [{"stage": key, "instruction": p.instruction,
                            "demos": [list(d) for d in p.demos]} for key, p in self.stages]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidatePrompt:
        return cls(tuple(
            (str(s["stage"]), StagePrompt(s.get("instruction"),
                                          tuple(tuple(d) for d in s.get("demos") or ())))
            for s in data.get("stages") or ()))


def text_of(content: Any) -> str:
    """A message content as text (OpenAI content parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def system_text(messages: Sequence[Any]) -> str | None:
    """The first system (or developer) message's text, or None when there is none."""
    for message in messages:
        if isinstance(message, dict) and message.get("role") in _SYSTEM_ROLES:
            return text_of(message.get("content"))
    return None


def fingerprint(instruction: str | None) -> str:
    """The stage key of calls with this system message: `sys:<12 hex>` ("" without one)."""
    if instruction is None:
        return ""
    return _FINGERPRINT_PREFIX + hashlib.sha256(instruction.encode()).hexdigest()[:12]


def is_fingerprint(key: str) -> bool:
    return key.startswith(_FINGERPRINT_PREFIX)


def stage_key(url_stage: str, messages: Sequence[Any]) -> str:
    """The stage a call belongs to: the URL's stage id, else its system message's
    fingerprint."""
    return url_stage or fingerprint(system_text(messages))


def with_instruction(messages: list[Any], instruction: str) -> list[Any]:
    """Replaces the first system message's content with `instruction`, or prepends one; the
    task app's own message objects are left as they were."""
    for position, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") in _SYSTEM_ROLES:
            return [*messages[:position], {**message, "content": instruction},
                    *messages[position + 1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _with_demos(messages: list[Any], demos: tuple[tuple[Message, ...], ...]) -> list[Any]:
    """Inserts the demos' turns after the leading system messages, before the first turn of
    the real conversation."""
    head = 0
    while head < len(messages) and isinstance(messages[head], dict) and \
            messages[head].get("role") in _SYSTEM_ROLES:
        head += 1
    turns = [dict(turn) for demo in demos for turn in demo]
    return [*messages[:head], *turns, *messages[head:]]


def apply_prompt(messages: list[Any], prompt: CandidatePrompt | None,
                 url_stage: str = "") -> tuple[list[Any], str]:
    """The messages the provider sees for a call of this candidate, and the call's stage key
    (taken from the task app's own messages, before any change)."""
    key = stage_key(url_stage, messages)
    stage = prompt.for_call(key) if prompt is not None else None
    if stage is None:
        return messages, key
    out = messages
    if stage.instruction is not None:
        out = with_instruction(out, stage.instruction)
    if stage.demos:
        out = _with_demos(out, stage.demos)
    return out, key


# -- demos from observed calls --------------------------------------------------------------


def _assistant_turn(message: Mapping[str, Any]) -> Message:
    """The answer as an assistant turn: its content and tool calls, nothing else."""
    turn: Message = {"role": "assistant", "content": message.get("content")}
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        turn["tool_calls"] = [
            {"id": c.get("id", ""), "type": c.get("type", "function"),
             "function": {"name": (c.get("function") or {}).get("name", ""),
                          "arguments": (c.get("function") or {}).get("arguments", "")}}
            for c in calls if isinstance(c, dict)]
    return turn


def answer_of(response: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The first choice's message of a chat completion, or None."""
    if not isinstance(response, Mapping):
        return None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    return message if isinstance(message, dict) else None


def demo_turns(messages: Sequence[Any], response: Mapping[str, Any] | None,
               next_messages: Sequence[Any] = ()) -> tuple[Message, ...] | None:
    """One observed call as demo turns (see the module's docstring); None when it cannot be
    one (no answer, no user turn, or longer than `MAX_DEMO_CHARS`). `next_messages` are the
    messages of the task app's next call in the same stage, where tool results are found."""
    answer = answer_of(response)
    if answer is None:
        return None
    turns = [dict(m) for m in messages
             if isinstance(m, dict) and m.get("role") not in _SYSTEM_ROLES]
    if not any(t.get("role") == "user" for t in turns):
        return None
    assistant = _assistant_turn(answer)
    turns.append(assistant)
    results = {m.get("tool_call_id"): m for m in next_messages
               if isinstance(m, dict) and m.get("role") == "tool"}
    for call in assistant.get("tool_calls", ()):
        found = results.get(call["id"])
        turns.append({"role": "tool", "tool_call_id": call["id"],
                      "content": text_of(found.get("content")) if found else ""})
    if len(json.dumps(turns, ensure_ascii=False)) > MAX_DEMO_CHARS:
        return None
    return tuple(turns)
