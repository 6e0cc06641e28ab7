"""Tenants and API keys on the real stack: `mipro keys` / `mipro tenants` run against its data
directory while it runs, and the gateway and the gRPC port answer as a user would see."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from typing import Any

import grpc
import httpx
import pytest

from mipro.v1 import jobs_pb2, jobs_pb2_grpc

from .conftest import RunningStack
from .test_end_to_end import JOBS, _client, documented_job


def _mipro(stack: RunningStack, *args: str) -> str:
    """Runs `mipro ARGS` on the stack's data directory, as the operator would; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIPRO_")}
    env["MIPRO_DATA_DIR"] = str(stack.stack.settings.data_dir)
    done = subprocess.run([sys.executable, "-m", "mipro.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _new_key(stack: RunningStack, tenant: str, name: str = "") -> tuple[str, str]:
    """(key id, key) of a new key of `tenant`."""
    out = _mipro(stack, "keys", "create", "--tenant", tenant, *(("--name", name) if name else ()))
    key_id = re.search(r"created API key (key_[0-9a-f]+)", out)
    secret = re.search(r"^key: (\S+)$", out, re.MULTILINE)
    assert key_id and secret, out
    return key_id.group(1), secret.group(1)


async def _start_long_job(stack: RunningStack, key: str) -> str:
    """Registers the environment key and starts a job that runs for a while; its id."""
    async with _client(stack, key) as client:
        response = await client.post("/api/v1/env-keys", json={
            "name": "ENVIRONMENT_API_KEY", "value": stack.environment_key})
        assert response.status_code == 200, response.text
        job = documented_job(stack.task_app_url)
        job["policy_optimization"]["mipro"].update(val_seeds=list(range(100, 400)),
                                                   max_concurrent=1)
        response = await client.post(JOBS, json=job)
        assert response.status_code == 200, response.text
        job_id = str(response.json()["job_id"])
        deadline = time.monotonic() + 60
        while (await client.get(f"{JOBS}/{job_id}")).json()["status"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    return job_id


async def _status_within(client: httpx.AsyncClient, path: str, status: int,
                         seconds: float) -> float:
    """Polls `path` until it answers `status`; the time that took."""
    start = time.monotonic()
    while (response := await client.get(path)).status_code != status:
        assert time.monotonic() - start < seconds, (response.status_code, response.text)
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def _stored_status(stack: RunningStack, job_id: str) -> str:
    with sqlite3.connect(f"file:{stack.stack.settings.database_path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return str(row[0])


async def test_keys_are_listed_without_secrets_and_a_revoked_key_is_refused_at_once(
        running_stack: RunningStack) -> None:
    key_id, key = _new_key(running_stack, "acme", "ci")
    _spare_id, spare = _new_key(running_stack, "acme", "spare")
    listed = _mipro(running_stack, "keys", "list")
    row = next(line for line in listed.splitlines() if line.startswith(key_id))
    assert row.split()[1:4] == ["acme", "ci", key[:10]] and row.split()[-1] == "-"
    assert key not in listed and spare not in listed
    assert key not in running_stack.stack.settings.database_path.read_bytes().decode("latin-1")

    job_id = await _start_long_job(running_stack, key)
    _mipro(running_stack, "keys", "revoke", key_id)
    async with _client(running_stack, key) as client:
        took = await _status_within(client, f"{JOBS}/{job_id}", 401, seconds=1.5)
        body = (await client.get(JOBS)).json()
    assert took <= 1.5 and "revoked" in str(body)
    revoked_row = next(line for line in _mipro(running_stack, "keys", "list").splitlines()
                       if line.startswith(key_id))
    assert revoked_row.split()[-1] != "-"
    async with _client(running_stack, spare) as client:  # the job is the tenant's, not the key's
        job = (await client.get(f"{JOBS}/{job_id}")).json()
        assert job["status"] == "running"
        assert (await client.post(f"{JOBS}/{job_id}/cancel", json={})).status_code == 200


async def test_another_tenants_job_is_not_found(running_stack: RunningStack) -> None:
    _id, mine = _new_key(running_stack, "tenant-a")
    _id, theirs = _new_key(running_stack, "tenant-b")
    job_id = await _start_long_job(running_stack, mine)
    async with _client(running_stack, theirs) as client:
        assert (await client.get(f"{JOBS}/{job_id}")).status_code == 404
        assert (await client.post(f"{JOBS}/{job_id}/cancel", json={})).status_code == 404
        assert job_id not in (await client.get(JOBS)).text
    async with _client(running_stack, mine) as client:
        assert (await client.post(f"{JOBS}/{job_id}/cancel", json={})).status_code == 200


async def test_disabling_a_tenant_refuses_its_keys_and_cancels_its_running_job(
        running_stack: RunningStack) -> None:
    _id, key = _new_key(running_stack, "disable-me")
    job_id = await _start_long_job(running_stack, key)
    _mipro(running_stack, "tenants", "disable", "disable-me")
    async with _client(running_stack, key) as client:
        await _status_within(client, JOBS, 401, seconds=1.5)
        assert "disabled" in (await client.get(JOBS)).text
    deadline = time.monotonic() + 10
    while _stored_status(running_stack, job_id) != "cancelled":
        assert time.monotonic() < deadline, _stored_status(running_stack, job_id)
        await asyncio.sleep(0.1)
    _mipro(running_stack, "tenants", "enable", "disable-me")
    async with _client(running_stack, key) as client:
        await _status_within(client, JOBS, 200, seconds=1.5)
        job = (await client.get(f"{JOBS}/{job_id}")).json()
        events = (await client.get(f"{JOBS}/{job_id}/events", params={"limit": 1000})).json()
    assert job["status"] == "cancelled" and job["termination_reason"] == "cancelled"
    assert any(e["type"] == "job.cancel_requested" and e["data"]["reason"] == "tenant disabled"
               for e in events["events"])


@pytest.mark.parametrize("headers", [
    [(b"authorization", "Bearer ключ".encode())],
    [(b"x-api-key", "mk_\u00e9t\u00e9".encode())],
    [(b"x-api-key", b"mk_\xff\xfe")],
    [(b"authorization", b"Basic bWs6YQ==")],
    [(b"x-api-key", b"mk with spaces")],
])
async def test_a_malformed_key_is_401_through_the_gateway(running_stack: RunningStack,
                                                          headers: list[tuple[bytes, bytes]]
                                                          ) -> None:
    async with httpx.AsyncClient(base_url=running_stack.gateway_url, timeout=30.0) as client:
        response = await client.get(JOBS, headers=headers)
    assert response.status_code == 401, response.text
    assert "malformed" in response.text


# grpc's own clients refuse to send a non-ASCII metadata value ("Illegal header value"), so
# non-ASCII reaches the orchestrator only through the gateway, tested above.
@pytest.mark.parametrize("metadata", [
    (("x-api-key", "mk with spaces"),),
    (("authorization", "Bearer " + "k" * 600),),
    (("authorization", "Token abc"),),
])
async def test_a_malformed_key_is_unauthenticated_over_grpc(running_stack: RunningStack,
                                                           metadata: Any) -> None:
    async with grpc.aio.insecure_channel(running_stack.grpc_address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value.details()
    assert "malformed" in (caught.value.details() or "")
