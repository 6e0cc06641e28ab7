"""Synth's own job client (synth-ai 0.7.0, `PolicyOptimizationJob`) drives the stack unchanged.

The client is installed from PyPI (`--no-deps`, plus the few packages it imports) into a venv
of its own (`tests/_synth_venvs.py`, built while other tests run), and run as a subprocess
against the real gateway: from a TOML file and from a dict, in `poll_until_complete` and in
`stream_until_complete` (SSE). It names `openai`/`gpt-4.1-nano`, which the test stack serves
with the fake model through `MIPRO_PROVIDER_OPENAI_BASE_URL`. The task app's key is
registered with our documented `{"name", "value"}` form and passed to the client explicitly,
so it does not register it itself (the sealed-box form is another route's work).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from . import _synth_venvs
from .conftest import RunningStack
from .test_end_to_end import JOBS, _client, _register_env_key

SYNTH_VERSION = "0.7.0"
DRIVER = Path(__file__).parent / "synth_sdk" / "driver.py"


@pytest.fixture(scope="session")
def synth_python(request: pytest.FixtureRequest) -> Path:
    """The Python of a venv holding synth-ai 0.7.0 (`tests/_synth_venvs.py`)."""
    return _synth_venvs.python_of(request.config, SYNTH_VERSION)


def synth_config(task_app_url: str, *, documented_only: bool = False) -> dict[str, Any]:
    """A MIPRO config as Synth's docs write it; `documented_only` omits mode, val_seeds and
    the proposer, which then get our documented defaults."""
    mipro: dict[str, Any] = {
        "bootstrap_train_seeds": [0, 1, 2], "online_pool": [100, 101, 102],
        "num_iterations": 1, "num_evaluations_per_iteration": 2, "batch_size": 2,
        "max_concurrent": 4,
    }
    if not documented_only:
        mipro.update(mode="offline", val_seeds=[100, 101, 102, 103],
                     proposer={"mode": "instruction_only", "model": "gpt-4o-mini",
                               "provider": "openai", "temperature": 0.7, "max_tokens": 512})
    return {"prompt_learning": {
        "algorithm": "mipro", "task_app_url": task_app_url, "auto_discover_patterns": False,
        "policy": {"provider": "openai", "model": "gpt-4.1-nano", "inference_mode":
                   "synth_hosted", "temperature": 0.0, "max_completion_tokens": 64},
        "mipro": mipro}}


def _toml(config: dict[str, Any], path: Path) -> Path:
    """`config` as TOML (two levels of tables, inline values), without a TOML writer."""
    section = config["prompt_learning"]

    def table(name: str, values: dict[str, Any]) -> str:
        lines = [f"[{name}]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()
                  if not isinstance(v, dict)]
        return "\n".join(lines) + "\n"

    text = table("prompt_learning", section)
    text += table("prompt_learning.policy", section["policy"])
    text += table("prompt_learning.mipro", section["mipro"])
    if "proposer" in section["mipro"]:
        text += table("prompt_learning.mipro.proposer", section["mipro"]["proposer"])
    path.write_text(text)
    return path


def run_synth_client(python: Path, stack: RunningStack, tmp: Path, driver: Path = DRIVER,
                     env: dict[str, str] | None = None, **args: Any) -> dict[str, Any]:
    request = tmp / "driver_args.json"
    request.write_text(json.dumps({"backend_url": stack.gateway_url, "api_key": stack.api_key,
                                   "environment_key": stack.environment_key, **args}))
    environ = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp),
               "ENVIRONMENT_API_KEY": stack.environment_key, "SYNTH_LOCALAPI_AUTH_PERSIST": "0",
               **(env or {})}
    done = subprocess.run([str(python), str(driver), str(request)], capture_output=True,
                          text=True, timeout=150, env=environ, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("mode", ["poll", "stream"])
@pytest.mark.parametrize("source", ["toml", "dict"])
async def test_synth_client_runs_a_job_to_success(
    synth_python: Path, running_stack: RunningStack, tmp_path: Path, mode: str, source: str,
) -> None:
    await _register_env_key(running_stack)
    config = synth_config(running_stack.task_app_url, documented_only=source == "dict")
    given: dict[str, Any] = ({"toml": str(_toml(config, tmp_path / "mipro.toml"))}
                             if source == "toml" else {"config": config})
    result = await asyncio.to_thread(run_synth_client, synth_python, running_stack, tmp_path,
                                     mode=mode, **given)
    async with _client(running_stack) as client:
        job = (await client.get(f"{JOBS}/{result['job_id']}")).json()
    assert job["status"] == "succeeded", job["error"]
    assert result["status"] == "succeeded", result
    assert isinstance(result["best_score"], float)
    assert result["best_score"] == job["best_score"]
    if mode == "poll":  # in stream mode 0.7.0 reads a best prompt from GEPA's events only
        assert result["best_prompt"] == job["best_instruction"]
