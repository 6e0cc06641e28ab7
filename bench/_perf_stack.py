"""The stack the performance benchmark measures: the real gateway, orchestrator and proposer
service, started through `mipro._stack.Stack`, plus the benchmark's own fake task app and
fake model (`bench.fake_task_app`, `bench.fake_model`) as separate processes.

Everything binds 127.0.0.1, on free ports, with its data and logs in one directory. Both
policy and proposer calls go to the fake model as provider `bench`
(`MIPRO_PROVIDER_BENCH_BASE_URL`). The fake servers are started here, each in its own session,
and stopped by their pid (SIGTERM, then SIGKILL after a grace period); the stack's processes
are stopped by `Stack.stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from mipro._settings import Settings
from mipro._stack import Stack, free_port, free_ports_env, stack_env

PROVIDER = "bench"
MODEL = "bench-model"
HOST = "127.0.0.1"
_READY_SECONDS = 30.0
_STOP_GRACE_SECONDS = 5.0
_REPO = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A process of the benchmark failed, or the API answered an error; the message says which."""


class ApiError(BenchError):
    """The REST API answered a non-2xx status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


#: Answers that mean "overloaded, try again": the gateway's 503 when its health check of the
#: orchestrator failed, and its 504.
_TRANSIENT_STATUS = frozenset({503, 504})
_SUBMIT_SECONDS = 120.0


def transient_error(error: BaseException) -> str | None:
    """A short name for an overload error worth retrying (503, 504, no answer within the
    client's timeout), or None for any other error."""
    if isinstance(error, ApiError) and error.status in _TRANSIENT_STATUS:
        return f"http {error.status}"
    if isinstance(error, httpx.TimeoutException):
        return "client timeout"
    return None


@dataclass
class OwnProcess:
    """A server this module started: its process and log file."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    log_file: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """SIGTERM by pid, SIGKILL after the grace period."""
        process = self.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=_STOP_GRACE_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                await process.wait()
        self.log_file.close()


def _open_log(log_dir: Path, name: str) -> tuple[Path, IO[bytes]]:
    """A local log file, opened for appending (closed by `OwnProcess.stop`)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    return log_path, open(log_path, "ab")


async def start_process(name: str, module: str, args: list[str], env: dict[str, str],
                        log_dir: Path) -> OwnProcess:
    """Starts `python -m module *args` in its own session, logging to `log_dir/<name>.log`."""
    log_path, log_file = _open_log(log_dir, name)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=log_file, stderr=log_file, start_new_session=True, cwd=str(_REPO))
    return OwnProcess(name, process, log_path, log_file)


async def wait_ready(url: str, process: OwnProcess) -> None:
    """Waits until GET `url` answers 200; raises `BenchError` if the process exits first."""
    deadline = time.monotonic() + _READY_SECONDS
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if process.process.returncode is not None:
                raise BenchError(f"{process.name} exited with code {process.process.returncode} "
                                 f"while starting; last log lines:\n{process.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"{process.name}: {url} did not answer 200 within "
                                 f"{_READY_SECONDS:g} s")
            await asyncio.sleep(0.1)


@dataclass
class BenchStack:
    """A running benchmark stack; `stop()` stops every process it started."""

    directory: Path
    stack: Stack
    own: list[OwnProcess]
    api_key: str
    environment_key: str
    task_app_url: str
    http: httpx.AsyncClient
    refused_submits: int = 0

    @property
    def gateway_url(self) -> str:
        return self.stack.gateway_url

    def pids(self) -> dict[str, int]:
        """The pid of every measured process, by role."""
        pids: dict[str, int] = {}
        roles = {"orchestrator": "orchestrator", "gateway": "gateway", "proposer": "proposer"}
        if self.stack.settings.inference_gateway:
            roles["inference_gateway"] = "inference-gateway"
        for role, name in roles.items():
            pid = self.stack.process(name).pid
            assert pid is not None
            pids[role] = pid
        for process in self.own:
            pids[process.name] = process.pid
        return pids

    def log_tails(self) -> str:
        """The last log lines of every process, for an error report."""
        parts = [f"--- {p.name} ---\n{p.log_tail()}" for p in self.stack.processes]
        parts += [f"--- {p.name} ---\n{p.log_tail()}" for p in self.own]
        return "\n".join(parts)

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                  timeout: float = 30.0) -> dict[str, Any]:
        """One REST call through the gateway; raises `BenchError` on a non-2xx answer."""
        response = await self.http.request(
            method, self.gateway_url + path, json=body, timeout=timeout,
            headers={"Authorization": f"Bearer {self.api_key}"})
        if response.status_code // 100 != 2:
            raise ApiError(f"{method} {path} answered {response.status_code}: "
                           f"{response.text[:500]}", response.status_code)
        result: dict[str, Any] = response.json()
        return result

    async def submit(self, job: dict[str, Any]) -> str:
        """Creates the job. A call refused by overload is tried again every second, with the
        same `request_id` so that a retry never makes a second job, for at most
        `_SUBMIT_SECONDS`; `refused_submits` counts those calls."""
        body = {**job, "request_id": "bench_" + secrets.token_hex(8)}
        deadline = time.monotonic() + _SUBMIT_SECONDS
        while True:
            try:
                created = await self.api("POST", "/api/policy-optimization/online/jobs", body)
                return str(created["job_id"])
            except (ApiError, httpx.TimeoutException) as error:
                if transient_error(error) is None or time.monotonic() > deadline:
                    raise
                self.refused_submits += 1
                await asyncio.sleep(1.0)

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return await self.api("GET", f"/api/policy-optimization/online/jobs/{job_id}")

    async def cancel(self, job_id: str) -> None:
        with contextlib.suppress(BenchError, httpx.HTTPError):
            await self.api("POST", f"/api/policy-optimization/online/jobs/{job_id}/cancel",
                           {"reason": "benchmark scenario timed out"}, timeout=60.0)

    async def stop(self) -> None:
        """Stops the stack's processes and the fake servers, newest first, by pid."""
        with contextlib.suppress(Exception):
            await self.http.aclose()
        try:
            await self.stack.stop()
        finally:
            for process in reversed(self.own):
                await process.stop()


