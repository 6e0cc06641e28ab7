"""The fake model the end-to-end tests run: well-formed, deterministic answers, in-process.

What these pin is wiring only (shapes, determinism, enum membership); the fake's answers
carry no meaning, so nothing here is about quality.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.testclient import TestClient

from tests.fakes.fake_model import SENTENCES, create_app

TOOL = {"type": "function", "function": {"name": "classify_intent", "parameters": {
    "type": "object", "properties": {"intent": {"type": "string", "enum": ["a", "b", "c"]},
                                     "note": {"type": "string"}},
    "required": ["intent", "note"]}}}


def _chat(user: str, **extra: Any) -> dict[str, Any]:
    return {"model": "any-name", "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": user}], **extra}


def test_tool_calls_are_well_formed_deterministic_and_use_the_enum() -> None:
    client = TestClient(create_app())
    answers = []
    for i in range(30):
        body = _chat(f"message {i}", tools=[TOOL], tool_choice="required")
        first, again = (client.post("/v1/chat/completions", json=body).json() for _ in "12")
        assert first == again
        choice = first["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        (call,) = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "classify_intent"
        arguments = json.loads(call["function"]["arguments"])
        assert set(arguments) == {"intent", "note"} and isinstance(arguments["note"], str)
        answers.append(arguments["intent"])
        assert first["model"] == "any-name"
        assert first["usage"]["total_tokens"] == (first["usage"]["prompt_tokens"]
                                                  + first["usage"]["completion_tokens"]) > 0
    assert set(answers) == {"a", "b", "c"}  # the hash spreads over the enum


def test_text_answers_come_from_the_pool_and_differ_by_request(tmp_path: Any) -> None:
    record = tmp_path / "record.jsonl"
    client = TestClient(create_app(record))
    texts = [client.post("/chat/completions", json=_chat(f"write {i}")).json()
             ["choices"][0]["message"]["content"] for i in range(10)]
    assert all(any(text.startswith(s) for s in SENTENCES) for text in texts)
    assert len(set(texts)) == 10
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(e["system"], e["user"], e["answer"], e["has_tools"]) for e in lines] == [
        ("Be brief.", f"write {i}", texts[i], False) for i in range(10)]


def test_models_health_and_bad_requests() -> None:
    client = TestClient(create_app())
    assert client.get("/health").json()["healthy"] is True
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["fake"]
    for body, param in (({"messages": [{"role": "user", "content": "x"}]}, "model"),
                        ({"model": "m", "messages": []}, "messages"),
                        (_chat("x", stream=True), "stream"),
                        (_chat("x", tools=[TOOL], tool_choice={
                            "type": "function", "function": {"name": "other"}}), "tool_choice")):
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert client.post("/v1/chat/completions", content=b"{").status_code == 400
