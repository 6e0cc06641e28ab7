"""The simulated model as its clients see it: a real server process, spoken to over HTTP.

`python -m mipro.simulated_model` runs as a subprocess on a free 127.0.0.1 port and the
tests talk to it with `openai.AsyncOpenAI` (and httpx for raw shapes): the tool-call and
usage shape, determinism, accuracy that follows the instruction, proposals in the
proposer's meta-prompt format, OpenAI-style 400s, and the `--record` file.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
)

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "examples" / "support_intents" / "dataset.jsonl"
LABELS = [
    "card_arrival", "lost_or_stolen_card", "failed_transfer", "refund_request", "change_pin",
    "exchange_rate", "top_up_failed", "close_account", "unrecognised_charge",
    "update_personal_details",
]
BASELINE = "You are a helpful assistant. Classify the customer's message."
LISTED = "Classify the message. Answer with one of: " + ", ".join(LABELS) + "."
EXPLAINED = (
    "Classify the banking customer's message. card_arrival means a card they ordered has not "
    "come yet. lost_or_stolen_card means their card is lost or was stolen. failed_transfer "
    "means money they sent to someone did not go through. refund_request means they want a "
    "refund from a shop or merchant. change_pin is about their PIN code. exchange_rate is "
    "about currency conversion. top_up_failed means adding money to their account failed. "
    "close_account means they want to leave and close the account. unrecognised_charge means "
    "a payment they do not recognise. update_personal_details means changing their name, "
    "address, phone or email."
)
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Server:
    url: str
    record: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("simulated_model")
    port = _free_port()
    record = tmp / "record.jsonl"
    log_path = tmp / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mipro.simulated_model", "--host", "127.0.0.1",
             "--port", str(port), "--record", str(record)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MIPRO_LOG_FORMAT": "json"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the simulated model exited: {log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the simulated model did not start: {log_path.read_text()}")
            time.sleep(0.1)
        assert "simulated" in log_path.read_text()  # the startup log says what it is
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
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="simulated", max_retries=0,
                              timeout=10.0)


def _tool(labels: list[str] = LABELS,
          name: str = "classify_intent") -> ChatCompletionFunctionToolParam:
    return {"type": "function", "function": {
        "name": name, "description": "Report the intent of the customer's message.",
        "parameters": {"type": "object",
                       "properties": {"intent": {"type": "string", "enum": labels}},
                       "required": ["intent"], "additionalProperties": False}}}


async def _classify(client: openai.AsyncOpenAI, instruction: str, text: str, *,
                    seed: int | None = None, temperature: float = 0.0) -> str:
    response = await client.chat.completions.create(
        model="gpt-4o-mini", temperature=temperature, tools=[_tool()],
        tool_choice="required", max_tokens=128, seed=openai.omit if seed is None else seed,
        messages=[{"role": "system", "content": instruction}, {"role": "user", "content": text}])
    return str(json.loads(_function_call(response).function.arguments)["intent"])


def _function_call(response: ChatCompletion) -> ChatCompletionMessageFunctionToolCall:
    """The one function call of the first choice."""
    calls = response.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert isinstance(calls[0], ChatCompletionMessageFunctionToolCall)
    return calls[0]


def _dataset() -> list[dict[str, str]]:
    return [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]


async def test_tool_call_has_the_openai_shape_and_usage(server: Server) -> None:
    async with _client(server) as client:
        response = await client.chat.completions.create(
            model="any-model-name", temperature=0.0, tools=[_tool()],
            tool_choice="required",
            messages=[{"role": "system", "content": EXPLAINED},
                      {"role": "user", "content": "when will my new card arrive?"}])
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == "any-model-name"
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = _function_call(response)
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "classify_intent"
    assert json.loads(call.function.arguments) == {"intent": "card_arrival"}
    usage = response.usage
    assert usage is not None
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_named_tool_choice_and_plain_chat(server: Server) -> None:
    async with _client(server) as client:
        named = await client.chat.completions.create(
            model="m", tools=[_tool(), _tool(["yes", "no"], "confirm")],
            tool_choice={"type": "function", "function": {"name": "confirm"}},
            messages=[{"role": "user", "content": "yes please"}])
        plain = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello, who are you?"}])
    call = _function_call(named)
    assert call.function.name == "confirm"
    assert json.loads(call.function.arguments)["intent"] in ("yes", "no")
    assert plain.choices[0].finish_reason == "stop"
    assert "simulated model" in (plain.choices[0].message.content or "")
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        assert (await http.get("/health")).status_code == 200
        models = (await http.get("/v1/models")).json()
        assert models["object"] == "list" and models["data"][0]["object"] == "model"
        # The path without /v1 answers too.
        raw = await http.post("/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert raw.status_code == 200 and raw.json()["object"] == "chat.completion"


async def test_same_request_same_answer_and_seed_changes_it(server: Server) -> None:
    texts = [record["text"] for record in _dataset()[:12]]
    async with _client(server) as client:
        first = [await _classify(client, BASELINE, t, seed=1) for t in texts]
        again = [await _classify(client, BASELINE, t, seed=1) for t in texts]
        other = [await _classify(client, BASELINE, t, seed=2) for t in texts]
    assert first == again
    assert first != other


async def test_accuracy_follows_the_instruction(server: Server) -> None:
    records = _dataset()[1::7][:40]
    semaphore = asyncio.Semaphore(16)

    async def accuracy(client: openai.AsyncOpenAI, instruction: str) -> float:
        async def one(record: dict[str, str]) -> bool:
            async with semaphore:
                return await _classify(client, instruction, record["text"]) == record["label"]
        results = await asyncio.gather(*(one(record) for record in records))
        return sum(results) / len(results)

    async with _client(server) as client:
        baseline = await accuracy(client, BASELINE)
        listed = await accuracy(client, LISTED)
        explained = await accuracy(client, EXPLAINED)
    assert baseline < listed < explained < 1.0, (baseline, listed, explained)
    assert explained >= 0.7


def _meta_prompt(earlier: str | None = None, *,
                 tip: str = "No particular style.") -> str:
    examples = "\n\n".join(
        f"Input: {text}\nOutput: {json.dumps({'intent': label})}\nScore: {score}"
        for text, label, score in (
            ("my card still has not been delivered", "card_arrival", "1.00"),
            ("someone pinched my wallet", "lost_or_stolen_card", "1.00"),
            ("the rate you gave me was awful", "refund_request", "0.00"),
        ))
    sections = [
        "## Task\nName: support_intents\nDescription: Classify a customer-support message "
        "from a banking app into one of 10 intents.\nLabels: " + ", ".join(LABELS),
        f"## Current instruction\n{BASELINE}",
        f"## Scored examples\n{examples}",
    ]
    if earlier is not None:
        sections.append(f"## Earlier candidates\n{earlier}")
    sections += [
        f"## Tip\n{tip}",
        "## Write\nWrite one new instruction for this task that will make the model score "
        "higher. Reply with the instruction only.",
    ]
    return "\n\n".join(sections)


async def _propose(client: openai.AsyncOpenAI, prompt: str, seed: int) -> str:
    response = await client.chat.completions.create(
        model="gpt-4o-mini", temperature=0.7, seed=seed, max_tokens=512,
        messages=[{"role": "system", "content": "You write instructions."},
                  {"role": "user", "content": prompt}])
    assert response.choices[0].finish_reason == "stop"
    return response.choices[0].message.content or ""


def _explained_labels(instruction: str) -> set[str]:
    return set(re.findall(r"- ([a-z_]+): \S", instruction))


async def test_proposals_are_instructions_that_vary_with_the_seed(server: Server) -> None:
    prompt = _meta_prompt(tip="Make sure the instruction describes the task and every label "
                              "in detail.")
    async with _client(server) as client:
        first = await _propose(client, prompt, seed=7)
        again = await _propose(client, prompt, seed=7)
        other = await _propose(client, prompt, seed=8)
    assert first == again
    assert first != other
    for instruction in (first, other):
        assert "##" not in instruction and "Score:" not in instruction
        assert all(label in instruction for label in LABELS)
        assert _explained_labels(instruction) == set(LABELS)  # the tip asks for every label
    # The instruction it wrote is one the classifier does well with.
    records = _dataset()[1::7][:20]
    async with _client(server) as client:
        right = [await _classify(client, first, r["text"]) == r["label"] for r in records]
    assert sum(right) / len(right) >= 0.6


async def test_proposal_builds_on_the_best_earlier_candidate(server: Server) -> None:
    best = ("Sort each message. Labels: - card_arrival: the parcel with the card is late. "
            "- lost_or_stolen_card - failed_transfer - refund_request")
    earlier = (f"Score 0.80 on 3 seeds: {best}\n"
               "Score 0.40 on 3 seeds: Pick a label. refund_request: anything about rates.")
    async with _client(server) as client:
        instruction = await _propose(
            client, _meta_prompt(earlier, tip="Keep the instruction short and simple."), seed=3)
    assert "card_arrival: the parcel with the card is late" in instruction
    assert len(_explained_labels(instruction)) >= 2
    assert "anything about rates" not in instruction


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 3},
         "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [_tool()],
          "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ],
    ids=["empty-messages", "no-messages", "bad-role", "no-model", "temperature", "tool-choice"],
)
async def test_malformed_requests_get_openai_400s(server: Server, body: dict[str, Any],
                                                  param: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert isinstance(error["message"], str) and error["message"]


async def test_openai_client_raises_bad_request(server: Server) -> None:
    async with _client(server) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=[])
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "messages"


async def test_record_file_shows_what_reached_the_model(server: Server) -> None:
    marker = "Record-check instruction: card_arrival means the card is late."
    async with _client(server) as client:
        label = await _classify(client, marker, "my card has not arrived")
        await client.chat.completions.create(
            model="plain-model", messages=[{"role": "user", "content": "record me"}])
    records = [json.loads(line) for line in server.record.read_text().splitlines()]
    tool_record = next(r for r in records if r["system"] == marker)
    assert tool_record == {"model": "gpt-4o-mini", "system": marker,
                           "user": "my card has not arrived", "has_tools": True,
                           "answer": label}
    plain = next(r for r in records if r["user"] == "record me")
    assert plain["system"] is None and plain["has_tools"] is False
    assert plain["model"] == "plain-model" and "simulated" in plain["answer"]