async def start_bench_stack(directory: Path, *, latency_ms: float = 0.0,
                            max_running_jobs: int = 4,
                            model_calls_direct: bool = False,
                            one_gateway: bool = False) -> BenchStack:
    """Starts the fake model, the fake task app, then the proposer service, the orchestrator
    and the gateways; registers the task app's environment key. On any failure everything
    already started is stopped before the error propagates. The task app's model calls go
    through the inference gateway, as `mipro up` has them by default; with `one_gateway`
    through the API's gateway (`MIPRO_INFERENCE_GATEWAY=false`), with `model_calls_direct`
    straight to the interceptor's port (the public base URL set to it)."""
    api_key = "mk_bench_" + secrets.token_hex(8)
    environment_key = "env_bench_" + secrets.token_hex(8)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("MIPRO_", "OPENAI_", "PROD_OPENAI_", "GROQ_"))}
    env = {
        **base_env,
        "MIPRO_HOST": HOST,
        **free_ports_env(),
        "MIPRO_INFERENCE_GATEWAY": "false" if one_gateway else "true",
        "MIPRO_DATA_DIR": str(directory / "data"),
        "MIPRO_API_KEYS": api_key,
        "MIPRO_MAX_RUNNING_JOBS": str(max_running_jobs),
        "MIPRO_LOG_FORMAT": "json",
        # The bench is one operator's own tenant on this machine: the dev profile's loopback
        # task apps, and no per-tenant or per-key limit below the benchmark's own load.
        "MIPRO_TASK_APP_ALLOW": "loopback",
        "MIPRO_TENANT_MAX_RUNNING_JOBS": str(max_running_jobs),
        "MIPRO_TENANT_MAX_QUEUED_JOBS": "100",
        "MIPRO_TENANT_MAX_SEEDS": "30000",
        "MIPRO_TENANT_MAX_LIVE_STREAMS": "100",
        "MIPRO_GATEWAY_RATE_LIMIT_PER_MINUTE": "1000000",
    }
    if model_calls_direct:
        env["MIPRO_PUBLIC_BASE_URL"] = f"http://{HOST}:{env['MIPRO_INTERCEPTOR_PORT']}"
    settings = Settings.from_env(env)
    log_dir = directory / "logs"
    stack = Stack(settings, stack_env(settings, env), log_dir=log_dir)
    own: list[OwnProcess] = []
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=32))
    bench = BenchStack(directory, stack, own, api_key, environment_key, "", http)
    try:
        model_port = free_port()
        model = await start_process("model", "bench.fake_model",
                                 ["--host", HOST, "--port", str(model_port)], base_env, log_dir)
        own.append(model)
        await wait_ready(f"http://{HOST}:{model_port}/health", model)
        stack.env[f"MIPRO_PROVIDER_{PROVIDER.upper()}_BASE_URL"] = f"http://{HOST}:{model_port}/v1"

        task_port = free_port()
        task_app = await start_process(
            "task_app", "bench.fake_task_app",
            ["--host", HOST, "--port", str(task_port), "--latency-ms", f"{latency_ms:g}"],
            {**base_env, "ENVIRONMENT_API_KEY": environment_key}, log_dir)
        own.append(task_app)
        bench.task_app_url = f"http://{HOST}:{task_port}"
        await wait_ready(bench.task_app_url + "/", task_app)

        await stack.start_core()
        await bench.api("POST", "/api/v1/env-keys",
                        {"name": "ENVIRONMENT_API_KEY", "value": environment_key})
    except BaseException:
        await bench.stop()
        raise
    return bench


def job_request(task_app_url: str, *, num_candidates: int, val_seeds: int,
                bootstrap_seeds: int = 5, max_concurrent: int = 64,
                seed: int = 0) -> dict[str, Any]:
    """A job whose plan runs `bootstrap_seeds + (num_candidates + 1) * val_seeds` rollouts
    (no budget, so every candidate is evaluated on every validation seed)."""
    return {"policy_optimization": {
        "algorithm": "mipro",
        "task_app_url": task_app_url,
        "policy": {"model": MODEL, "provider": PROVIDER, "temperature": 0.0,
                   "max_completion_tokens": 32},
        "mipro": {
            "mode": "offline",
            "bootstrap_train_seeds": list(range(bootstrap_seeds)),
            "val_seeds": list(range(1000, 1000 + val_seeds)),
            "num_candidates": num_candidates,
            "max_concurrent": max_concurrent,
            "seed": seed,
            "proposer": {"mode": "instruction_only", "model": MODEL, "provider": PROVIDER,
                         "temperature": 0.7, "max_tokens": 64},
        },
    }}


def planned_rollouts(job: dict[str, Any]) -> int:
    """The rollouts `job` (from `job_request`) runs when every proposal is kept."""
    mipro = job["policy_optimization"]["mipro"]
    candidates: int = mipro["num_candidates"]
    return len(mipro["bootstrap_train_seeds"]) + (candidates + 1) * len(mipro["val_seeds"])
