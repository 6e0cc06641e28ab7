"""The job API beyond the happy path: listing, paging, cancelling, budgets, health, reflection."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ._recorded import job_results, mean_reward
from .conftest import RunningStack
from .test_end_to_end import (
    JOBS,
    _client,
    _poll_until_done,
    _register_env_key,
    assert_reports_the_recorded_winner,
    documented_job,
)


async def _submit(client: httpx.AsyncClient, stack: RunningStack, **mipro: Any) -> str:
    job = documented_job(stack.task_app_url)
    job["policy_optimization"]["mipro"].update(mipro)
    response = await client.post(JOBS, json=job)
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


async def test_max_rollouts_ends_the_job_with_the_best_so_far(running_stack: RunningStack) -> None:
    await _register_env_key(running_stack)
    async with _client(running_stack) as client:
        job_id = await _submit(client, running_stack, termination_config={"max_rollouts": 12})
        job = await _poll_until_done(client, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["termination_reason"] == "max_rollouts"
    assert job["rollouts_completed"] + job["rollouts_failed"] == 12
    assert job["best_score"] is not None and job["best_instruction"]
    assert job["candidates"][0]["instruction"] == job["best_instruction"]
    assert job["candidates"][0]["mean_score"] == job["best_score"]


async def test_cancel_a_running_job_keeps_what_it_has(running_stack: RunningStack) -> None:
    await _register_env_key(running_stack)
    async with _client(running_stack) as client:
        job_id = await _submit(client, running_stack, val_seeds=list(range(100, 160)),
                               max_concurrent=1)
        deadline = time.monotonic() + 60
        while (await client.get(f"{JOBS}/{job_id}")).json()["phase"] != "evaluate":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        asked = time.monotonic()
        response = await client.post(f"{JOBS}/{job_id}/cancel", json={"reason": "enough"})
        assert response.status_code == 200, response.text
        assert time.monotonic() - asked < 2.0  # in-flight rollouts were cut, not awaited
        cancelled = response.json()
        events = (await client.get(f"{JOBS}/{job_id}/events", params={"limit": 1000})).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["termination_reason"] == "cancelled"
    assert cancelled["rollouts_completed"] < 5 + 7 * 60
    assert events["events"][-1]["type"] == "job.cancelled" and events["events"][-1]["terminal"]
    assert any(e["type"] == "job.cancel_requested" and e["data"]["reason"] == "enough"
               for e in events["events"])


async def test_list_filters_and_pages(running_stack: RunningStack) -> None:
    await _register_env_key(running_stack)
    async with _client(running_stack) as client:
        ids = [await _submit(client, running_stack, num_candidates=1) for _ in range(3)]
        for job_id in ids:
            await _poll_until_done(client, job_id)
        first = (await client.get(JOBS, params={"limit": 2})).json()
        second = (await client.get(JOBS, params={"limit": 2,
                                                 "page_token": first["next_page_token"]})).json()
        succeeded = (await client.get(JOBS, params={"status": "succeeded", "limit": 100})).json()
        bad_status = await client.get(JOBS, params={"status": "done"})
        bad_param = await client.get(JOBS, params={"colour": "blue"})
    assert [j["job_id"] for j in first["jobs"]] == ids[::-1][:2]
    assert second["jobs"][0]["job_id"] == ids[0]
    assert first["next_page_token"]
    assert set(ids) <= {j["job_id"] for j in succeeded["jobs"]}
    assert all(j["status"] == "succeeded" for j in succeeded["jobs"])
    assert bad_status.status_code == 400 and "status" in bad_status.json()["message"]
    # Unknown query parameters are ignored (Synth's client sends `_t`), not refused.
    assert bad_param.status_code == 200, bad_param.text
    assert bad_param.headers["content-type"].startswith("application/json")
    assert "jobs" in bad_param.json()


async def test_idempotent_create_with_request_id(running_stack: RunningStack) -> None:
    await _register_env_key(running_stack)
    job = documented_job(running_stack.task_app_url)
    job["request_id"] = "retry-safe-1"
    job["policy_optimization"]["mipro"]["num_candidates"] = 1
    async with _client(running_stack) as client:
        first = (await client.post(JOBS, json=job)).json()
        again = (await client.post(JOBS, json=job)).json()
        await _poll_until_done(client, first["job_id"])
    assert first["job_id"] == again["job_id"]


async def test_grpc_servers_serve_health_and_reflection(running_stack: RunningStack) -> None:
    settings = running_stack.stack.settings
    for address, service in (
        (running_stack.grpc_address, "mipro.v1.JobService"),
        (settings.proposer_address, "mipro.v1.ProposerService"),
    ):
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            names: set[str] = set()
            async for response in reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
                names |= {s.name for s in response.list_services_response.service}
            assert service in names and "grpc.health.v1.Health" in names


async def test_gateway_healthz_and_unknown_path(running_stack: RunningStack) -> None:
    async with httpx.AsyncClient(base_url=running_stack.gateway_url, timeout=10) as client:
        health = await client.get("/healthz")
        unknown = await client.get("/api/nothing-here")
    assert health.status_code == 200
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/json")
    assert "grpc-status" not in health.headers


async def test_held_out_test_seeds_score_the_winner_and_the_baseline(
        running_stack: RunningStack) -> None:
    await _register_env_key(running_stack)
    async with _client(running_stack) as client:
        job_id = await _submit(client, running_stack, val_seeds=list(range(100, 130)),
                               test_seeds=list(range(200, 260)), num_candidates=6, seed=5)
        job = await _poll_until_done(client, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert_reports_the_recorded_winner(running_stack, job)
    # The test scores are the task app's rewards on the held-out seeds, for the winner and
    # for the baseline, and nothing else ran on those seeds.
    test_seeds = list(range(200, 260))
    tested = job_results(running_stack.task_app_record, job_id, test_seeds)
    winner = job["candidates"][0]
    assert set(tested) == {(c, s) for c in {0, winner["index"]} for s in test_seeds}
    assert job["best_test_score"] == pytest.approx(mean_reward(tested, winner["index"]),
                                                   abs=1e-9)
    assert job["baseline_test_score"] == pytest.approx(mean_reward(tested, 0), abs=1e-9)
    assert winner["fully_evaluated"] and winner["seeds_scored"] == 30
    assert job["history"] and job["history"][-1]["best_score"] == job["best_score"]
    assert sum(c["policy_tokens"] for c in job["candidates"]) == job["policy_tokens"]
