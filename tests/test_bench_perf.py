"""The performance benchmark's own servers speak their contracts (not the benchmark itself).

`bench.fake_model` must answer like an OpenAI-compatible chat endpoint, as the openai SDK
parses it; `bench.fake_task_app` must serve the task-app contract as the orchestrator's own
task-app client calls it, making exactly one chat call per rollout to its `inference_url`.
Both run as real processes, as `make bench-perf` runs them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import openai
import pytest
import pytest_asyncio

from bench import _http, perf
from bench._perf_stack import OwnProcess, start_process, wait_ready
from mipro._retry import RetryPolicy
from mipro._stack import free_port
from orchestrator._errors import TaskAppRejected
from orchestrator._task_app import RolloutCall, TaskAppClient

ENVIRONMENT_KEY = "env_bench_test_key"


async def _server(tmp: Path, name: str, module: str, *args: str,
                  env: dict[str, str] | None = None,
                  ready_path: str = "/health") -> tuple[OwnProcess, str]:
    port = free_port()
    process = await start_process(name, module, ["--port", str(port), *args],
                                  dict(env or {}), tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url + ready_path, process)
    except BaseException:
        await process.stop()
        raise
    return process, url


@pytest_asyncio.fixture
async def model_url(tmp_path: Path) -> AsyncIterator[str]:
    process, url = await _server(tmp_path, "model", "bench.fake_model")
    try:
        yield url
    finally:
        await process.stop()


def _task_app_env() -> dict[str, str]:
    return {**os.environ, "ENVIRONMENT_API_KEY": ENVIRONMENT_KEY}


@pytest_asyncio.fixture
async def task_app_url(tmp_path: Path) -> AsyncIterator[str]:
    process, url = await _server(tmp_path, "task_app", "bench.fake_task_app",
                                 env=_task_app_env(), ready_path="/")
    try:
        yield url
    finally:
        await process.stop()


class RecordingModel:
    """An in-process chat endpoint that records every request; answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[_http.Request] = []

    def __call__(self, request: _http.Request) -> _http.Response:
        self.requests.append(request)
        if self.status != 200:
            return _http.json_response(self.status, {"error": {"message": "down"}})
        return _http.json_response(200, {
            "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "fixed reply"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})


def _rollout_payload(seed: int, inference_url: str) -> RolloutCall:
    """One rollout, as the orchestrator's task-app client sends it (the v1 request)."""
    return RolloutCall(rollout_id=f"r{seed}", seed=seed, candidate_index=0,
                       inference_url=inference_url, model="bench-model", provider="bench",
                       timeout_seconds=10.0, env_name="bench")


def _client(http: aiohttp.ClientSession, url: str, key: str = ENVIRONMENT_KEY) -> TaskAppClient:
    return TaskAppClient(url, key, http=http, retry=RetryPolicy(max_attempts=1),
                         rng=random.Random(0))


async def test_fake_model_answers_chat_completions_as_the_openai_sdk_reads_them(
        model_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=model_url + "/v1", api_key="unused", max_retries=0)
    try:
        messages: list[dict[str, str]] = [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Seed 1"}]
        first = await client.chat.completions.create(model="bench-model",
                                                     messages=messages)  # type: ignore[arg-type]
        again = await client.chat.completions.create(model="bench-model",
                                                     messages=messages)  # type: ignore[arg-type]
        other = await client.chat.completions.create(
            model="bench-model",
            messages=[messages[0], {"role": "user", "content": "Seed 2"}])  # type: ignore[list-item]
        models = await client.models.list()
    finally:
        await client.close()
    text = first.choices[0].message.content
    assert text and len(text.split()) >= 5
    assert again.choices[0].message.content == text  # deterministic per request
    assert other.choices[0].message.content != text  # distinct per request
    assert first.usage is not None and first.usage.prompt_tokens > 0
    assert first.usage.completion_tokens > 0
    assert [m.id for m in models.data] == ["bench-model"]


async def test_fake_model_rejects_a_body_without_messages(model_url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(model_url + "/v1/chat/completions", json={"model": "m"})
    assert response.status_code == 400
    assert "messages" in response.json()["error"]["message"]


async def test_fake_task_app_makes_one_chat_call_per_rollout_to_the_inference_url(
        task_app_url: str) -> None:
    model = RecordingModel()
    server = await _http.serve(model, "127.0.0.1", 0)
    inference = f"http://127.0.0.1:{server.port}/v1/t_trial?cid=r7"
    try:
        async with aiohttp.ClientSession() as http:
            client = _client(http, task_app_url)
            await client.check_health()
            info = await client.task_info()
            first = await client.rollout(_rollout_payload(7, inference))
            again = await client.rollout(_rollout_payload(7, inference))
            others = [await client.rollout(_rollout_payload(seed, inference))
                      for seed in (8, 9, 10)]
    finally:
        await server.close()
    assert info is not None and "taskset" in info
    assert first.failure_cause == "" and first.reward is not None
    assert 0.0 <= first.reward < 1.0
    assert again.reward == first.reward  # same seed, same reply: same reward
    assert len({first.reward, *(o.reward for o in others)}) > 1  # the seed matters
    assert len(model.requests) == 5  # one model call per rollout
    call = model.requests[0]
    assert call.method == "POST" and call.target == "/v1/t_trial/chat/completions?cid=r7"
    assert call.headers["x-api-key"] == ENVIRONMENT_KEY
    body = json.loads(call.body)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["model"] == "bench-model"


async def test_fake_task_app_rejects_a_wrong_key_and_fails_when_the_model_does(
        task_app_url: str) -> None:
    model = RecordingModel(status=500)
    server = await _http.serve(model, "127.0.0.1", 0)
    inference = f"http://127.0.0.1:{server.port}/v1/t_trial?cid=r1"
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(TaskAppRejected, match="rejected the registered environment key"):
                await _client(http, task_app_url, key="wrong").check_health()
            refused = await _client(http, task_app_url, key="wrong").rollout(
                _rollout_payload(1, inference))
            failed = await _client(http, task_app_url).rollout(
                _rollout_payload(1, inference))
    finally:
        await server.close()
    assert refused.reward is None and refused.failure_cause == "auth_rejected"
    assert failed.reward is None and failed.failure_cause == "http_502"
    assert "model answered 500" in failed.failure_detail


async def test_fake_task_app_latency_option_delays_each_answer(tmp_path: Path,
                                                               model_url: str) -> None:
    process, url = await _server(tmp_path, "slow_task_app", "bench.fake_task_app",
                                 "--latency-ms", "300", env=_task_app_env(), ready_path="/")
    try:
        async with aiohttp.ClientSession() as http:
            started = time.perf_counter()
            outcome = await _client(http, url).rollout(
                _rollout_payload(3, model_url + "/v1?cid=r3"))
            elapsed = time.perf_counter() - started
    finally:
        await process.stop()
    assert outcome.reward is not None
    assert elapsed >= 0.3


async def test_http_server_reads_chunked_bodies_and_keeps_connections_alive() -> None:
    seen: list[bytes] = []

    async def echo(request: _http.Request) -> _http.Response:
        await asyncio.sleep(0)
        seen.append(request.body)
        return _http.Response(200, request.body, "text/plain")

    server = await _http.serve(echo, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                     b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        await writer.drain()
        first = await reader.readuntil(b"hello world")
        second = await reader.readuntil(b"abc")
        writer.close()
        await writer.wait_closed()
    finally:
        await server.close()
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 11" in first
    assert second.startswith(b"HTTP/1.1 200 OK\r\n")  # the same connection, answered in order
    assert seen == [b"hello world", b"abc"]


def _cpu_row(run: int, planned: int, orchestrator_ms: float, rss_growth_mb: float
             ) -> perf.CpuRow:
    return perf.CpuRow(run=run, planned=planned, rollouts=planned, finished=True,
                       failed_rollouts=0, wall_seconds=1.0,
                       cpu_seconds={"orchestrator": orchestrator_ms * planned / 1000,
                                    "gateway": 0.0, "proposer": 0.0, "task_app": 0.0,
                                    "model": 0.0},
                       orchestrator_main_thread_seconds=0.0, rss_idle_mb=90.0,
                       rss_end_mb=90.0 + rss_growth_mb)


def test_cpu_figure_is_the_median_of_the_runs_and_flatness_compares_medians() -> None:
    # One slow run per size must not decide the figure: that is why each size runs thrice.
    rows = [_cpu_row(1, 1005, 1.30, 5.0), _cpu_row(1, 50005, 0.80, 43.0),
            _cpu_row(2, 1005, 0.90, 5.0), _cpu_row(2, 50005, 0.95, 41.0),
            _cpu_row(3, 1005, 0.80, 5.0), _cpu_row(3, 50005, 0.85, 42.0)]
    text = perf.render(perf.Results(cpu=rows))
    assert "| 1005 | 3 | **0.90** | 0.80 – 1.30 |" in text
    assert "| 50005 | 3 | **0.85** | 0.80 – 0.95 |" in text
    assert "at 50005 rollouts / at 1005: **0.94x**" in text
    # per 10k stored rollouts: the median of the runs' slopes (38, 36, 37 MB per 49k rollouts)
    assert f"| {perf._f(37.0 * 10_000 / 49_000, 1)} |" in text


def test_cpu_runs_flag_must_be_positive() -> None:
    assert perf.parse_args(["--cpu-runs", "5"]).cpu_runs == 5
    with pytest.raises(SystemExit):
        perf.parse_args(["--cpu-runs", "0"])
