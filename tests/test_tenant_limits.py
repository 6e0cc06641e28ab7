"""Per-tenant limits through the whole stack: a tenant over its queued-jobs limit gets 429."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from .conftest import RunningStack, launch_stack
from .test_end_to_end import JOBS, _client, _register_env_key, documented_job


@pytest.fixture(scope="module")
async def limited_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningStack]:
    running = await launch_stack(tmp_path_factory.mktemp("limited"), extra_env={
        "MIPRO_MAX_RUNNING_JOBS": "1", "MIPRO_TENANT_MAX_RUNNING_JOBS": "1",
        "MIPRO_TENANT_MAX_QUEUED_JOBS": "1"})
    try:
        yield running
    finally:
        await asyncio.shield(running.stack.stop())


def _slow_job(stack: RunningStack) -> dict[str, object]:
    job = documented_job(stack.task_app_url)
    mipro = job["policy_optimization"]["mipro"]  # type: ignore[index]
    mipro["val_seeds"] = list(range(100, 400))
    mipro["max_concurrent"] = 1
    return job


async def test_over_the_queued_limit_is_429_json(limited_stack: RunningStack,
                                                 tmp_path: Path) -> None:
    await _register_env_key(limited_stack)
    created: list[str] = []
    async with _client(limited_stack) as client:
        try:
            for expected in ("running", "queued"):
                response = await client.post(JOBS, json=_slow_job(limited_stack))
                assert response.status_code == 200, response.text
                assert response.json()["status"] == expected
                created.append(response.json()["job_id"])
            refused = await client.post(JOBS, json=_slow_job(limited_stack))
            assert refused.status_code == 429, refused.text
            assert refused.headers["content-type"] == "application/json"
            body = refused.json()
            assert "MIPRO_TENANT_MAX_QUEUED_JOBS=1" in body["message"]
            assert body["details"][0]["reason"] == "RESOURCE_EXHAUSTED"
            # Cancelling the queued job frees its place.
            cancel = await client.post(f"{JOBS}/{created[1]}/cancel", json={})
            assert cancel.status_code == 200, cancel.text
            again = await client.post(JOBS, json=_slow_job(limited_stack))
            assert again.status_code == 200, again.text
            created.append(again.json()["job_id"])
        finally:
            for job_id in created:
                await client.post(f"{JOBS}/{job_id}/cancel", json={})


async def test_too_many_seeds_is_400_naming_the_limit(limited_stack: RunningStack) -> None:
    job = _slow_job(limited_stack)
    job["policy_optimization"]["mipro"]["val_seeds"] = list(range(3000))  # type: ignore[index]
    async with _client(limited_stack) as client:
        response: httpx.Response = await client.post(JOBS, json=job)
    assert response.status_code == 400, response.text
    assert "MIPRO_TENANT_MAX_SEEDS" in response.json()["message"]


async def test_a_paused_job_holds_no_slot_and_no_queue_place(
        limited_stack: RunningStack) -> None:
    await _register_env_key(limited_stack)
    created: list[str] = []

    async def status(client: httpx.AsyncClient, job_id: str) -> str:
        return str((await client.get(f"{JOBS}/{job_id}")).json()["status"])

    async with _client(limited_stack) as client:
        try:
            for expected in ("running", "queued"):
                response = await client.post(JOBS, json=_slow_job(limited_stack))
                assert response.json()["status"] == expected, response.text
                created.append(response.json()["job_id"])
            running, queued = created
            # Pausing the queued job frees its place in the queue: one more create fits.
            paused = await client.post(f"{JOBS}/{queued}:pause", json={})
            assert paused.status_code == 200 and paused.json()["status"] == "paused"
            third = await client.post(JOBS, json=_slow_job(limited_stack))
            assert third.status_code == 200 and third.json()["status"] == "queued", third.text
            created.append(third.json()["job_id"])
            # Pausing the running job frees its slot: the queued one starts.
            assert (await client.post(f"{JOBS}/{running}:pause", json={})).status_code == 200
            for _ in range(40):
                if await status(client, created[2]) == "running":
                    break
                await asyncio.sleep(0.25)
            assert await status(client, created[2]) == "running"
            # A resumed job waits for a slot like any other, within the queue's limit; a
            # paused one can be cancelled.
            resumed = await client.post(f"{JOBS}/{queued}:resume", json={})
            assert resumed.json()["status"] == "queued", resumed.text
            assert (await client.post(f"{JOBS}/{queued}:pause", json={})).status_code == 200
            fourth = await client.post(JOBS, json=_slow_job(limited_stack))
            assert fourth.json()["status"] == "queued", fourth.text
            created.append(fourth.json()["job_id"])
            refused = await client.post(f"{JOBS}/{queued}:resume", json={})
            assert refused.status_code == 429, refused.text
            assert "MIPRO_TENANT_MAX_QUEUED_JOBS" in refused.text
            cancelled = await client.post(f"{JOBS}/{running}/cancel", json={})
            assert cancelled.json()["status"] == "cancelled", cancelled.text
        finally:
            for job_id in created:
                await client.post(f"{JOBS}/{job_id}/cancel", json={})
