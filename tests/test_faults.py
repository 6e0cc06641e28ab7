"""Jobs against misbehaving dependencies: a flaky task app, a rate-limiting provider, a task
app that dies mid-job, and rollouts that hang while the user cancels. Real processes only."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from mipro._stack import free_port

from .conftest import RunningStack, launch_stack
from .faults import FLAKY_TASK_APP, RATE_LIMITED_MODEL, start_fault_server
from .test_durability import LONG_JOB, _client, _finished, _get, _mid_evaluation, _submit, _wait
from .test_end_to_end import JOBS

BOOTSTRAP_ROLLOUTS = 5


@pytest_asyncio.fixture(loop_scope="session")
async def own_stack(tmp_path: Path) -> AsyncIterator[RunningStack]:
    running = await launch_stack(tmp_path)
    try:
        yield running
    finally:
        await asyncio.shield(running.stack.stop())


@pytest_asyncio.fixture(loop_scope="session")
async def rate_limited_stack(tmp_path: Path) -> AsyncIterator[RunningStack]:
    running = await launch_stack(tmp_path, model_front=RATE_LIMITED_MODEL)
    try:
        yield running
    finally:
        await asyncio.shield(running.stack.stop())


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_flaky_task_app_failures_are_counted_not_zeroed(own_stack: RunningStack,
                                                              tmp_path: Path) -> None:
    flaky = await start_fault_server(
        own_stack.stack, FLAKY_TASK_APP, own_stack.task_app_url, free_port(),
        log=tmp_path / "flaky.jsonl",
        args=["--fail-rate", "0.2", "--hang-rate", "0.05", "--garbage-rate", "0.05"])
    job_id = await _submit(own_stack, flaky, val_seeds=list(range(100, 130)),
                              num_candidates=4, rollout_timeout_seconds=1.5)
    job = await _wait(own_stack, job_id, until=_finished, timeout=240)
    assert job["status"] == "succeeded", job["error"]

    # Faults happened and the ones that survived retries are counted by cause.
    faults = {line["fault"] for line in _lines(tmp_path / "flaky.jsonl")}
    assert {"500", "hang", "garbage"} <= faults
    assert job["rollouts_failed"] == sum(job["failures_by_cause"].values()) > 0
    assert "invalid_json" in job["failures_by_cause"]  # garbage is not retried

    # No failure became a 0: each candidate's mean is exactly the mean of the rewards the
    # real task app returned for its validation rollouts, and failures are counted apart.
    rewards: dict[int, dict[str, float]] = defaultdict(dict)
    for record in _lines(own_stack.task_app_record):
        run_id = record["run_id"] or ""
        if run_id.startswith(job_id) and record["reward"] is not None:
            if run_id.removeprefix(job_id + "_").startswith("v"):  # a validation rollout
                rewards[int(record["policy_id"].removeprefix("cand_"))][run_id] = record["reward"]
    for candidate in job["candidates"]:
        got = list(rewards[candidate["index"]].values())
        assert candidate["seeds_scored"] == len(got)
        if got:
            assert abs(candidate["mean_score"] - sum(got) / len(got)) < 1e-9


async def test_rate_limited_provider_retries_honour_retry_after(
        rate_limited_stack: RunningStack) -> None:
    job_id = await _submit(rate_limited_stack, num_candidates=4)
    job = await _wait(rate_limited_stack, job_id, until=_finished)
    assert job["status"] == "succeeded", job["error"]
    assert job["rollouts_failed"] == 0
    log = _lines(rate_limited_stack.log_dir.parent / "model_front.jsonl")
    limited = [entry for entry in log if entry["status"] == 429]
    assert len(limited) >= 3
    for entry in limited:
        retry = next(e for e in log if e["n"] > entry["n"] and e["body_sha"] == entry["body_sha"])
        assert retry["t"] - entry["t"] >= float(entry["retry_after"]) - 0.01


async def test_task_app_dying_mid_job_fails_it_with_the_cause(own_stack: RunningStack) -> None:
    job_id = await _submit(own_stack, **LONG_JOB)
    await _wait(own_stack, job_id, until=_mid_evaluation)
    task_app = own_stack.stack.process("task-app")
    task_app.kill(signal.SIGKILL)
    await task_app.wait(timeout=10)
    started = time.monotonic()
    job = await _wait(own_stack, job_id, until=_finished, timeout=120)
    assert job["status"] == "failed"
    assert own_stack.task_app_url in job["error"] and "last rollout error" in job["error"]
    assert "connect_error" in job["error"]
    assert time.monotonic() - started < 60
    # Everything scored before the outage is kept.
    assert job["rollouts_completed"] >= BOOTSTRAP_ROLLOUTS + 40
    assert job["baseline_score"] is not None and job["best_score"] is not None


async def test_cancel_cuts_hanging_rollouts_within_2s(own_stack: RunningStack,
                                                      tmp_path: Path) -> None:
    flaky = await start_fault_server(
        own_stack.stack, FLAKY_TASK_APP, own_stack.task_app_url, free_port(),
        args=["--fail-rate", "0", "--hang-rate", "1.0", "--garbage-rate", "0"])
    job_id = await _submit(own_stack, flaky, rollout_timeout_seconds=600)
    async with httpx.AsyncClient(base_url=flaky, timeout=10) as probe:
        deadline = time.monotonic() + 30
        while (await probe.get("/_faults/stats")).json()["hanging_now"] < BOOTSTRAP_ROLLOUTS:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        asked = time.monotonic()
        async with _client(own_stack) as client:
            response = await client.post(f"{JOBS}/{job_id}/cancel", json={"reason": "stuck"})
        assert time.monotonic() - asked < 2.0
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        while (await probe.get("/_faults/stats")).json()["hanging_now"] > 0:
            assert time.monotonic() - asked < 5, "the hanging requests were not dropped"
            await asyncio.sleep(0.1)
    job = await _get(own_stack, job_id)
    assert job["status"] == "cancelled" and "best_score" not in job
