"""The `mipro` command as a user runs it: `up` in the foreground, `jobs`, and `demo`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mipro._stack import free_port

from .conftest import REPO_ROOT

MIPRO = [sys.executable, "-m", "mipro.cli"]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MIPRO_", "OPENAI_", "PROD_OPENAI_", "GROQ_"))}
    env.update(extra)
    return env


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def up_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    ports = {name: str(free_port()) for name in (
        "MIPRO_GATEWAY_PORT", "MIPRO_ORCHESTRATOR_PORT", "MIPRO_PROPOSER_PORT",
        "MIPRO_INTERCEPTOR_PORT", "MIPRO_GATEWAY_ADMIN_PORT")}
    env = _clean_env(MIPRO_DATA_DIR=str(tmp_path / "data"), MIPRO_LOG_FORMAT="json", **ports)
    process = subprocess.Popen([*MIPRO, "up"], env=env, cwd=REPO_ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield process, env
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_up_makes_a_key_serves_and_stops_everything_on_ctrl_c(
        up_process: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    process, env = up_process
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while not any(line.startswith("ready:") for line in lines):
        assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
        lines.append(process.stdout.readline())
    output = "".join(lines)
    key = re.search(r"made an API key for this run: (\S+)", output)
    assert key is not None, output
    assert (Path(env["MIPRO_DATA_DIR"]) / "api_key").read_text().strip() == key.group(1)

    listing = subprocess.run([*MIPRO, "jobs", "list"], env=env, cwd=REPO_ROOT, text=True,
                             capture_output=True, timeout=30)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert '"jobs"' in listing.stdout

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0
    for name in ("MIPRO_GATEWAY_PORT", "MIPRO_ORCHESTRATOR_PORT", "MIPRO_PROPOSER_PORT",
                 "MIPRO_INTERCEPTOR_PORT"):
        assert not _port_open(int(env[name])), f"{name} still served after Ctrl-C"


def test_jobs_without_a_gateway_says_so(tmp_path: Path) -> None:
    env = _clean_env(MIPRO_API_KEY="mk_x", MIPRO_GATEWAY_URL=f"http://127.0.0.1:{free_port()}")
    result = subprocess.run([*MIPRO, "jobs", "get", "pl_x"], env=env, cwd=REPO_ROOT, text=True,
                            capture_output=True, timeout=30)
    assert result.returncode == 1
    assert "cannot reach the gateway" in result.stdout


def test_demo_runs_a_full_optimization_and_prints_the_scores(tmp_path: Path) -> None:
    env = _clean_env(MIPRO_DATA_DIR=str(tmp_path / "demo"))
    result = subprocess.run([*MIPRO, "demo", "--model", "simulated"], env=env, cwd=REPO_ROOT,
                            text=True, capture_output=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "SIMULATED model" in out
    baseline = float(re.search(r"baseline score: +([\d.]+)", out).group(1))  # type: ignore[union-attr]
    best = float(re.search(r"best score: +([\d.]+)", out).group(1))  # type: ignore[union-attr]
    assert best > baseline
    assert "best instruction:" in out and "job.succeeded" in out
