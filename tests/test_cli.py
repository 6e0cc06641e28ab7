"""The `mipro` command as a user runs it: `up` in the foreground, `jobs`, and `demo`.

The demo runs against the fake model (`tests/fakes`), given by `--model-url` as any
OpenAI-compatible server would be; its scores are noise, so only the wiring is checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from mipro._settings import Settings
from mipro._stack import PORT_VARIABLES, Stack, free_port, free_ports_env

from ._launch import start_fake_model
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
    ports = free_ports_env()
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
    for name in PORT_VARIABLES:
        assert not _port_open(int(env[name])), f"{name} still served after Ctrl-C"


def test_up_port_flags_set_the_settings_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from mipro.cli import _env_with_flags, build_parser

    for name in PORT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name in ("MIPRO_PUBLIC_BASE_URL", "MIPRO_HOST", "MIPRO_GATEWAY_HOST",
                 "MIPRO_INFERENCE_GATEWAY"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["up", "--gateway-port", "9080",
                                      "--inference-gateway-port", "9082"])
    settings = Settings.from_env(_env_with_flags(args))
    assert (settings.gateway_port, settings.inference_gateway_port) == (9080, 9082)
    assert settings.public_base_url == "http://127.0.0.1:9082"


def test_jobs_without_a_gateway_says_so(tmp_path: Path) -> None:
    env = _clean_env(MIPRO_API_KEY="mk_x", MIPRO_GATEWAY_URL=f"http://127.0.0.1:{free_port()}")
    result = subprocess.run([*MIPRO, "jobs", "get", "pl_x"], env=env, cwd=REPO_ROOT, text=True,
                            capture_output=True, timeout=30)
    assert result.returncode == 1
    assert "cannot reach the gateway" in result.stdout


@pytest_asyncio.fixture
async def fake_model(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The fake model as a server of its own, like a vLLM the user already runs: its `/v1`
    URL and its record of requests."""
    record = tmp_path / "model.jsonl"
    stack = Stack(Settings(), _clean_env(), log_dir=tmp_path / "model-logs")
    try:
        yield await start_fake_model(stack, free_port(), record=record), record
    finally:
        await asyncio.shield(stack.stop())


def _demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MIPRO, "demo", *args], env=env, cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=240)


async def test_demo_runs_the_job_file_against_a_model_url(
        tmp_path: Path, fake_model: tuple[str, Path]) -> None:
    url, record = fake_model
    job = json.loads((REPO_ROOT / "examples" / "support_intents" / "job.json").read_text())
    job["policy_optimization"]["mipro"].update(val_seeds=[100, 101, 102, 103, 104],
                                               num_candidates=2)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    env = _clean_env(MIPRO_DATA_DIR=str(tmp_path / "demo"))
    result = await asyncio.to_thread(_demo, "--model-url", url, "--job", str(job_file), env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert f"model: the OpenAI-compatible server at {url}, for the provider(s) openai" in out
    assert f"job: {job_file}" in out
    baseline = float(re.search(r"baseline score: +([\d.]+) \(mean validation reward on 5 "
                               r"seeds\)", out).group(1))  # type: ignore[union-attr]
    best = float(re.search(r"best score: +([\d.]+)", out).group(1))  # type: ignore[union-attr]
    assert best >= baseline  # the baseline competes, so the winner is never below it
    assert "best instruction:" in out and "job.succeeded" in out
    # Both the policy's calls (with the task app's tool) and the proposer's reached the URL.
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert sum(c["has_tools"] for c in calls) >= 5 + 5  # the bootstrap, the baseline on val
    assert any(not c["has_tools"] and "## Tip" in c["user"] for c in calls)


def test_demo_with_an_unreachable_model_url_says_so(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = _demo("--model-url", url, env=_clean_env(MIPRO_DATA_DIR=str(tmp_path / "demo")))
    assert result.returncode == 1
    assert f"the model server at {url} does not answer" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "local", "--model-url", "http://127.0.0.1:9/v1"], "leave out --model"),
    (["--model-url", "http://127.0.0.1:9/v1", "--job", "no/such/job.json"],
     "cannot read the job file no/such/job.json"),
])
def test_demo_refuses_contradictory_or_missing_inputs(tmp_path: Path, args: list[str],
                                                      message: str) -> None:
    result = _demo(*args, env=_clean_env(MIPRO_DATA_DIR=str(tmp_path / "demo")))
    assert result.returncode == 2
    assert message in result.stdout
