"""Venvs holding Synth's real job client, one per synth-ai version, built in the background.

Each client is installed from PyPI (`--no-deps`, plus the few packages it imports) into a venv
of its own, kept under pytest's cache by version when the cache is on. Building one takes tens
of seconds, nearly all of it pip's; so `conftest.py` starts every build the session's tests
need as soon as they are collected, and a test that needs a client waits for its venv while
the tests before it run.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

#: synth-ai version -> what its client imports at run time (it is installed `--no-deps`).
CLIENTS: dict[str, tuple[str, ...]] = {
    "0.7.0": ("requests", "httpx", "pydantic", "toml", "click", "pynacl", "python-dotenv",
              "aiohttp"),
    "0.9.11": ("requests", "httpx", "pydantic", "pynacl", "click<8.2"),
}
#: The test modules that run each version's client.
MODULES = {"0.7.0": "test_synth_sdk.py", "0.9.11": "test_synth_sdk_09.py"}
PIP_TIMEOUT_S = 300

_pool = ThreadPoolExecutor(max_workers=len(CLIENTS), thread_name_prefix="synth-venv")
_builds: dict[str, Future[Path]] = {}


class VenvError(RuntimeError):
    """pip could not install a client (no index reachable, say); the message is pip's."""


def _root(config: pytest.Config, version: str) -> Path:
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(f"synth-ai-{version}"))
    root = Path(tempfile.mkdtemp(prefix=f"synth-ai-{version}-"))
    atexit.register(shutil.rmtree, root, True)
    return root


def _build(root: Path, version: str) -> Path:
    venv = root / "venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists():
        return python
    # A venv without a pip of its own, filled by this venv's pip (`--python`): seeding pip
    # into every venv costs more than the client's own install.
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)],
                   check=True, capture_output=True, timeout=PIP_TIMEOUT_S)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
           "--disable-pip-version-check", "--no-compile"]
    for args in ([f"synth-ai=={version}", "--no-deps"], list(CLIENTS[version])):
        done = subprocess.run([*pip, *args], capture_output=True, text=True,
                              timeout=PIP_TIMEOUT_S)
        if done.returncode != 0:
            raise VenvError(done.stderr[-500:])
    marker.touch()
    return python


def start(config: pytest.Config, version: str) -> None:
    """Starts building `version`'s venv, unless it is under way or done."""
    if version not in _builds:
        _builds[version] = _pool.submit(_build, _root(config, version), version)


def python_of(config: pytest.Config, version: str) -> Path:
    """The Python of `version`'s venv, once built; skips the test when pip could not build it
    (the index is out of reach)."""
    start(config, version)
    try:
        return _builds[version].result()
    except VenvError as failed:
        pytest.skip(f"cannot install synth-ai {version}: {failed}")
