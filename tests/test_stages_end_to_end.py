"""End to end: the two-stage example task app (`mipro.examples.support_triage`) in the joint
mode, on the shared stack with the fake model (wiring only: its scores mean nothing).

What is checked is what reached the model: each stage's calls carried that stage's own
candidate instruction, and a candidate with a demo set showed each stage the demo turns of
its own calls on a bootstrap seed, before the real user message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from mipro.examples.support_intents.task_app import DEFAULT_DATASET, load_dataset
from mipro.examples.support_triage.task_app import ANSWERER_INSTRUCTION, ROUTER_INSTRUCTION

from mipro._stack import free_port, wait_http_ok
from orchestrator._candidate_prompt import fingerprint

from .conftest import REPO_ROOT, RunningStack
from .test_end_to_end import JOBS, _client, _poll_until_done, _register_env_key

BOOTSTRAP = [0, 1, 2]


async def _start_triage_app(stack: RunningStack, record: Path) -> str:
    port = free_port()
    host = stack.stack.settings.host
    argv = [sys.executable, "-P", "-m", "mipro.examples.support_triage.task_app",
            "--host", host, "--port", str(port), "--record", str(record)]
    process = await stack.stack.spawn(f"triage-{port}", argv,
                                      {"ENVIRONMENT_API_KEY": stack.environment_key})
    await wait_http_ok(f"http://{host}:{port}/", process=process, timeout=30)
    return f"http://{host}:{port}"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _job(task_app_url: str) -> dict[str, Any]:
    job = json.loads((REPO_ROOT / "examples" / "support_triage" / "job.json").read_text())
    optimization = job["policy_optimization"]
    optimization["task_app_url"] = task_app_url
    optimization["mipro"].update(
        bootstrap_train_seeds=BOOTSTRAP, val_seeds=[100, 101], num_candidates=1,
        num_iterations=1, max_demo_set_size=1, max_demo_sets=1,
        few_shot_score_threshold=0.0)  # the fake's answers are noise: every rollout qualifies
    return job


Ran = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]


@pytest.fixture(scope="module")
async def triage_app(running_stack: RunningStack,
                     tmp_path_factory: pytest.TempPathFactory) -> str:
    record = tmp_path_factory.mktemp("triage") / "rollouts.jsonl"
    url = await _start_triage_app(running_stack, record)
    await _register_env_key(running_stack)
    return url


async def _run(stack: RunningStack, job_body: dict[str, Any]) -> Ran:
    """Runs the job; returns it, its events and the model calls made while it ran."""
    seen_before = len(_lines(stack.model_record))
    async with _client(stack) as client:
        response = await client.post(JOBS, json=job_body)
        assert response.status_code == 200, response.text
        job = await _poll_until_done(client, response.json()["job_id"])
        events = (await client.get(f"{JOBS}/{job['job_id']}/events",
                                   params={"limit": 1000})).json()["events"]
    calls = [json.loads(line) for line in _lines(stack.model_record)[seen_before:]]
    return job, events, calls


@pytest.fixture(scope="module")
async def triage_job(running_stack: RunningStack, triage_app: str) -> Ran:
    return await _run(running_stack, _job(triage_app))


def test_the_joint_job_succeeds_with_stage_prompts_and_demo_sets(
        triage_job: Ran) -> None:
    job, events, _ = triage_job
    assert job["status"] == "succeeded", job.get("error")
    candidates = {c["index"]: c for c in job["candidates"]}
    assert len(candidates) == 4  # the baseline, one proposal, each with d1 too
    for c in candidates.values():
        assert {p["stage_id"] for p in c["stage_prompts"]} == {"router", "answerer"}
        assert c["demo_set_id"] in ("d0", "d1")
        assert set(c.get("demo_seeds", [])) <= set(BOOTSTRAP)
    baseline = {p["stage_id"]: p["instruction"] for p in candidates[0]["stage_prompts"]}
    assert baseline == {"router": ROUTER_INSTRUCTION, "answerer": ANSWERER_INSTRUCTION}
    types = [e["type"] for e in events]
    for expected in ("stages.detected", "demos.bootstrapped", "candidates.combined"):
        assert expected in types


def test_each_stage_received_its_own_instruction_and_demos(
        triage_job: Ran) -> None:
    job, _, calls = triage_job
    texts = [r["text"] for r in load_dataset(DEFAULT_DATASET)]
    proposed = next(c for c in job["candidates"]
                    if c["index"] != 0 and c["demo_set_id"] == "d1"
                    and c["tip"] != "demos")
    stage = {p["stage_id"]: p["instruction"] for p in proposed["stage_prompts"]}
    assert stage["router"] != ROUTER_INSTRUCTION and stage["answerer"] != ANSWERER_INSTRUCTION
    assert stage["router"] != stage["answerer"]
    (demo_seed,) = proposed["demo_seeds"]
    router_calls = [c for c in calls if c["system"] == stage["router"]
                    and len(c["user_turns"]) == 2]
    answerer_calls = [c for c in calls if c["system"] == stage["answerer"]
                      and len(c["user_turns"]) == 2]
    assert len(router_calls) == 2 and len(answerer_calls) == 2  # one per validation seed
    for call in router_calls:
        demo, real = call["user_turns"]
        assert demo == texts[demo_seed] and not real.startswith("Department:")
        assert call["roles"] == ["system", "user", "assistant", "tool", "user"]
    for call in answerer_calls:
        demo, real = call["user_turns"]
        assert demo.startswith("Department: ") and demo.endswith(texts[demo_seed])
        assert real.startswith("Department: ")
    # The router's instruction never reached the answerer, nor the other way round.
    assert not any(c["system"] == stage["router"] and c["user"].startswith("Department:")
                   for c in calls)
    assert not any(c["system"] == stage["answerer"] and not c["user"].startswith("Department:")
                   for c in calls)


async def test_without_declared_stages_the_system_messages_tell_them_apart(
        running_stack: RunningStack, triage_app: str) -> None:
    body = _job(triage_app)
    mipro = body["policy_optimization"]["mipro"]
    mipro.pop("modules")
    mipro["proposer"]["mode"] = "instruction_only"
    job, events, calls = await _run(running_stack, body)
    assert job["status"] == "succeeded", job.get("error")
    assert "stages.detected" in [e["type"] for e in events]
    proposed = next(c for c in job["candidates"] if c["index"] == 1)
    stage = {p["stage_id"]: p["instruction"] for p in proposed["stage_prompts"]}
    assert len(stage) == 2 and all(k.startswith("sys:") for k in stage)
    router, answerer = (stage[fingerprint(ROUTER_INSTRUCTION)],
                        stage[fingerprint(ANSWERER_INSTRUCTION)])
    assert router != answerer
    assert [c["user"].startswith("Department:") for c in calls if c["system"] == router] == \
        [False, False]  # its two validation rollouts, the router's call of each
    assert [c["user"].startswith("Department:") for c in calls if c["system"] == answerer] == \
        [True, True]

