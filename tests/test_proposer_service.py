"""The proposer service: its pure rules, and the real process over a real gRPC channel.

Fast tests check the meta-prompt sections, the tips, reply parsing and the de-duplication
rules as pure functions. The end-to-end tests start the fake model
(`python -m tests.fakes.fake_model`, whose answers carry no meaning) and
`python -m proposer_service` as real child processes on free ports, call the service with
`grpc.aio`, and stop every process by its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

import proposer_service
from mipro._providers import ProviderEndpoint
from mipro.v1 import proposer_pb2, proposer_pb2_grpc
from proposer_service import (
    TIPS,
    InvalidRequest,
    Proposal,
    ProposalsFailed,
    Proposer,
    ProposeRequest,
    ProposerModel,
    ScoredExample,
    ScoredInstruction,
    UnknownProvider,
)
from proposer_service._dedup import NEAR_DUPLICATE_JACCARD, clean_reply, dedupe, jaccard, word_set
from proposer_service._meta_prompt import (
    SECTION_HEADERS,
    SYSTEM_PROMPT,
    WRITE_REQUEST,
    build_messages,
    select_examples,
)
from proposer_service._proposer import validate_request
from proposer_service._tips import assign_tips

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE = "mipro.v1.ProposerService"
START_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 20.0
BASELINE = "You are a helpful assistant. Classify the customer's message."
LABELS = ["card_arrival", "lost_or_stolen_card", "change_pin", "refund_request"]
TASK_INFO = {"taskset": {"name": "support-intents",
                         "description": "Classify a banking customer's message into one intent.",
                         "labels": LABELS, "size": 300}}
EXAMPLES = [
    ("My new card still hasn't arrived, where is it?", "card_arrival", 1.0),
    ("Someone stole my wallet with my card in it", "lost_or_stolen_card", 1.0),
    ("How do I set a new PIN?", "change_pin", 1.0),
    ("I want my money back for this order", "card_arrival", 0.0),
    ("The card I ordered last week is not here", "refund_request", 0.0),
    ("I think I lost my card at the station", "change_pin", 0.0),
    ("Can I change my PIN at an ATM?", "change_pin", 1.0),
]

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- helpers


def _request(**overrides: object) -> ProposeRequest:
    fields: dict[str, object] = dict(
        job_id="pl_test", model=ProposerModel("local", "fake", 0.7, 256),
        num_candidates=4, baseline_instruction=BASELINE, task_info_json=json.dumps(TASK_INFO),
        examples=tuple(ScoredExample(text, json.dumps({"intent": label}), reward)
                       for text, label, reward in EXAMPLES),
        seed=7)
    fields.update(overrides)
    return ProposeRequest(**fields)  # type: ignore[arg-type]


def _proto_request(provider: str = "local", *, num_candidates: int = 5, seed: int = 7
                   ) -> proposer_pb2.ProposeInstructionsRequest:
    return proposer_pb2.ProposeInstructionsRequest(
        job_id="pl_proposer_test",
        model=proposer_pb2.ProposerModel(provider=provider, model="fake",
                                         temperature=0.7, max_tokens=256),
        mode="instruction_only", num_candidates=num_candidates,
        task_info_json=json.dumps(TASK_INFO), baseline_instruction=BASELINE,
        examples=[proposer_pb2.ScoredExample(input=text, output=json.dumps({"intent": label}),
                                             reward=reward) for text, label, reward in EXAMPLES],
        seed=seed)


def _sections(prompt: str) -> dict[str, str]:
    """The user prompt's sections by header line."""
    sections: dict[str, str] = {}
    header = None
    for line in prompt.splitlines():
        if line.startswith("## "):
            header = line
            sections[header] = ""
        elif header is not None:
            sections[header] += line + "\n"
    return {k: v.strip() for k, v in sections.items()}


# --------------------------------------------------------------------------- public surface


def test_exported_members() -> None:
    assert sorted(proposer_service.__all__) == sorted([
        "TIPS", "InvalidRequest", "Proposal", "ProposalsFailed", "ProposeRequest",
        "ProposeResult", "Proposer", "ProposerError", "ProposerModel", "ProposerServer",
        "ScoredExample", "ScoredInstruction", "Tip", "TokenUsage", "UnknownProvider"])


