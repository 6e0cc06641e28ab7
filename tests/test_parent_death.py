"""`kill -9` of `mipro up` leaves no process behind and frees every port (Linux only: the
children ask the kernel for a parent-death signal, see `mipro/_parent_death.py`)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from ._mipro_up import is_alive, port_is_free, ports, running_up, up_env, wait_ready

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="the parent-death signal is a Linux feature"),
    pytest.mark.timeout(120),
]

#: How long the stack may take to exit after its parent died; SIGTERM lets the orchestrator
#: finish its writes, which the README bounds at 10 s.
EXIT_WITHIN_SECONDS = 15.0


def _role(cmdline: str) -> str:
    for role in ("proposer_service", "orchestrator", "envoy"):
        if role in cmdline:
            return role
    return cmdline


def test_kill_9_of_mipro_up_stops_every_service_and_frees_its_ports(tmp_path: Path) -> None:
    env = up_env(tmp_path / "data")
    argv = [sys.executable, "-m", "mipro.cli", "up"]
    with running_up(argv, env, tmp_path, tmp_path / "up.log") as up:
        wait_ready(env, up.process, up.log)
        children = up.children()
        # Two Envoys: the gateway and the inference gateway.
        assert sorted(_role(p.cmdline) for p in children) == [
            "envoy", "envoy", "orchestrator", "proposer_service"], children

        os.kill(up.process.pid, signal.SIGKILL)
        up.process.wait(timeout=10)
        killed_at = time.monotonic()
        while (alive := [p for p in children if is_alive(p)]) and (
                time.monotonic() - killed_at < EXIT_WITHIN_SECONDS):
            time.sleep(0.1)
        assert not alive, (f"still running {EXIT_WITHIN_SECONDS:g} s after kill -9 of mipro up: "
                           f"{[p.cmdline for p in alive]}")
        busy = [port for port in ports(env) if not port_is_free(port)]
        assert not busy, f"ports still taken after mipro up and its children died: {busy}"
