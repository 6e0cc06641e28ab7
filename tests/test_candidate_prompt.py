"""The interceptor's transformation of a call's messages: instructions and demos per stage,
in the task app's own shapes (tool calls and tool results included)."""

from __future__ import annotations

import json
from typing import Any

from orchestrator._candidate_prompt import (
    DEFAULT_STAGE,
    CandidatePrompt,
    StagePrompt,
    apply_prompt,
    demo_turns,
    fingerprint,
    stage_key,
)
from orchestrator._exchanges import Exchange, trace_of

SYSTEM = {"role": "system", "content": "You classify messages."}
TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "classify_intent", "arguments": '{"intent": "change_pin"}'}}


def _answer(message: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def test_an_answer_with_a_tool_call_becomes_user_assistant_and_tool_turns() -> None:
    messages = [SYSTEM, {"role": "user", "content": "How do I change my PIN?"}]
    turns = demo_turns(messages, _answer({"role": "assistant", "content": None,
                                          "tool_calls": [TOOL_CALL], "refusal": None}))
    assert turns == (
        {"role": "user", "content": "How do I change my PIN?"},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        # the task app sent no result: an empty one keeps the conversation valid
        {"role": "tool", "tool_call_id": "call_1", "content": ""},
    )


def test_a_tool_result_the_task_app_sent_next_is_the_demos_tool_turn() -> None:
    first = [SYSTEM, {"role": "user", "content": "pin?"}]
    answer = _answer({"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]})
    following = [*first, {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                 {"role": "tool", "tool_call_id": "call_1", "content": "ticket 42 opened"}]
    turns = demo_turns(first, answer, following)
    assert turns is not None
    assert turns[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "ticket 42 opened"}


def test_a_call_without_answer_or_user_turn_is_no_demo() -> None:
    assert demo_turns([SYSTEM, {"role": "user", "content": "x"}], None) is None
    assert demo_turns([SYSTEM], _answer({"role": "assistant", "content": "hi"})) is None
    long = [{"role": "user", "content": "x" * 9000}]
    assert demo_turns(long, _answer({"role": "assistant", "content": "y"})) is None


def test_demos_go_after_the_system_message_and_before_the_real_conversation() -> None:
    demo = ({"role": "user", "content": "lost my card"},
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": ""})
    prompt = CandidatePrompt.single("Be exact.", (demo,))
    real = [SYSTEM, {"role": "user", "content": "where is my card?"}]
    out, key = apply_prompt(real, prompt)
    assert out == [{"role": "system", "content": "Be exact."}, *demo, real[1]]
    assert key == fingerprint("You classify messages.")
    assert real[0] == SYSTEM  # the task app's own objects are not changed


def test_demos_only_keeps_the_task_apps_instruction() -> None:
    demo = ({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"})
    out, _ = apply_prompt([SYSTEM, {"role": "user", "content": "q"}],
                          CandidatePrompt.single(None, (demo,)))
    assert out == [SYSTEM, *demo, {"role": "user", "content": "q"}]
    assert CandidatePrompt.single(None) is None


def test_each_stage_gets_its_own_prompt_by_url_stage_or_fingerprint() -> None:
    router_sys = {"role": "system", "content": "Route it."}
    prompt = CandidatePrompt((
        ("router", StagePrompt("Route carefully.")),
        (fingerprint("Answer it."), StagePrompt("Answer briefly."))))
    routed, key = apply_prompt([router_sys, {"role": "user", "content": "q"}], prompt, "router")
    assert (routed[0]["content"], key) == ("Route carefully.", "router")
    answered, key = apply_prompt([{"role": "system", "content": "Answer it."},
                                  {"role": "user", "content": "q"}], prompt)
    assert answered[0]["content"] == "Answer briefly." and key.startswith("sys:")
    other = [{"role": "system", "content": "Something else."}, {"role": "user", "content": "q"}]
    assert apply_prompt(other, prompt)[0] is other  # no prompt for that stage: unchanged
    assert stage_key("", [{"role": "user", "content": "q"}]) == ""


def test_a_single_stage_prompt_applies_to_every_call_and_survives_json() -> None:
    demo = ({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"})
    prompt = CandidatePrompt.single("New.", (demo,))
    assert prompt is not None and prompt.stages[0][0] == DEFAULT_STAGE
    out, _ = apply_prompt([{"role": "system", "content": "Any."}, {"role": "user", "content": "q"}],
                          prompt, "router")
    assert out[0]["content"] == "New." and out[1:3] == list(demo)
    assert CandidatePrompt.from_dict(json.loads(json.dumps(prompt.to_dict()))) == prompt


def test_the_trace_keeps_each_calls_stage_and_demo_turns() -> None:
    answer = _answer({"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]})
    exchanges = [
        Exchange([{"role": "system", "content": "Route it."}, {"role": "user", "content": "m"}],
                 answer, 1, 1, 1.0, stage="router"),
        Exchange([{"role": "system", "content": "Answer it."}, {"role": "user", "content": "n"}],
                 None, 0, 0, 1.0, error="http 500", stage="answerer"),
        Exchange([{"role": "system", "content": "Answer it."}, {"role": "user", "content": "n"}],
                 answer, 1, 1, 1.0, stage="answerer"),
    ]
    trace = trace_of(exchanges)
    assert trace is not None
    assert (trace["instruction"], trace["input"]) == ("Route it.", "m")  # as before
    assert [c["stage"] for c in trace["calls"]] == ["router", "answerer"]
    assert trace["calls"][1]["turns"][0] == {"role": "user", "content": "n"}

