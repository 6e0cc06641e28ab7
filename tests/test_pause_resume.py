"""Pause and resume a running job; page its candidates; read the basic view of a job.

On the shared stack (fake model, example task app): a job is paused mid-evaluation, shown to
start no rollout while paused, resumed, and then reaches the winner the task app's recorded
rewards make, with nothing stored run twice and its events numbered without a gap.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from .conftest import RunningStack
from .test_durability import LONG_JOB, _completed_run_ids, _events, _finished, _mid_evaluation
from .test_end_to_end import (
    JOBS,
    _client,
    _register_env_key,
    assert_reports_the_recorded_winner,
    documented_job,
)


async def _job(stack: RunningStack, job_id: str, **params: str) -> dict[str, Any]:
    async with _client(stack) as client:
        response = await client.get(f"{JOBS}/{job_id}", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _until(stack: RunningStack, job_id: str, done: Any, timeout: float = 120) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done(job := await _job(stack, job_id)):
        assert loop.time() < deadline, f"gave up waiting; job is {job['status']}"
        await asyncio.sleep(0.25)  # the stack's API key shares a 600-per-minute rate limit
    return job


@pytest.fixture(scope="module")
async def paused_and_resumed(running_stack: RunningStack) -> dict[str, Any]:
    """A LONG_JOB paused mid-evaluation and resumed to its end, with what was seen between."""
    await _register_env_key(running_stack)
    body = documented_job(running_stack.task_app_url)
    body["policy_optimization"]["mipro"].update(LONG_JOB)
    async with _client(running_stack) as client:
        created = await client.post(JOBS, json=body)
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        await _until(running_stack, job_id, _mid_evaluation)
        paused = await client.post(f"{JOBS}/{job_id}:pause", json={"reason": "lunch"})
        assert paused.status_code == 200, paused.text
        again = await client.post(f"{JOBS}/{job_id}:pause", json={})
        await asyncio.sleep(0.5)  # rollouts cut by the pause may still end at the task app
        stored_at_pause = await _job(running_stack, job_id)
        ran_at_pause = sum(_completed_run_ids(running_stack, job_id).values())
        await asyncio.sleep(1.5)  # a running job does dozens of rollouts in this time
        still = await _job(running_stack, job_id)
        ran_while_paused = sum(_completed_run_ids(running_stack, job_id).values()) - ran_at_pause
        resumed = await client.post(f"{JOBS}/{job_id}:resume", json={})
        assert resumed.status_code == 200, resumed.text
        twice = await client.post(f"{JOBS}/{job_id}:resume", json={})
    final = await _until(running_stack, job_id, _finished)
    return {"job_id": job_id, "paused": paused.json(), "again": again, "at_pause":
            stored_at_pause, "still": still, "ran_while_paused": ran_while_paused,
            "resumed": resumed.json(), "twice": twice, "final": final}


async def test_a_paused_job_runs_nothing_until_resumed(
        paused_and_resumed: dict[str, Any]) -> None:
    seen = paused_and_resumed
    assert seen["paused"]["status"] == "paused"
    assert seen["still"]["status"] == "paused"
    assert seen["still"]["rollouts_completed"] == seen["at_pause"]["rollouts_completed"]
    assert seen["ran_while_paused"] == 0
    assert seen["again"].status_code == 400  # FAILED_PRECONDITION: paused already
    assert "paused already" in seen["again"].text
    assert seen["resumed"]["status"] in ("queued", "running")
    assert seen["twice"].status_code == 400 and "not paused" in seen["twice"].text


async def test_a_resumed_job_repeats_nothing_stored_and_reaches_the_recorded_winner(
        running_stack: RunningStack, paused_and_resumed: dict[str, Any]) -> None:
    job_id, final = paused_and_resumed["job_id"], paused_and_resumed["final"]
    assert final["status"] == "succeeded", final["error"]
    assert_reports_the_recorded_winner(running_stack, final)
    # Only rollouts cut in flight by the pause ran again; no stored one did.
    repeats = [rid for rid, n in _completed_run_ids(running_stack, job_id).items() if n > 1]
    assert len(repeats) <= LONG_JOB["max_concurrent"], repeats
    async with _client(running_stack) as client:
        rows = await _all_pages(client, f"/api/v1/offline/jobs/{job_id}/seed-evals",
                                {"limit": 1000}, "items", "cursor", "next_cursor")
    assert Counter(r["rollout_id"] for r in rows).most_common(1)[0][1] == 1
    assert len(rows) == final["rollouts_completed"] + final["rollouts_failed"]


async def test_pause_and_resume_events_continue_the_sequence(
        running_stack: RunningStack, paused_and_resumed: dict[str, Any]) -> None:
    events = await _events(running_stack, paused_and_resumed["job_id"])
    types = [e["type"] for e in events]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert types.count("job.paused") == 1 and types.count("job.resumed") == 1
    assert types.index("job.paused") < types.index("job.resume_requested") \
        < types.index("job.resumed")
    paused = events[types.index("job.paused")]
    assert paused["data"]["reason"] == "lunch" and not paused["terminal"]
    assert paused["synth_type"] == "learning.policy.mipro.job.paused"
    assert types[-1] == "job.succeeded" and sum(e["terminal"] for e in events) == 1


async def _all_pages(client: Any, path: str, params: dict[str, Any], items: str,
                     token_param: str, token_field: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        response = await client.get(path, params={**params, token_param: token} if token
                                    else params)
        assert response.status_code == 200, response.text
        page = response.json()
        found += page.get(items, [])
        token = page.get(token_field, "")
        if not token:
            return found


async def test_list_candidates_pages_every_candidate_once(
        running_stack: RunningStack, paused_and_resumed: dict[str, Any]) -> None:
    final = paused_and_resumed["final"]
    path = f"{JOBS}/{final['job_id']}/candidates"
    async with _client(running_stack) as client:
        first = (await client.get(path, params={"page_size": 2})).json()
        paged = await _all_pages(client, path, {"page_size": 2}, "candidates", "page_token",
                                 "next_page_token")
        bad = await client.get(path, params={"page_token": "bogus"})
        too_big = await client.get(path, params={"page_size": 101})
    assert len(first["candidates"]) == 2 and first["next_page_token"]
    assert first["total_size"] == len(final["candidates"]) == LONG_JOB["num_candidates"] + 1
    assert [c["index"] for c in paged] == list(range(len(final["candidates"])))
    by_index = {c["index"]: c for c in final["candidates"]}
    assert all(c == by_index[c["index"]] for c in paged)
    assert bad.status_code == 400 and "page_token" in bad.text
    assert too_big.status_code == 400 and "page_size" in too_big.text


async def test_basic_view_leaves_out_what_grows_with_the_job(
        running_stack: RunningStack, paused_and_resumed: dict[str, Any]) -> None:
    job_id = paused_and_resumed["job_id"]
    full = await _job(running_stack, job_id)
    basic = await _job(running_stack, job_id, view="JOB_VIEW_BASIC")
    assert full == await _job(running_stack, job_id, view="JOB_VIEW_FULL")
    assert len(full["candidates"]) == full["candidate_count"] == LONG_JOB["num_candidates"] + 1
    assert full["policy_optimization"]["mipro"]["val_seeds"] == LONG_JOB["val_seeds"]
    assert basic.get("candidates", []) == []
    assert basic["policy_optimization"]["mipro"].get("val_seeds", []) == []
    assert basic["candidate_count"] == full["candidate_count"]
    for same in ("status", "best_score", "best_instruction", "baseline_score",
                 "rollouts_completed", "history"):
        assert basic[same] == full[same], same
