"""End to end: the documented REST job, through real Envoy, runs MIPRO offline on the example.

Real processes only: Envoy, the orchestrator and proposer gRPC servers, the example task app
and the fake model server (see conftest.py). The fake's answers are noise, so the checks are
that the job reports what the task app scored, never that it found a better instruction.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.json_format import ParseDict

from mipro.v1 import jobs_pb2, jobs_pb2_grpc

from ._recorded import job_results, mean_reward, winner
from .conftest import REPO_ROOT, RunningStack

JOBS = "/api/policy-optimization/online/jobs"
API_MD = REPO_ROOT.parent / "shared" / "spec" / "api.md"
JOB_TIMEOUT = 120.0


def documented_job(task_app_url: str) -> dict[str, Any]:
    """The create request exactly as `api.md` documents it, pointed at the example task app."""
    job = json.loads((REPO_ROOT / "examples" / "support_intents" / "job.json").read_text())
    job["policy_optimization"]["task_app_url"] = task_app_url
    return job


def test_example_job_is_the_documented_request() -> None:
    if not API_MD.exists():
        pytest.skip("../shared/spec/api.md is not beside this checkout")
    block = re.search(r"### Create: request.*?```json\n(.*?)```", API_MD.read_text(), re.S)
    assert block is not None
    ours = json.loads((REPO_ROOT / "examples" / "support_intents" / "job.json").read_text())
    assert ours == json.loads(block.group(1))


def _client(stack: RunningStack, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key or stack.api_key}"}
    return httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=30.0)


async def _register_env_key(stack: RunningStack, value: str | None = None) -> None:
    async with _client(stack) as client:
        response = await client.post("/api/v1/env-keys", json={
            "name": "ENVIRONMENT_API_KEY", "value": value or stack.environment_key})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "ENVIRONMENT_API_KEY"
    assert (value or stack.environment_key) not in response.text  # never echoed


async def _poll_until_done(client: httpx.AsyncClient, job_id: str,
                           timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"{JOBS}/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout} s"
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
async def rest_job(running_stack: RunningStack) -> dict[str, Any]:
    await _register_env_key(running_stack)
    async with _client(running_stack) as client:
        response = await client.post(JOBS, json=documented_job(running_stack.task_app_url))
        assert response.status_code == 200, response.text
        created = response.json()
        assert set(created) == {"job_id", "status"}
        assert created["job_id"].startswith("pl_")
        assert created["status"] in ("running", "queued")
        return await _poll_until_done(client, created["job_id"])


def assert_reports_the_recorded_winner(stack: RunningStack, job: dict[str, Any]) -> None:
    """The job's winner and scores are what the README's rule makes of the rewards the task
    app recorded for it."""
    val_seeds = job["policy_optimization"]["mipro"]["val_seeds"]
    results = job_results(stack.task_app_record, job["job_id"], val_seeds)
    best = winner(results, val_seeds)
    assert best is not None
    assert job["candidates"][0]["index"] == best
    assert job["best_score"] == pytest.approx(mean_reward(results, best), abs=1e-9)
    assert job["baseline_score"] == pytest.approx(mean_reward(results, 0), abs=1e-9)
    for candidate in job["candidates"]:
        expected = mean_reward(results, candidate["index"])
        assert candidate["mean_score"] == pytest.approx(expected, abs=1e-9), candidate["index"]


async def test_rest_job_succeeds_and_reports_the_recorded_winner(
        running_stack: RunningStack, rest_job: dict[str, Any]) -> None:
    job = rest_job
    assert job["status"] == "succeeded", job.get("error")
    assert isinstance(job["best_score"], float | int)
    assert job["best_score"] >= job["baseline_score"]
    assert_reports_the_recorded_winner(running_stack, job)
    assert job["best_instruction"]
    baseline = "You are a helpful assistant. Classify the customer's message."
    assert job["baseline_instruction"] == baseline
    assert job["rollouts_failed"] == 0 and job["rollouts_completed"] >= 5 + 3 * 2
    assert job["termination_reason"] == "completed"
    assert job["policy_tokens"] > 0 and job["proposer_tokens"] > 0
    # The leaderboard is best first and every candidate was scored on every validation seed.
    scores = [c["mean_score"] for c in job["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert all(c["seeds_scored"] == 3 for c in job["candidates"])
    assert job["candidates"][0]["instruction"] == job["best_instruction"]
    assert {c["index"] for c in job["candidates"]} >= {0, 1}
    # The settings are echoed with their defaults.
    mipro = job["policy_optimization"]["mipro"]
    assert mipro["val_seeds"] == [100, 101, 102] and mipro["num_candidates"] == 6


async def test_rest_job_events_tell_the_story(running_stack: RunningStack,
                                              rest_job: dict[str, Any]) -> None:
    async with _client(running_stack) as client:
        page = (await client.get(f"{JOBS}/{rest_job['job_id']}/events",
                                 params={"since_seq": 0, "limit": 1000})).json()
        async with client.stream("GET", f"{JOBS}/{rest_job['job_id']}/events/stream") as stream:
            assert stream.status_code == 200
            lines = [json.loads(line) async for line in stream.aiter_lines() if line.strip()]
    events = page["events"]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1))
    assert page["next_seq"] == seqs[-1]
    types = [e["type"] for e in events]
    for expected in ("job.started", "preflight.passed", "bootstrap.progress",
                     "bootstrap.completed", "proposals.received", "candidate.scored",
                     "best.updated", "job.succeeded"):
        assert expected in types, expected
    assert events[-1]["terminal"] is True and types[-1] == "job.succeeded"
    assert [e["seq"] for e in lines] == seqs  # the live stream replays and ends with the end


async def test_task_app_and_model_saw_the_contract(running_stack: RunningStack,
                                                   rest_job: dict[str, Any]) -> None:
    records = [json.loads(line) for line in running_stack.task_app_record.read_text().splitlines()]
    ours = [r for r in records if r["run_id"].startswith(rest_job["job_id"])]
    assert len(ours) == rest_job["rollouts_completed"] + rest_job["rollouts_failed"]
    for record in ours:
        assert record["auth_headers"] == {"x-api-key": True, "x-api-keys": True,
                                          "authorization": True}
        assert {"run_id", "trace_correlation_id", "env", "policy", "ops", "record", "on_done",
                "safety", "mode"} <= set(record["body_keys"])
        assert record["trace_correlation_id"] == record["run_id"]
        # On the inference gateway, which carried the model calls below.
        assert record["inference_url"].startswith(running_stack.inference_gateway_url + "/v1/")
        assert f"cid={record['run_id']}" in record["inference_url"]
    # The model calls went through the interceptor with each candidate's instruction.
    seen = {json.loads(line)["system"]
            for line in running_stack.model_record.read_text().splitlines()}
    for candidate in rest_job["candidates"]:
        assert candidate["instruction"] in seen
    # The proposer service was called over gRPC for this job.
    assert rest_job["job_id"] in (running_stack.log_dir / "proposer.log").read_text()


async def test_grpc_job_succeeds_the_same_way(running_stack: RunningStack) -> None:
    await _register_env_key(running_stack)
    request = ParseDict(documented_job(running_stack.task_app_url), jobs_pb2.CreateJobRequest())
    metadata = (("authorization", f"Bearer {running_stack.api_key}"),)
    async with grpc.aio.insecure_channel(running_stack.grpc_address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        created = await stub.CreateJob(request, metadata=metadata, timeout=10)
        assert created.job_id.startswith("pl_")
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            job = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=created.job_id),
                                    metadata=metadata, timeout=10)
            if job.status in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
    assert job.status == "succeeded", job.error
    assert job.HasField("best_score") and job.best_score >= job.baseline_score
    assert job.best_instruction
    val_seeds = list(job.policy_optimization.mipro.val_seeds)
    results = job_results(running_stack.task_app_record, job.job_id, val_seeds)
    assert job.candidates[0].index == winner(results, val_seeds)
    assert job.best_score == pytest.approx(mean_reward(results, job.candidates[0].index),
                                           abs=1e-9)


async def test_x_api_key_header_is_accepted(running_stack: RunningStack) -> None:
    async with httpx.AsyncClient(base_url=running_stack.gateway_url, timeout=10) as client:
        response = await client.get(JOBS, headers={"X-API-Key": running_stack.api_key})
    assert response.status_code == 200
    assert "jobs" in response.json()


# -- errors -----------------------------------------------------------------------------------

def _field_violations(body: dict[str, Any]) -> list[str]:
    return [v["field"] for d in body.get("details", []) for v in d.get("fieldViolations",
            d.get("field_violations", []))]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda j: j["policy_optimization"]["mipro"].pop("val_seeds"),
         "policy_optimization.mipro.val_seeds"),
        (lambda j: j["policy_optimization"].pop("task_app_url"),
         "policy_optimization.task_app_url"),
        (lambda j: j["policy_optimization"]["mipro"]["proposer"].pop("model"),
         "policy_optimization.mipro.proposer.model"),
        (lambda j: j["policy_optimization"]["mipro"].update(mode="online"),
         "policy_optimization.mipro.mode"),
        (lambda j: j["policy_optimization"]["mipro"].update(bootstrap_train_seeds=[1, -2]),
         "policy_optimization.mipro.bootstrap_train_seeds[1]"),
        (lambda j: j["policy_optimization"]["policy"].update(provider="nosuchprovider"),
         "policy_optimization.policy.provider"),
    ],
    ids=["missing-val-seeds", "missing-task-app-url", "missing-proposer-model", "wrong-mode",
         "negative-seed", "unknown-provider"],
)
async def test_bad_request_is_400_naming_the_field(running_stack: RunningStack, mutate: Any,
                                                   field: str) -> None:
    job = documented_job(running_stack.task_app_url)
    mutate(job)
    async with _client(running_stack) as client:
        response = await client.post(JOBS, json=job)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert field in body["message"]
    assert field in _field_violations(body)


async def test_malformed_json_is_400_with_json_body(running_stack: RunningStack) -> None:
    async with _client(running_stack) as client:
        response = await client.post(JOBS, content=b'{"policy_optimization": {',
                                     headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["message"]


async def test_unknown_job_is_404(running_stack: RunningStack) -> None:
    async with _client(running_stack) as client:
        response = await client.get(f"{JOBS}/pl_doesnotexist")
    assert response.status_code == 404
    assert "pl_doesnotexist" in response.json()["message"]


async def test_another_owner_cannot_see_a_job(running_stack: RunningStack,
                                              rest_job: dict[str, Any]) -> None:
    async with _client(running_stack, key="mk_other_owner_key") as client:
        response = await client.get(f"{JOBS}/{rest_job['job_id']}")
        listing = await client.get(JOBS)
    assert response.status_code == 404
    assert rest_job["job_id"] not in listing.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"X-API-Key": "wrong"}], ids=["missing", "wrong", "x-wrong"])
async def test_missing_or_wrong_key_is_401(running_stack: RunningStack,
                                           headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=running_stack.gateway_url, timeout=10) as client:
        response = await client.post(JOBS, json=documented_job(running_stack.task_app_url),
                                     headers=headers)
    assert response.status_code == 401
    assert response.json()["message"]


async def test_task_app_down_fails_the_job_within_seconds(running_stack: RunningStack) -> None:
    await _register_env_key(running_stack)
    dead_url = "http://127.0.0.1:9"  # the discard port: nothing listens there
    started = time.monotonic()
    async with _client(running_stack) as client:
        response = await client.post(JOBS, json=documented_job(dead_url))
        assert response.status_code == 200, response.text
        job = await _poll_until_done(client, response.json()["job_id"], timeout=30)
    assert job["status"] == "failed"
    assert dead_url in job["error"] and "task app" in job["error"]
    assert time.monotonic() - started < 15
    assert job["rollouts_completed"] == 0 and "best_score" not in job


async def test_wrong_environment_key_fails_with_the_cause(running_stack: RunningStack) -> None:
    async with _client(running_stack, key="mk_other_owner_key") as client:
        response = await client.post("/api/v1/env-keys", json={
            "name": "ENVIRONMENT_API_KEY", "value": "not-the-task-apps-key"})
        assert response.status_code == 200
        response = await client.post(JOBS, json=documented_job(running_stack.task_app_url))
        job = await _poll_until_done(client, response.json()["job_id"], timeout=30)
    assert job["status"] == "failed"
    assert "environment key" in job["error"]
    assert "not-the-task-apps-key" not in json.dumps(job)


async def test_cancel_a_finished_job_is_refused(running_stack: RunningStack,
                                                rest_job: dict[str, Any]) -> None:
    async with _client(running_stack) as client:
        response = await client.post(f"{JOBS}/{rest_job['job_id']}/cancel", json={})
    assert response.status_code == 400
    assert "already finished" in response.json()["message"]


async def test_secrets_never_reach_logs(running_stack: RunningStack,
                                        rest_job: dict[str, Any]) -> None:
    for log in Path(running_stack.log_dir).glob("*.log"):
        text = log.read_text(errors="replace")
        assert running_stack.environment_key not in text, log.name
        assert running_stack.api_key not in text, log.name