# --------------------------------------------------------------------------- tips


def test_tips_are_dspy_mipro_v2s_set_each_with_its_own_text() -> None:
    assert [t.id for t in TIPS] == [
        "none", "creative", "simple", "description", "high_stakes", "persona"]
    texts = [t.text for t in TIPS]
    assert all(text.strip() and "\n" not in text for text in texts)
    assert len(set(texts)) == len(texts)
    # Each candidate's call carries its own tip's text, and no other tip's.
    for tip in TIPS:
        user = build_messages(_request(), tip)[1]["content"]
        assert _sections(user)["## Tip"] == tip.text
        assert [other.id for other in TIPS if other.text in user] == [tip.id]


def test_tip_assignment_is_seeded_and_varied() -> None:
    assert assign_tips(3, 6) == assign_tips(3, 6)
    assert len({t.id for t in assign_tips(3, 6)}) == 6  # every tip once
    assert assign_tips(3, 14)[:6] == assign_tips(3, 14)[6:12]  # then the cycle repeats
    assert assign_tips(3, 4) == assign_tips(3, 6)[:4]  # a prefix of the same order
    assert len({tuple(t.id for t in assign_tips(seed, 6)) for seed in range(10)}) > 1


# --------------------------------------------------------------------------- meta-prompt


def test_meta_prompt_has_the_sections_in_order() -> None:
    previous = (ScoredInstruction("Pick one\n  intent.", 0.5, 2),
                ScoredInstruction("Name the intent label.", 0.6667, 3))
    request = _request(previous_candidates=previous)
    tip = TIPS[4]
    system, user = build_messages(request, tip, dataset_summary="Short banking\n questions.")
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "instruction text only" in SYSTEM_PROMPT
    assert user["role"] == "user"
    headers = [line for line in user["content"].splitlines() if line.startswith("## ")]
    assert headers == list(SECTION_HEADERS)
    sections = _sections(user["content"])
    task = sections["## Task"]
    assert "Name: support-intents" in task
    assert "Description: Classify a banking customer's message into one intent." in task
    assert f"Labels: {', '.join(LABELS)}" in task.splitlines()
    assert EXAMPLES[0][0] in task and EXAMPLES[1][0] in task and EXAMPLES[2][0] not in task
    assert sections["## Dataset summary"] == "Short banking questions."
    assert sections["## Current instruction"] == BASELINE
    assert sections["## Earlier candidates"].splitlines() == [
        "Score 0.67 on 3 seeds: Name the intent label.",
        "Score 0.50 on 2 seeds: Pick one intent.",
    ]
    assert sections["## Tip"] == tip.text
    assert sections["## Write"] == WRITE_REQUEST == (
        "Write one new instruction for this task that will make the model score higher. "
        "Reply with the instruction only.")


def test_meta_prompt_scored_examples_mix_successes_and_failures() -> None:
    user = build_messages(_request(), TIPS[0])[1]["content"]
    blocks = _sections(user)["## Scored examples"].split("\n\n")
    assert len(blocks) == 6
    scores = []
    for block in blocks:
        lines = block.splitlines()
        assert [line.split(":")[0] for line in lines] == ["Input", "Output", "Score"]
        scores.append(float(lines[2].removeprefix("Score: ")))
    assert scores == sorted(scores, reverse=True)
    assert scores.count(1.0) == 3 and scores.count(0.0) == 3
    assert "Output: {\"intent\": \"card_arrival\"}" in blocks[0]


def test_meta_prompt_without_earlier_candidates_or_task_info() -> None:
    request = _request(task_info_json="", previous_candidates=())
    user = build_messages(request, TIPS[0])[1]["content"]
    headers = [line for line in user.splitlines() if line.startswith("## ")]
    assert "## Earlier candidates" not in headers and "## Dataset summary" not in headers
    # The label set is revealed by the observed outputs (one-field tool-call arguments).
    labels = [line for line in user.splitlines() if line.startswith("Labels: ")]
    assert labels == ["Labels: card_arrival, lost_or_stolen_card, change_pin, refund_request"]


