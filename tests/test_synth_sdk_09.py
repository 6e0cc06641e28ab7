"""synth-ai 0.9's offline-jobs client (`PolicyOptimizationOfflineJob`, `kind: "mipro_offline"`)
drives the stack unchanged.

The wheel (0.9.11, with its Rust core `synth_ai_py`) is installed `--no-deps` into a venv of
its own with the few packages its client imports, and `tests/synth_sdk/driver_09.py` runs it
against the real gateway: create, pause and resume right after create, its
`stream_until_complete` to the end, events, every page of candidates and of seed evaluations
(its `PromptLearningClient`), and the SSE stream read by its own SSE reader. The config names
`openai`/`gpt-4.1-nano`, which the test stack serves with the fake model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from . import _synth_venvs
from .conftest import RunningStack
from .test_end_to_end import JOBS, _client, _register_env_key
from .test_synth_sdk import run_synth_client, synth_config

SYNTH_VERSION = "0.9.11"
DRIVER = Path(__file__).parent / "synth_sdk" / "driver_09.py"


@pytest.fixture(scope="session")
def synth09_python(request: pytest.FixtureRequest) -> Path:
    return _synth_venvs.python_of(request.config, SYNTH_VERSION)


def offline_config(task_app_url: str, *, to_pause: bool = False) -> dict[str, Any]:
    """0.7's documented config in 0.9's words: the task app is the `container_url`.
    `to_pause`: a job long enough (240 rollouts, one at a time) that the client's pause, sent
    right after the create, lands while it runs rather than after it finished."""
    config = synth_config(task_app_url, documented_only=True)
    section = config["prompt_learning"]
    section["container_url"] = section.pop("task_app_url")
    section["mipro"]["online_pool"] = list(range(100, 180 if to_pause else 112))
    if to_pause:
        section["mipro"]["max_concurrent"] = 1
    return config


@pytest.fixture(scope="module")
async def sdk_run(synth09_python: Path, running_stack: RunningStack,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    await _register_env_key(running_stack)
    tmp = tmp_path_factory.mktemp("synth09")
    seen = await asyncio.to_thread(
        run_synth_client, synth09_python, running_stack, tmp, driver=DRIVER,
        config=offline_config(running_stack.task_app_url, to_pause=True), pause=True, page=2)
    async with _client(running_stack) as client:
        seen["ours"] = (await client.get(f"{JOBS}/{seen['job_id']}")).json()
    return seen


async def test_the_client_runs_a_job_to_our_result(sdk_run: dict[str, Any]) -> None:
    ours, status = sdk_run["ours"], sdk_run["status"]
    assert ours["status"] == "succeeded", ours["error"]
    assert sdk_run["final"]["status"] == status["status"] == status["state"] == "succeeded"
    assert isinstance(status["best_reward"], float)
    assert status["best_reward"] == ours["best_score"]
    assert status["best_candidate"] == status["best_prompt"] == ours["best_instruction"]
    assert status["kind"] == "mipro_offline"
    assert status["candidate_count"] == len(ours["candidates"])
    assert sdk_run["job_id"] in sdk_run["listed"]


async def test_the_client_pauses_resumes_and_cancels(sdk_run: dict[str, Any]) -> None:
    assert sdk_run["paused"]["state"] == "paused"
    assert sdk_run["status_paused"]["state"] == "paused"
    assert sdk_run["resumed"]["state"] in ("queued", "running")
    assert sdk_run["cancelled"]["state"] == sdk_run["cancelled_status"]["state"] == "cancelled"
    events = sdk_run["events"]["events"]
    types = [e["type"] for e in events]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "learning.policy.mipro.job.paused" in types
    assert types[-1] == "learning.policy.mipro.job.completed"
    assert events[-1]["data"]["best_score"] == sdk_run["ours"]["best_score"]


async def test_the_client_pages_candidates_and_seed_evals_to_the_end(
        sdk_run: dict[str, Any]) -> None:
    ours = sdk_run["ours"]
    candidates = sdk_run["candidates"]
    assert [c["index"] for c in candidates] == list(range(len(ours["candidates"])))
    assert sdk_run["candidate_pages"] == -(-len(candidates) // 2) > 1
    scores = {c["index"]: c.get("mean_score") for c in ours["candidates"]}
    assert all(c.get("reward") == scores[c["index"]] for c in candidates)
    evals = sdk_run["seed_evals"]
    assert len(evals) == ours["rollouts_completed"] + ours["rollouts_failed"]
    assert len({e["rollout_id"] for e in evals}) == len(evals)
    assert sdk_run["seed_eval_pages"] == -(-len(evals) // 20) > 1
    val = sdk_run["val_evals"]
    assert val and all(e["split"] == "val" and e["success"] for e in val)
    assert len(val) == sum(c["seeds_scored"] for c in ours["candidates"])


async def test_the_clients_sse_reader_gets_every_event_then_done(
        sdk_run: dict[str, Any]) -> None:
    sse, paged = sdk_run["sse"], sdk_run["events"]["events"]
    assert [e["seq"] for e in sse] == [e["seq"] for e in paged]
    assert [e["type"] for e in sse] == [e["type"] for e in paged]


async def test_the_policy_job_client_runs_pauses_and_cancels(
        synth09_python: Path, running_stack: RunningStack, tmp_path: Path) -> None:
    """0.9's `PolicyOptimizationJob`, whose Rust core submits to `/api/v1/offline/jobs` and
    streams, and whose pause/resume/cancel are `POST /api/jobs/{id}/pause|resume|cancel`."""
    await _register_env_key(running_stack)
    seen = await asyncio.to_thread(
        run_synth_client, synth09_python, running_stack, tmp_path, driver=DRIVER,
        env={"SYNTH_RUST_BACKEND_URL_OVERRIDE": running_stack.gateway_url},
        client="policy_job", config=offline_config(running_stack.task_app_url),
        pause_config=offline_config(running_stack.task_app_url, to_pause=True))
    async with _client(running_stack) as client:
        ours = (await client.get(f"{JOBS}/{seen['job_id']}")).json()
        other = (await client.get(f"{JOBS}/{seen['other_id']}/events",
                                  params={"limit": 1000})).json()["events"]
    assert ours["status"] == "succeeded", ours["error"]
    assert seen["result"]["status"] == seen["status"]["status"] == "succeeded"
    assert seen["result"]["best_reward"] == seen["status"]["best_reward"] == ours["best_score"]
    assert seen["status"]["best_candidate"] == ours["best_instruction"]
    assert seen["paused"]["status"] == "paused"
    assert seen["resumed"]["status"] in ("queued", "running")
    assert seen["cancelled"]["status"] == "cancelled"
    types = [e["type"] for e in other]
    assert types.index("job.paused") < types.index("job.resume_requested") \
        < types.index("job.cancelled") == len(types) - 1
