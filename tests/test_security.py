"""Attacks on a real stack, one per test: a malicious task app against the interceptor,
SSRF through `task_app_url`, a task app that quotes key prefixes, and a scan of everything a
tenant or an operator can read for every key these tests used."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from mipro._stack import free_port
from orchestrator._interceptor import PASSED_FIELDS

from ._launch import start_test_server
from .conftest import RunningStack, launch_stack
from .test_durability import _wait
from .test_end_to_end import JOBS, _register_env_key, documented_job

ATTACKER = "tests.attackers.malicious_task_app"
DEFAULT_MAX_TOKENS = 4096  # MIPRO_INTERCEPTOR_DEFAULT_MAX_TOKENS, unset in the test stack
MAX_CALLS_PER_ROLLOUT = 32
FORWARDED_FIELDS = PASSED_FIELDS | {"model", "max_tokens", "max_completion_tokens"}
#: What each one-shot abuse must get from the interceptor.
EXPECTED = {"forged_signature": 401, "tampered_claims": 401, "guessed_token": 401,
            "no_token": 404, "no_key": 401, "n8": 400, "stream": 400, "nan": 400,
            "huge_body": 413, "max_tokens": 200, "max_completion_tokens": 200,
            "extra_fields": 200}


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(stack_dir: Path) -> AsyncIterator[RunningStack]:
    running = await launch_stack(stack_dir)
    try:
        yield running
    finally:
        await asyncio.shield(running.stack.stop())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def attacker(stack: RunningStack, stack_dir: Path) -> tuple[str, Path]:
    record = stack_dir / "attacker.jsonl"
    url = await start_test_server(stack.stack, ATTACKER, free_port(),
                                  args=["--record", str(record)])
    return url, record


def _client(stack: RunningStack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.gateway_url, timeout=30.0,
                             headers={"Authorization": f"Bearer {stack.api_key}"})


def _job(task_app_url: str, **mipro: Any) -> dict[str, Any]:
    job = documented_job(task_app_url)
    job["policy_optimization"]["mipro"].update(
        {"bootstrap_train_seeds": [0, 1], "val_seeds": [100], "num_candidates": 1,
         "max_concurrent": 1, **mipro})
    return job


async def _submit(stack: RunningStack, job: dict[str, Any]) -> str:
    await _register_env_key(stack)
    async with _client(stack) as client:
        response = await client.post(JOBS, json=job)
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


async def _finish(stack: RunningStack, job_id: str) -> dict[str, Any]:
    return await _wait(stack, job_id, timeout=180,
                       until=lambda j: j["status"] in ("succeeded", "failed", "cancelled"))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _seen_by_model(stack: RunningStack, attack: str) -> list[dict[str, Any]]:
    return [r for r in _lines(stack.model_record) if r["user"] == f"attack:{attack}"]


# -- the interceptor -------------------------------------------------------------------------

async def test_every_interceptor_abuse_is_refused_or_defused(
        stack: RunningStack, attacker: tuple[str, Path]) -> None:
    url, record = attacker
    job = _job(url, env_config={"attack": "abuse"})
    del job["policy_optimization"]["policy"]["max_completion_tokens"]  # the server's cap
    job_id = await _finish(stack, await _submit(stack, job))
    await asyncio.sleep(1.0)  # the attacker's replays half a second after each rollout
    calls = [c for c in _lines(record) if c["rollout"].startswith(job_id["job_id"])]
    status = {c["attack"]: c["status"] for c in calls if c["attack"] in EXPECTED}
    # The interceptor answers 413 without reading on; a client still sending 12 MB may see
    # the connection closed first (`test_interceptor_policy.py` reads the 413 itself).
    if status.get("huge_body") == 0:
        status["huge_body"] = 413
    assert status == EXPECTED, [c for c in calls if c["attack"] in EXPECTED]
    assert job_id["status"] == "succeeded", job_id["error"]

    # A finished rollout's URL is dead, whether replayed by the next rollout or later.
    replays = [c["status"] for c in calls if c["attack"].startswith("replay")]
    assert len(replays) >= 2 * 3 - 1 and set(replays) == {404}

    # What the provider saw: nothing refused, every cap forced, no unlisted field.
    for refused in (name for name, code in EXPECTED.items() if code != 200):
        assert _seen_by_model(stack, refused) == [], refused
    (capped,) = _seen_by_model(stack, "max_tokens")
    assert (capped["max_tokens"], capped["max_completion_tokens"]) == (DEFAULT_MAX_TOKENS, None)
    (capped,) = _seen_by_model(stack, "max_completion_tokens")
    assert (capped["max_tokens"], capped["max_completion_tokens"]) == (None, DEFAULT_MAX_TOKENS)
    (extra,) = _seen_by_model(stack, "extra_fields")
    assert set(extra["request_fields"]) <= FORWARDED_FIELDS
    (answered,) = [c for c in calls if c["attack"] == "extra_fields"]
    assert set(answered["dropped"].split(",")) == {
        "service_tier", "store", "metadata", "stream_options", "logprobs", "top_logprobs"}
    for seen in _lines(stack.model_record):
        assert seen["n"] in (None, 1) and seen["body_bytes"] < 2 * 1024 * 1024
        assert seen["model"] == job["policy_optimization"]["policy"]["model"]


async def test_a_rollout_may_make_only_so_many_model_calls(
        stack: RunningStack, attacker: tuple[str, Path]) -> None:
    url, record = attacker
    job = await _finish(stack, await _submit(stack, _job(
        url, env_config={"attack": "flood"}, bootstrap_train_seeds=[5], val_seeds=[105],
        termination_config={"max_rollouts": 1})))
    floods = [c for c in _lines(record)
              if c["attack"] == "flood" and c["rollout"].startswith(job["job_id"])]
    per_rollout: dict[str, list[int]] = defaultdict(list)
    for call in floods:
        per_rollout[call["rollout"]].append(call["status"])
    assert per_rollout and all(statuses == [200] * MAX_CALLS_PER_ROLLOUT + [429]
                               for statuses in per_rollout.values()), per_rollout
    assert len(_seen_by_model(stack, "flood")) == sum(s == 200 for s in
                                                     (c["status"] for c in floods))


async def test_a_spent_budget_refuses_model_calls_and_ends_the_job(
        stack: RunningStack, attacker: tuple[str, Path]) -> None:
    url, record = attacker
    job = await _finish(stack, await _submit(stack, _job(
        url, env_config={"attack": "budget"}, bootstrap_train_seeds=[7, 8, 9],
        termination_config={"max_tokens": 1})))
    # Spent before any candidate was scored, so the plan ends it failed, naming the budget.
    assert job["status"] == "failed" and "max_tokens" in job["error"], job
    calls = [c for c in _lines(record)
             if c["attack"] == "budget" and c["rollout"].startswith(job["job_id"])]
    assert [c["status"] for c in calls] == [200, 429], calls
    assert "budget is spent" in calls[-1]["error"]
    assert len(_seen_by_model(stack, "budget")) == Counter(c["status"] for c in calls)[200]


# -- SSRF ------------------------------------------------------------------------------------

@pytest.mark.parametrize("task_app_url", [
    "http://169.254.169.254/latest/meta-data#",
    "http://[::ffff:169.254.169.254]/",
    "http://10.0.0.1:8000",
    "http://100.64.0.1",
    "http://user:secret@127.0.0.1:8000",
    "ftp://example.com/",
])
async def test_internal_task_app_urls_are_refused_at_create(stack: RunningStack,
                                                            task_app_url: str) -> None:
    await _register_env_key(stack)
    async with _client(stack) as client:
        before = (await client.get(JOBS, params={"limit": 100})).json()["jobs"]
        response = await client.post(JOBS, json=_job(task_app_url))
        after = (await client.get(JOBS, params={"limit": 100})).json()["jobs"]
    assert response.status_code == 400, response.text
    violations = [v["field"] for d in response.json().get("details", [])
                  for v in d.get("fieldViolations", d.get("field_violations", []))]
    assert violations == ["policy_optimization.task_app_url"], response.text
    assert after == before  # no job was made


# -- quoted secrets --------------------------------------------------------------------------

async def test_a_task_app_quoting_key_prefixes_leaks_neither_key(stack: RunningStack,
                                                                 stack_dir: Path) -> None:
    expected = "sk_env_" + secrets.token_hex(16)  # the task app's own key
    url = await start_test_server(stack.stack, ATTACKER, free_port(),
                                  args=["--expected-key", expected], ready_path="/")
    job = await _finish(stack, await _submit(stack, _job(url)))
    assert job["status"] == "failed"
    assert "API key missing or invalid" in job["error"]
    for leaked in (expected[:15], stack.environment_key[:15], stack.environment_key[:6]):
        assert leaked not in job["error"]
    await _scan_for(stack, [expected, expected[:15], expected[:8]])


async def _scan_for(stack: RunningStack, extra: list[str]) -> None:
    """No key, nor a 6+ character prefix of one, in any job, event or log line."""
    keys = [stack.environment_key, stack.api_key, *extra]
    pieces = {k for key in keys for k in (key, key[:15], key[-15:]) if len(k) >= 6}
    texts: dict[str, str] = {}
    async with _client(stack) as client:
        jobs = (await client.get(JOBS, params={"limit": 100})).json()["jobs"]
        for job in jobs:
            got = await client.get(f"{JOBS}/{job['job_id']}")
            texts[f"job {job['job_id']}"] = got.text
            events = await client.get(f"{JOBS}/{job['job_id']}/events",
                                      params={"limit": 1000})
            texts[f"events {job['job_id']}"] = events.text
    for log in sorted(stack.log_dir.glob("*.log")):
        if log.name.startswith(("orchestrator", "proposer", "gateway")):
            texts[log.name] = log.read_text()
    assert jobs
    for where, text in texts.items():
        for piece in pieces:
            assert piece not in text, f"{piece[:3]}... found in {where}"


async def test_no_key_of_these_tests_is_in_jobs_events_or_logs(stack: RunningStack) -> None:
    await _scan_for(stack, [])