def test_meta_prompt_truncates_long_values() -> None:
    huge = "word " * 2000
    request = _request(examples=(ScoredExample(huge, huge, 1.0),),
                       task_info_json=json.dumps({"name": "t", "description": huge}))
    user = build_messages(request, TIPS[0])[1]["content"]
    assert len(user) < 3000
    assert "..." in user
    assert "Labels:" not in user  # free-text outputs reveal no label set


def test_select_examples_keeps_best_and_worst() -> None:
    examples = [ScoredExample(f"in {i}", "out", i / 10) for i in range(11)]
    chosen = select_examples(examples, 4)
    assert [e.input for e in chosen] == ["in 10", "in 9", "in 1", "in 0"]
    assert select_examples([], 6) == []


# --------------------------------------------------------------------------- parsing, de-dup


@pytest.mark.parametrize(("reply", "expected"), [
    ("Classify the message.", "Classify the message."),
    ('"Classify the message."', "Classify the message."),
    ("Instruction: Classify the message.", "Classify the message."),
    ("**New instruction:** \u201cClassify the message.\u201d", "Classify the message."),
    ("Here is the new instruction:\n```text\nClassify   the message.\n```\n",
     "Classify the message."),
    ("<think>which label?</think>\nSystem prompt: Classify the message.",
     "Classify the message."),
    ("  You are an expert.  \n\n\n\nPick   one label. ",
     "You are an expert.\n\nPick one label."),
    ("Instruction:\nSort it.\nLabels:\n- a: about A.\n- b",
     "Sort it.\nLabels:\n- a: about A.\n- b"),
    ('"a" means A, "b" means B', '"a" means A, "b" means B'),
    ("", ""),
    ('  ""  ', ""),
    ("Instruction:", ""),
])
def test_clean_reply(reply: str, expected: str) -> None:
    assert clean_reply(reply) == expected


def test_jaccard_threshold_is_documented_at_point_nine() -> None:
    assert NEAR_DUPLICATE_JACCARD == 0.9
    words = [f"w{i}" for i in range(20)]
    one_changed = [*words[:19], "other"]
    assert jaccard(word_set(" ".join(words)), word_set(" ".join(one_changed))) == 19 / 21


def test_dedupe_drops_exact_near_and_baseline_copies() -> None:
    long_text = ("You are an expert banking support agent. Read the customer's message carefully "
                 "and answer with exactly one intent label from the list, nothing else at all")
    proposals = [
        Proposal("Classify the message into one label.", "none"),
        Proposal("classify the   message into one label", "simple"),  # exact after normalise
        Proposal(long_text, "persona"),
        Proposal(long_text.replace("carefully", "closely"), "high_stakes"),  # 0.9 <= Jaccard
        Proposal(BASELINE.upper(), "creative"),  # the baseline
        Proposal(BASELINE.replace("helpful", "useful").replace(".", "!"), "description"),
        Proposal("Name the single intent label that fits the message best.", "creative"),
    ]
    kept, dropped = dedupe(proposals, [BASELINE])
    assert [p.tip for p in kept] == ["none", "persona", "description", "creative"]
    assert dropped == 3
    assert jaccard(word_set(long_text), word_set(proposals[3].instruction)) >= 0.9
    # A reworded baseline that changes 1 of 9 words stays (Jaccard 8/10 < 0.9).
    assert jaccard(word_set(BASELINE), word_set(proposals[5].instruction)) < 0.9


def test_dedupe_drops_copies_of_earlier_candidates() -> None:
    kept, dropped = dedupe([Proposal("Pick one intent.", "none")], ["", "pick one intent"])
    assert (kept, dropped) == ([], 1)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"num_candidates": 0}, "num_candidates"),
    ({"num_candidates": 65}, "num_candidates"),
    ({"mode": "instruction_and_demos"}, "mode"),
    ({"model": ProposerModel("local", "", 0.7, 256)}, "model.model"),
    ({"model": ProposerModel("", "m", 0.7, 256)}, "model.provider"),
    ({"model": ProposerModel("local", "m", 2.5, 256)}, "model.temperature"),
    ({"model": ProposerModel("local", "m", 0.7, -1)}, "model.max_tokens"),
    ({"seed": -1}, "seed"),
])
def test_validation_names_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_request(_request(**overrides))
    assert caught.value.field == field
    validate_request(_request(num_candidates=64))
    validate_request(_request(num_candidates=1, model=ProposerModel("local", "m", 0.0, 0)))


