"""Synth's paths and shapes on the real stack: the SDK's create body, SSE, legacy paths, metrics."""

from __future__ import annotations

import json
from typing import Any

import httpx

from .conftest import RunningStack
from .test_end_to_end import JOBS, _client, _poll_until_done, _register_env_key
from .test_synth_sdk import synth_config


def sdk_body(task_app_url: str, **mipro: Any) -> dict[str, Any]:
    """The create body synth-ai 0.7 sends (spec: synth-sdk.md section 2)."""
    config = synth_config(task_app_url)
    config["prompt_learning"]["mipro"].update(mipro)
    return {"algorithm": "mipro", "config_body": config, "overrides": {},
            "metadata": {"backend_base_url": "http://127.0.0.1/api"}, "auto_start": True}


async def _finished_sdk_job(stack: RunningStack, client: httpx.AsyncClient) -> dict[str, Any]:
    await _register_env_key(stack)
    response = await client.post(JOBS, json=sdk_body(stack.task_app_url),
                                 headers={"X-API-Key": stack.api_key})
    assert response.status_code == 200, response.text
    return await _poll_until_done(client, response.json()["job_id"])


def _sse_blocks(text: str) -> list[str]:
    blocks = [b for b in text.split("\n\n") if b.strip()]
    data = [line.removeprefix("data: ") for block in blocks for line in block.split("\n")
            if line.startswith("data: ")]
    assert len(data) == len(blocks)  # one data line per block
    return data


async def test_sdk_body_creates_a_job_with_synths_knobs_mapped(running_stack: RunningStack) -> None:
    async with _client(running_stack) as client:
        job = await _finished_sdk_job(running_stack, client)
    assert job["status"] == "succeeded", job["error"]
    mipro = job["policy_optimization"]["mipro"]
    assert mipro["val_seeds"] == [100, 101, 102, 103]  # val_seeds wins over online_pool
    assert mipro["minibatch_size"] == 2  # batch_size
    assert mipro["num_candidates"] == 2  # num_evaluations_per_iteration x num_iterations
    assert mipro["max_concurrent"] == 4
    assert job["best_prompt"] == job["best_instruction"] != ""
    assert job["iteration"] == 1


async def test_a_typo_in_the_sdk_body_is_a_400_naming_the_field(
        running_stack: RunningStack) -> None:
    await _register_env_key(running_stack)
    body = sdk_body(running_stack.task_app_url)
    body["config_body"]["prompt_learning"]["mipro"]["num_candidate"] = 3
    async with _client(running_stack) as client:
        response = await client.post(JOBS, json=body)
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert "config_body.prompt_learning.mipro.num_candidate" in message
    assert 'did you mean "num_candidates"' in message


async def test_sse_stream_ends_with_the_completed_event_then_done(
        running_stack: RunningStack) -> None:
    async with _client(running_stack) as client:
        job = await _finished_sdk_job(running_stack, client)
        sse = await client.get(f"{JOBS}/{job['job_id']}/events/stream",
                               headers={"Accept": "text/event-stream"})
        ndjson = await client.get(f"{JOBS}/{job['job_id']}/events/stream")
    assert sse.status_code == 200, sse.text
    assert sse.headers["content-type"].startswith("text/event-stream")
    *events, done = _sse_blocks(sse.text)
    assert done == "[DONE]"
    parsed = [json.loads(e) for e in events]
    assert [e["seq"] for e in parsed] == list(range(1, len(parsed) + 1))
    assert all(e["type"].startswith("learning.policy.mipro.") for e in parsed)
    last = parsed[-1]
    assert last["type"] == "learning.policy.mipro.job.completed" and last["terminal"]
    assert last["data"]["best_score"] == job["best_score"]
    # Without `Accept: text/event-stream` the same stream is NDJSON with our own names.
    lines = [json.loads(line) for line in ndjson.text.splitlines() if line.strip()]
    assert [e["seq"] for e in lines] == [e["seq"] for e in parsed]
    assert lines[-1]["type"] == "job.succeeded"
    assert lines[-1]["synth_type"] == "learning.policy.mipro.job.completed"


async def test_legacy_paths_metrics_and_cache_busting(running_stack: RunningStack) -> None:
    async with _client(running_stack) as client:
        job = await _finished_sdk_job(running_stack, client)
        job_id = job["job_id"]
        for path in (f"/api/prompt-learning/online/jobs/{job_id}", f"/api/learning/jobs/{job_id}",
                     f"{JOBS}/{job_id}?_t=1733040000000"):
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["content-type"].startswith("application/json")
            assert response.json()["best_score"] == job["best_score"]
        events = await client.get(f"/api/prompt-learning/online/jobs/{job_id}/events",
                                  params={"since_seq": 0, "limit": 10000})
        metrics = await client.get(f"{JOBS}/{job_id}/metrics", params={"limit": 200})
        documented = await client.get(f"{JOBS}/{job_id}/events", params={"limit": 10000})
    assert events.status_code == 200, events.text
    completed = [e for e in events.json()["events"]
                 if e["type"] == "learning.policy.mipro.job.completed"]
    assert len(completed) == 1 and completed[0]["data"]["best_score"] == job["best_score"]
    assert documented.status_code == 200, documented.text
    assert documented.json()["events"][-1]["type"] == "job.succeeded"
    assert metrics.status_code == 200, metrics.text
    points = metrics.json()["points"]
    assert [(p["step"], p["value"], p["candidate"]) for p in points] == [
        (h["rollouts"], h["best_score"], h["candidate"]) for h in job["history"]]
    assert points and points[-1]["value"] == job["best_score"]


async def test_sse_stream_of_an_unknown_job_is_a_json_404(running_stack: RunningStack) -> None:
    async with _client(running_stack) as client:
        response = await client.get(f"{JOBS}/pl_0000000000000000/events/stream",
                                    headers={"Accept": "text/event-stream"})
    assert response.status_code == 404, response.text
    assert "pl_0000000000000000" in response.json()["message"]
