"""Jobs survive crashes, restarts and reconnects: fault injection with real processes.

Each test here gets a stack of its own (see `launch_stack`), because it kills parts of it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from .conftest import RunningStack, launch_stack
from .test_end_to_end import JOBS, documented_job

#: A job long enough to interrupt: 5 candidates x 40 validation seeds after the bootstrap.
LONG_JOB: dict[str, Any] = {"val_seeds": list(range(100, 140)), "num_candidates": 4,
                            "max_concurrent": 4, "seed": 3}


@pytest_asyncio.fixture(loop_scope="session")
async def own_stack(tmp_path: Path) -> AsyncIterator[RunningStack]:
    running = await launch_stack(tmp_path)
    try:
        yield running
    finally:
        await asyncio.shield(running.stack.stop())


def _client(stack: RunningStack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.gateway_url, timeout=30.0,
                             headers={"Authorization": f"Bearer {stack.api_key}"})


async def _submit(stack: RunningStack, task_app_url: str | None = None, **mipro: Any) -> str:
    job = documented_job(task_app_url or stack.task_app_url)
    job["policy_optimization"]["mipro"].update(mipro)
    async with _client(stack) as client:
        key = await client.post("/api/v1/env-keys", json={
            "name": "ENVIRONMENT_API_KEY", "value": stack.environment_key})
        assert key.status_code == 200, key.text
        response = await client.post(JOBS, json=job)
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


async def _get(stack: RunningStack, job_id: str) -> dict[str, Any]:
    """GET the job, waiting through a gateway that is briefly without an orchestrator."""
    deadline = time.monotonic() + 30
    async with _client(stack) as client:
        while True:
            try:
                response = await client.get(f"{JOBS}/{job_id}")
                if response.status_code == 200:
                    return dict(response.json())
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the job API did not come back"
            await asyncio.sleep(0.2)


async def _wait(stack: RunningStack, job_id: str, *, until: Any, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = await _get(stack, job_id)
        if until(job):
            return job
        assert time.monotonic() < deadline, f"gave up waiting; job is {job['status']}"
        await asyncio.sleep(0.2)


def _finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def _mid_evaluation(job: dict[str, Any]) -> bool:
    return job["phase"] == "evaluate" and job["rollouts_completed"] >= 5 + 40


async def _events(stack: RunningStack, job_id: str) -> list[dict[str, Any]]:
    async with _client(stack) as client:
        page = (await client.get(f"{JOBS}/{job_id}/events", params={"limit": 1000})).json()
    return list(page["events"])


def _result(job: dict[str, Any]) -> tuple[Any, ...]:
    """What must not change when a job is interrupted and resumed."""
    return (job["best_score"], job["best_instruction"], job["baseline_score"],
            sorted((c["index"], c["instruction"], c["mean_score"], c["seeds_scored"])
                   for c in job["candidates"]))


def _completed_run_ids(stack: RunningStack, job_id: str) -> Counter[str]:
    """How many times the task app completed (scored) each rollout id of the job."""
    lines = stack.task_app_record.read_text().splitlines()
    return Counter(r["run_id"] for r in map(json.loads, lines)
                   if r["run_id"].startswith(job_id) and r["reward"] is not None)


async def _restart_orchestrator(stack: RunningStack, sig: signal.Signals) -> float:
    """Stops the orchestrator with `sig`, starts a new one; returns how long it took to exit."""
    process = stack.stack.process("orchestrator")
    started = time.monotonic()
    process.kill(sig)
    await process.wait(timeout=15)
    took = time.monotonic() - started
    await stack.stack.start_orchestrator()
    return took


async def test_kill_9_mid_evaluation_resumes_to_the_same_result(own_stack: RunningStack) -> None:
    reference_id = await _submit(own_stack, **LONG_JOB)
    reference = await _wait(own_stack, reference_id, until=_finished)
    assert reference["status"] == "succeeded", reference["error"]

    job_id = await _submit(own_stack, **LONG_JOB)
    await _wait(own_stack, job_id, until=_mid_evaluation)
    await _restart_orchestrator(own_stack, signal.SIGKILL)
    resumed = await _wait(own_stack, job_id, until=_finished)

    assert resumed["status"] == "succeeded", resumed["error"]
    assert resumed["resumes"] == 1
    assert _result(resumed) == _result(reference)
    # One dataset summary per job: the resumed job did not ask for its summary again.
    prompts = [json.loads(line)["user"] or ""
               for line in own_stack.model_record.read_text().splitlines()]
    assert sum("Write two or three sentences about this data" in p for p in prompts) == 2
    # The task app completed no rollout twice, except those in flight at the kill.
    repeats = [rid for rid, n in _completed_run_ids(own_stack, job_id).items() if n > 1]
    assert len(repeats) <= LONG_JOB["max_concurrent"], repeats
    events = await _events(own_stack, job_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("job.resumed") == 1
    assert events[-1]["type"] == "job.succeeded" and events[-1]["terminal"]
    assert sum(e["terminal"] for e in events) == 1


async def test_sigterm_exits_within_10s_and_the_job_resumes(own_stack: RunningStack) -> None:
    job_id = await _submit(own_stack, **LONG_JOB)
    await _wait(own_stack, job_id, until=_mid_evaluation)
    took = await _restart_orchestrator(own_stack, signal.SIGTERM)
    assert took < 10
    job = await _wait(own_stack, job_id, until=_finished)
    assert job["status"] == "succeeded", job["error"]
    assert job["resumes"] == 1


async def test_proposer_restart_mid_job_does_not_fail_it(own_stack: RunningStack) -> None:
    proposer = own_stack.stack.process("proposer")
    proposer.kill(signal.SIGKILL)
    await proposer.wait(timeout=10)
    job_id = await _submit(own_stack)  # it reaches the proposal phase with no proposer up
    await _wait(own_stack, job_id, until=lambda j: j["phase"] in ("propose", "evaluate", "done"))
    await asyncio.sleep(1.0)
    await own_stack.stack.start_proposer()
    job = await _wait(own_stack, job_id, until=_finished)
    assert job["status"] == "succeeded", job["error"]
    assert len(job["candidates"]) > 1


async def test_event_stream_reconnect_with_since_seq_misses_nothing(
        own_stack: RunningStack) -> None:
    job_id = await _submit(own_stack, **LONG_JOB)
    received: list[dict[str, Any]] = []
    async with _client(own_stack) as client:
        # First connection: read a few events, then drop it mid-job.
        async with client.stream("GET", f"{JOBS}/{job_id}/events/stream") as stream:
            async for line in stream.aiter_lines():
                if line.strip():
                    received.append(json.loads(line))
                if len(received) == 6:
                    break
        # Reconnect from the last seen sequence number and read to the end.
        since = received[-1]["seq"]
        async with client.stream("GET", f"{JOBS}/{job_id}/events/stream",
                                 params={"since_seq": since},
                                 timeout=httpx.Timeout(30, read=120)) as stream:
            async for line in stream.aiter_lines():
                if line.strip():
                    received.append(json.loads(line))
    all_events = await _events(own_stack, job_id)
    assert [e["seq"] for e in received] == [e["seq"] for e in all_events]
    assert received[-1]["terminal"] is True


async def test_same_seed_same_result_and_plan(own_stack: RunningStack) -> None:
    settings = {"val_seeds": list(range(100, 120)), "num_candidates": 4, "max_concurrent": 8,
                "seed": 11}
    first = await _wait(own_stack, await _submit(own_stack, **settings), until=_finished)
    second = await _wait(own_stack, await _submit(own_stack, **settings), until=_finished)
    assert first["status"] == second["status"] == "succeeded"
    assert _result(first) == _result(second)
    assert [h["best_score"] for h in first["history"]] == [
        h["best_score"] for h in second["history"]]

    def plan(job_id: str) -> list[tuple[str, int]]:
        records = [json.loads(line) for line in own_stack.task_app_record.read_text().splitlines()]
        return sorted((r["run_id"].removeprefix(job_id), r["seed"]) for r in records
                      if r["run_id"].startswith(job_id))

    assert plan(first["job_id"]) == plan(second["job_id"])


@pytest.mark.parametrize(
    ("termination", "reason"),
    [({"max_tokens": 6000}, "max_tokens"), ({"max_cost_usd": 0.001}, "max_cost_usd")],
)
async def test_spend_budgets_stop_with_the_best_so_far(own_stack: RunningStack,
                                                       termination: dict[str, Any],
                                                       reason: str) -> None:
    job_id = await _submit(own_stack, **LONG_JOB, termination_config=termination)
    job = await _wait(own_stack, job_id, until=_finished)
    assert job["status"] == "succeeded", job["error"]
    assert job["termination_reason"] == reason
    assert job["best_score"] is not None
    # Budgets are checked before each rollout or proposal call starts, so the job stops
    # once it is over; calls already in flight still land.
    if reason == "max_tokens":
        assert job["policy_tokens"] + job["proposer_tokens"] >= 6000
    else:
        assert job["cost_usd"] >= 0.001
    assert job["rollouts_completed"] + job["rollouts_failed"] < 5 + 5 * 40


async def test_later_rounds_see_earlier_scores(own_stack: RunningStack) -> None:
    job_id = await _submit(own_stack, num_candidates=4, num_iterations=2)
    job = await _wait(own_stack, job_id, until=_finished)
    assert job["status"] == "succeeded", job["error"]
    rounds = [e["data"] for e in await _events(own_stack, job_id)
              if e["type"] == "proposals.received"]
    assert [r["round"] for r in rounds] == [1, 2]
    # Round 1 has only the bootstrap traces; round 2 sees the baseline and round 1 scored.
    assert rounds[0]["earlier_candidates_shown"] == 0
    assert rounds[1]["earlier_candidates_shown"] == 1 + len(rounds[0]["candidates"])
    prompts = [json.loads(line)["user"] for line in own_stack.model_record.read_text().splitlines()]
    assert any("## Earlier candidates" in (p or "") and "Score " in (p or "") for p in prompts)
    assert {c["round"] for c in job["candidates"]} == {0, 1, 2}
    # The dataset summary is written in round 1 only, and both rounds' calls show it.
    summary = rounds[0]["dataset_summary"]
    assert summary and "dataset_summary" not in rounds[1]
    assert sum(f"## Dataset summary\n{summary}" in (p or "") for p in prompts) >= 4
    assert all(isinstance(r["rejected"], dict) for r in rounds)