# --------------------------------------------------------------------------- the core, no network

LOCAL_ENV = {"MIPRO_PROVIDER_LOCAL_BASE_URL": "http://model.invalid/v1",
             "MIPRO_PROVIDER_LOCAL_API_KEY": "sk-unit-secret-123456"}


def _mock_proposer(answer: Callable[[dict[str, Any]], httpx.Response],
                   seen: list[dict[str, Any]], *, max_retries: int = 2) -> Proposer:
    """A core whose model calls go to `answer` through httpx's mock transport, retried by the
    openai SDK `max_retries` times as `make_async_client` configures it."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        return answer(body)

    def factory(endpoint: ProviderEndpoint) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=max_retries,
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))

    return Proposer(env=LOCAL_ENV, client_factory=factory)


#: A 500 that asks for a 10 ms wait, which the SDK honours (so the test does not sleep).
def _overloaded() -> httpx.Response:
    return httpx.Response(500, json={"error": {"message": "overloaded"}},
                          headers={"retry-after-ms": "10"})


def _completion(text: str) -> httpx.Response:
    return httpx.Response(200, json={
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}})


def _plan(index: int) -> str:
    return f"Instruction: Plan {index}: classify the message into exactly one intent."


async def test_core_keeps_successes_drops_empties_and_the_baseline() -> None:
    def answer(body: dict[str, Any]) -> httpx.Response:
        index = body["seed"] % 1000
        if index == 1:
            return _overloaded()
        return _completion({2: "  ", 3: f'"{BASELINE}"'}.get(index, _plan(index)))

    seen: list[dict[str, Any]] = []
    proposer = _mock_proposer(answer, seen)
    try:
        result = await proposer.propose(_request(num_candidates=5, seed=7))
    finally:
        await proposer.aclose()
    # The 500 is retried by the SDK (2 retries); the other calls are made once each; the
    # three missing candidates are asked for once more, with the next seeds and tips.
    assert sorted(body["seed"] for body in seen) == [
        7000, *[7001] * 3, 7002, 7003, 7004, 7005, 7006, 7007]
    assert {(b["model"], b["temperature"], b["max_tokens"]) for b in seen} == {
        ("fake", 0.7, 256)}
    assert all(b["messages"][0]["content"] == SYSTEM_PROMPT for b in seen)
    tips = assign_tips(7, 8)
    assert [(p.instruction, p.tip) for p in result.proposals] == [
        (_plan(i).removeprefix("Instruction: "), tips[i].id) for i in (0, 4, 5, 6, 7)]
    assert result.duplicates_dropped == 1  # the baseline, quoted
    assert result.rejected == {"empty": 1, "near_duplicate_of_baseline": 1}
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.calls) == (
        700, 70, 7)


async def test_core_asks_for_json_and_splits_a_list_into_candidates() -> None:
    def answer(body: dict[str, Any]) -> httpx.Response:
        index = body["seed"] % 1000
        return _completion(json.dumps({"instructions": [_plan(index), _plan(index + 10)]}))

    seen: list[dict[str, Any]] = []
    proposer = _mock_proposer(answer, seen)
    try:
        result = await proposer.propose(_request(num_candidates=3, seed=2))
    finally:
        await proposer.aclose()
    formats = [b["response_format"] for b in seen]
    assert all(f["type"] == "json_schema" and f["json_schema"]["strict"] for f in formats)
    schema = formats[0]["json_schema"]["schema"]
    assert schema["required"] == ["instructions"]
    assert schema["properties"]["instructions"]["maxItems"] == 1
    # Each call answered a list of two: six instructions, three kept (every call's first,
    # then the second ones as far as room allows), none rejected, none surplus to a refill.
    assert [p.instruction for p in result.proposals] == [
        _plan(i).removeprefix("Instruction: ") for i in (0, 1, 2)]
    assert result.rejected == {} and result.usage.calls == 3


async def test_core_falls_back_to_plain_text_once_when_response_format_is_refused() -> None:
    def answer(body: dict[str, Any]) -> httpx.Response:
        if "response_format" in body:
            return httpx.Response(400, json={"error": {
                "message": "response_format is not supported", "param": "response_format"}})
        return _completion(_plan(body["seed"] % 1000))

    seen: list[dict[str, Any]] = []
    proposer = _mock_proposer(answer, seen, max_retries=0)
    try:
        first = await proposer.propose(_request(num_candidates=2, seed=1))
        second = await proposer.propose(_request(num_candidates=2, seed=2))
    finally:
        await proposer.aclose()
    assert len(first.proposals) == 2 and len(second.proposals) == 2
    # Both concurrent calls of the first request were refused and sent again in plain text;
    # from then on this endpoint is asked in plain text straight away.
    assert first.plain_text_fallbacks == 2 and second.plain_text_fallbacks == 0
    asked = ["response_format" in b for b in seen]
    assert len(asked) == 6 and sum(asked) == 2 and asked[4:] == [False, False]


async def test_core_writes_the_dataset_summary_once_and_grounds_every_call_in_it() -> None:
    summary = "The messages are short banking questions; most name a card problem."

    def answer(body: dict[str, Any]) -> httpx.Response:
        if body["response_format"]["json_schema"]["name"] == "dataset_summary":
            return _completion(json.dumps({"summary": summary}))
        return _completion(_plan(body["seed"] % 1000))

    seen: list[dict[str, Any]] = []
    proposer = _mock_proposer(answer, seen)
    try:
        written = await proposer.propose(_request(num_candidates=2, summarize_dataset=True))
        later = await proposer.propose(_request(num_candidates=2, seed=8,
                                                dataset_summary=written.dataset_summary))
    finally:
        await proposer.aclose()
    assert written.dataset_summary == summary and later.dataset_summary == ""
    asked = [b for b in seen if b["response_format"]["json_schema"]["name"] == "dataset_summary"]
    assert len(asked) == 1 and asked[0]["seed"] == 7999
    # The summary call sees the bootstrap traces; every proposal call sees the summary.
    assert EXAMPLES[0][0] in asked[0]["messages"][1]["content"]
    proposals = [b for b in seen if b not in asked]
    assert len(proposals) == 4
    assert all(f"## Dataset summary\n{summary}" in b["messages"][1]["content"]
               for b in proposals)
    assert written.usage.calls == 3 and later.usage.calls == 2


async def test_core_adds_no_retries_of_its_own() -> None:
    seen: list[dict[str, Any]] = []
    proposer = _mock_proposer(lambda body: _overloaded(), seen, max_retries=0)
    with pytest.raises(ProposalsFailed) as caught:
        await proposer.propose(_request(num_candidates=2, seed=3))
    await proposer.aclose()
    # With the client's retries off, each candidate's call is made exactly once.
    assert sorted(body["seed"] for body in seen) == [3000, 3001]
    assert "HTTP 500" in str(caught.value)


async def test_core_all_calls_failing_names_provider_and_hides_the_key() -> None:
    def answer(body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(401, json={"error": {
            "message": "Incorrect API key provided: sk-unit-secret-123456"}})

    proposer = _mock_proposer(answer, [])
    with pytest.raises(ProposalsFailed) as caught:
        await proposer.propose(_request(num_candidates=3))
    await proposer.aclose()
    message = str(caught.value)
    assert caught.value.provider == "local" and caught.value.retryable
    assert "'local'" in message and "HTTP 401" in message and "model.invalid" in message
    assert "sk-unit-secret" not in message


async def test_core_unknown_provider() -> None:
    proposer = Proposer(env={})
    with pytest.raises(UnknownProvider) as caught:
        await proposer.propose(_request(model=ProposerModel("nosuch", "m")))
    assert caught.value.provider == "nosuch" and caught.value.field == "model.provider"
    assert "nosuch" in str(caught.value)


# --------------------------------------------------------------------------- real processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n"
                                 f"{self.log_tail()}")

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM by pid, SIGKILL after `grace` seconds; the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=grace)
        return self.popen.returncode


#: The service token the proposer processes of these tests require.
PROPOSER_TOKEN = "test-proposer-token-" + "0" * 16


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MIPRO_", "OPENAI_", "PROD_OPENAI_", "GROQ_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> _Process:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=REPO_ROOT, start_new_session=True)
    return _Process(name, popen, log_path)


def _wait_http_ok(url: str, process: _Process, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        process.check_running()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout:g} s:\n"
                                 f"{process.log_tail()}")
        time.sleep(0.05)


def _wait_serving(address: str, process: _Process, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            process.check_running()
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{address} was not SERVING within {timeout:g} s:\n"
                                     f"{process.log_tail()}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proposer_logs")


@pytest.fixture(scope="module")
def model_url(log_dir: Path) -> Iterator[str]:
    """The fake model, a real OpenAI-compatible server; its `/v1` base URL."""
    port = _free_port()
    process = _spawn("fake-model", [sys.executable, "-m", "tests.fakes.fake_model",
                                    "--host", "127.0.0.1", "--port", str(port)],
                     _clean_env(), log_dir)
    try:
        _wait_http_ok(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.stop()


def _start_proposer(model_url: str, log_dir: Path, name: str = "proposer",
                    **extra: str) -> tuple[_Process, str]:
    port = _free_port()
    env = _clean_env(**extra,
        MIPRO_HOST="127.0.0.1",
        MIPRO_PROPOSER_PORT=str(port),
        MIPRO_PROPOSER_TOKEN=PROPOSER_TOKEN,
        MIPRO_LOG_FORMAT="json",
        MIPRO_PROVIDER_LOCAL_BASE_URL=model_url,
        MIPRO_PROVIDER_LOCAL_API_KEY="sk-test-secret-do-not-log",
        # Nothing listens here: a provider whose model server is down.
        MIPRO_PROVIDER_DOWN_BASE_URL=f"http://127.0.0.1:{_free_port()}/v1",
    )
    process = _spawn(name, [sys.executable, "-m", "proposer_service"], env, log_dir)
    address = f"127.0.0.1:{port}"
    try:
        _wait_serving(address, process)
    except BaseException:
        process.stop()
        raise
    return process, address


@pytest.fixture(scope="module")
def proposer(model_url: str, log_dir: Path) -> Iterator[tuple[_Process, str]]:
    """`python -m proposer_service` pointed at the fake model as provider `local`."""
    process, address = _start_proposer(model_url, log_dir)
    try:
        yield process, address
    finally:
        process.stop()


async def _propose(address: str, request: proposer_pb2.ProposeInstructionsRequest
                   ) -> proposer_pb2.ProposeInstructionsResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = proposer_pb2_grpc.ProposerServiceStub(channel)
        return await stub.ProposeInstructions(
            request, timeout=CALL_TIMEOUT_S,
            metadata=(("authorization", f"Bearer {PROPOSER_TOKEN}"),))


async def test_proposes_distinct_candidates_with_tips(proposer: tuple[_Process, str]) -> None:
    _, address = proposer
    response = await _propose(address, _proto_request(num_candidates=5))
    instructions = [p.instruction for p in response.instructions]
    assert len(instructions) == 5, response
    assert len({i.casefold() for i in instructions}) == 5
    assert all(i.strip() and i == i.strip() for i in instructions)
    assert BASELINE not in instructions
    tips = [p.tip for p in response.instructions]
    assert len(set(tips)) == 5 and set(tips) <= {t.id for t in TIPS}
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response.usage.calls == 5


async def test_same_request_proposes_the_same(proposer: tuple[_Process, str]) -> None:
    _, address = proposer
    first = await _propose(address, _proto_request(num_candidates=3, seed=11))
    second = await _propose(address, _proto_request(num_candidates=3, seed=11))
    assert [(p.instruction, p.tip) for p in first.instructions] == \
        [(p.instruction, p.tip) for p in second.instructions]
    assert len(first.instructions) == 3


async def test_health_and_reflection(proposer: tuple[_Process, str]) -> None:
    _, address = proposer
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service),
                                       timeout=5.0)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5.0)
        names = []
        async for answer in call:
            names = [s.name for s in answer.list_services_response.service]
            break
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


async def test_unknown_provider_is_invalid_argument(proposer: tuple[_Process, str]) -> None:
    _, address = proposer
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _propose(address, _proto_request("nosuchprovider"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nosuchprovider" in (caught.value.details() or "")
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "UNKNOWN_PROVIDER"
    assert info.metadata["provider"] == "nosuchprovider"


async def test_invalid_request_is_invalid_argument(proposer: tuple[_Process, str]) -> None:
    _, address = proposer
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _propose(address, _proto_request(num_candidates=0))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "num_candidates" in (caught.value.details() or "")


async def test_model_server_down_is_unavailable(proposer: tuple[_Process, str]) -> None:
    process, address = proposer
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _propose(address, _proto_request("down", num_candidates=2))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    details = caught.value.details() or ""
    assert "'down'" in details and "cannot connect" in details, details
    # The key given to the provider never reaches a log line or an error.
    assert "sk-test-secret" not in details
    assert "sk-test-secret" not in process.log_path.read_text(errors="replace")


def test_stops_cleanly_on_sigterm(model_url: str, log_dir: Path) -> None:
    process, _ = _start_proposer(model_url, log_dir, name="proposer-sigterm")
    try:
        assert process.stop(grace=10.0) == 0, process.log_tail()
        assert '"proposer service stopped"' in process.log_path.read_text()
    finally:
        process.stop()


# ------------------------------------------------------------------ reply shapes, real service

#: What the scripted proposer model answers, by the tip text in the call's user message: the
#: shapes real models send.
GOOD = ["Read the customer's message and answer with the one intent label that fits it.",
        "Name the single intent of the message, choosing only from the listed labels.",
        "Decide which banking problem the customer describes, then give its intent label.",
        "You are a banking support expert. Give the message's intent label and nothing else."]
SHAPES = {
    "none": json.dumps({"instructions": GOOD[:2]}),           # a JSON list: two candidates
    "creative": "I'm ready to help! What task can you describe?",  # a question back
    "simple": "## Task\nClassify a customer-support message.\n## Scored examples\nInput: hi",
    "description": "```json\n" + json.dumps([GOOD[2]]) + "\n```",  # fenced JSON
    "high_stakes": f'"{BASELINE}"',                            # the baseline, quoted
    "persona": "Sure! Here's a new instruction:\n\n" + GOOD[3],
}
SUMMARY = "The messages are short questions from bank customers, mostly about their cards."
#: What each tip's reply comes to: kept instructions, or the reason it is rejected.
OUTCOMES: dict[str, list[str] | str] = {
    "none": GOOD[:2], "creative": "question", "simple": "echo", "description": [GOOD[2]],
    "high_stakes": "near_duplicate_of_baseline", "persona": [GOOD[3]]}


def _script(**extra: object) -> dict[str, Any]:
    tip_text = {t.id: t.text for t in TIPS}
    return {"rules": [{"contains": "Write two or three sentences about this data",
                       "reply": json.dumps({"summary": SUMMARY})},
                      *({"contains": tip_text[tip], "reply": reply}
                        for tip, reply in SHAPES.items())],
            "default": "Answer.", **extra}


def _scripted(log_dir: Path, name: str, **extra: object) -> tuple[_Process, str, Path]:
    script = log_dir / f"{name}.json"
    script.write_text(json.dumps(_script(**extra)))
    record = log_dir / f"{name}.jsonl"
    port = _free_port()
    process = _spawn(name, [sys.executable, "-m", "tests.fakes.scripted_model", "--port",
                            str(port), "--script", str(script), "--record", str(record)],
                     _clean_env(), log_dir)
    _wait_http_ok(f"http://127.0.0.1:{port}/health", process)
    return process, f"http://127.0.0.1:{port}/v1", record


@dataclass
class _Scripted:
    address: str
    proposer: _Process
    record: Path
    refusing_record: Path


@pytest.fixture(scope="module")
def scripted(log_dir: Path) -> Iterator[_Scripted]:
    """The proposer service over two scripted models: `local` answers the shapes above;
    `plainonly` answers the same but refuses `response_format` with a 400."""
    model, url, record = _scripted(log_dir, "scripted-model")
    refusing, refusing_url, refusing_record = _scripted(
        log_dir, "refusing-model", refuse_response_format=True)
    try:
        proposer, address = _start_proposer(url, log_dir, "proposer-scripted",
                                            MIPRO_PROVIDER_PLAINONLY_BASE_URL=refusing_url)
        try:
            yield _Scripted(address, proposer, record, refusing_record)
        finally:
            proposer.stop()
    finally:
        model.stop()
        refusing.stop()


def _expected(seed: int, calls: int) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """The candidates and rejection counts the scripted shapes must give for 6 candidates:
    six calls, then one refill pass for the missing ones, results in call order."""
    tips = [t.id for t in assign_tips(seed, calls)]
    kept: list[tuple[str, str]] = []
    rejected: dict[str, int] = {}
    first = [(tip, OUTCOMES[tip]) for tip in tips[:6]]
    refill = [(tip, OUTCOMES[tip]) for tip in tips[6:]]
    for batch in (first, refill):
        lists = [(tip, o) for tip, o in batch if isinstance(o, list)]
        for _, outcome in batch:
            if isinstance(outcome, str):
                rejected[outcome] = rejected.get(outcome, 0) + 1
        for position in range(2):
            for tip, outcome in lists:
                if position < len(outcome):
                    if any(text == outcome[position] for text, _ in kept):
                        rejected["near_duplicate"] = rejected.get("near_duplicate", 0) + 1
                    else:
                        kept.append((outcome[position], tip))
    return kept, rejected


async def test_reply_shapes_through_the_real_service(scripted: _Scripted) -> None:
    request = _proto_request(num_candidates=6, seed=5)
    request.summarize_dataset = True
    response = await _propose(scripted.address, request)
    kept = [(p.instruction, p.tip) for p in response.instructions]
    # Three of the six calls' replies hold instructions (the JSON list two): four candidates;
    # one refill pass of two calls for the missing two gets the same tips' replies again.
    calls = 6 + 2
    expected_kept, expected_rejected = _expected(5, calls)
    assert kept == expected_kept and len(kept) == 4
    assert set(GOOD[:2]) <= {text for text, _ in kept}  # the JSON list's two, separately
    assert dict(response.rejected) == expected_rejected
    assert response.rejected["question"] >= 1 and response.rejected["echo"] >= 1
    assert response.duplicates_dropped == sum(
        n for reason, n in response.rejected.items() if reason.startswith("near_duplicate"))
    assert response.dataset_summary == SUMMARY
    assert response.usage.calls == 1 + calls and response.plain_text_fallbacks == 0
    asked = [json.loads(line) for line in scripted.record.read_text().splitlines()]
    assert all(a["response_format"]["type"] == "json_schema" for a in asked)
    assert all(f"## Dataset summary\n{SUMMARY}" in a["user"] for a in asked
               if "Write two or three" not in a["user"])
    # The proposer's structured log line carries the reasons.
    lines = [json.loads(line) for line in
             scripted.proposer.log_path.read_text().splitlines() if line.startswith("{")]
    ready = [line for line in lines if line.get("event") == "proposals ready"
             and line.get("job_id") == "pl_proposer_test"]
    assert ready and ready[-1]["rejected"] == expected_rejected
    assert any(line.get("event") == "reply rejected" and line.get("reason") == "question"
               for line in lines)


async def test_a_provider_refusing_response_format_is_asked_in_plain_text(
        scripted: _Scripted) -> None:
    response = await _propose(scripted.address, _proto_request("plainonly", num_candidates=2,
                                                               seed=3))
    assert len(response.instructions) >= 1
    assert response.plain_text_fallbacks >= 1
    asked = [json.loads(line) for line in scripted.refusing_record.read_text().splitlines()]
    assert [a["status"] for a in asked if a["response_format"]] == [400] * len(
        [a for a in asked if a["response_format"]])
    assert any(a["response_format"] is None and a["status"] == 200 for a in asked)
    again = await _propose(scripted.address, _proto_request("plainonly", num_candidates=2,
                                                            seed=4))
    assert again.plain_text_fallbacks == 0  # remembered: no second refusal
