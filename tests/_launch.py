"""Starting the tests' own processes as part of a `Stack`, so `Stack.stop()` stops them by
pid with the rest: the fake model (`tests.fakes.fake_model`), HTTP proxies in front of a
server (the fault injectors of `tests.faults`) and other test servers (the attackers of
`tests.attackers`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mipro._stack import Stack, wait_http_ok

#: The folder holding the `tests` package, put on the children's `PYTHONPATH` so
#: `python -m tests....` works whatever their working directory.
_ROOT = Path(__file__).resolve().parent.parent

FAKE_MODEL = "tests.fakes.fake_model"


def _module_env(stack: Stack) -> dict[str, str]:
    path = stack.env.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(_ROOT), *([path] if path else [])])}


async def start_fake_model(stack: Stack, port: int, *, record: Path | None = None) -> str:
    """Starts the fake OpenAI-compatible model on `port`; returns its `/v1` base URL."""
    host = stack.settings.host
    argv = [sys.executable, "-m", FAKE_MODEL, "--host", host, "--port", str(port)]
    if record is not None:
        argv += ["--record", str(record)]
    process = await stack.spawn("fake-model", argv, _module_env(stack))
    await wait_http_ok(f"http://{host}:{port}/health", process=process,
                       timeout=stack.settings.stack_ready_timeout_seconds)
    return f"http://{host}:{port}/v1"


async def start_http_proxy(stack: Stack, module: str, upstream: str, port: int, *,
                           log: Path | None = None, args: Sequence[str] = (),
                           ready_path: str = "/health") -> str:
    """Starts `python -m module --host --port --upstream [--log] *args` in front of
    `upstream`, waits until `ready_path` answers 200, and returns its URL."""
    host = stack.settings.host
    argv = [sys.executable, "-m", module, "--host", host, "--port", str(port),
            "--upstream", upstream, *args]
    if log is not None:
        argv += ["--log", str(log)]
    process = await stack.spawn(f"{module.rsplit('.', 1)[-1]}-{port}", argv, _module_env(stack))
    await wait_http_ok(f"http://{host}:{port}{ready_path}", process=process,
                       timeout=stack.settings.stack_ready_timeout_seconds)
    return f"http://{host}:{port}"


async def start_test_server(stack: Stack, module: str, port: int, *, args: Sequence[str] = (),
                            ready_path: str = "/health") -> str:
    """Starts `python -m module --host --port *args`, waits until `ready_path` answers 200
    (with no key: pass a server that answers it so), and returns its URL."""
    host = stack.settings.host
    argv = [sys.executable, "-m", module, "--host", host, "--port", str(port), *args]
    process = await stack.spawn(f"{module.rsplit('.', 1)[-1]}-{port}", argv, _module_env(stack))
    await wait_http_ok(f"http://{host}:{port}{ready_path}", process=process,
                       timeout=stack.settings.stack_ready_timeout_seconds)
    return f"http://{host}:{port}"
