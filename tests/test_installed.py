"""`mipro up` and the demo's example from a built wheel, installed into a fresh virtualenv and
run outside the checkout, so nothing can fall back on the source tree.

The fresh venv gets the wheel alone (`--no-deps`); a `.pth` file lends it this venv's
site-packages for the dependencies. Python reads `.pth` files only in its own site
directories, so this venv's editable install of the checkout stays invisible there.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ._mipro_up import running_up, tail, up_env, wait_ready
from .conftest import REPO_ROOT

pytestmark = pytest.mark.timeout(120)

#: What a checkout holds besides the sources; never part of a build.
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", ".mipro",
                                      "__pycache__", ".pytest_cache", ".ruff_cache")

#: Run in the installed venv: where the demo's files and the example task app resolve, and
#: the task app started the way `mipro demo` starts it, answering on its port.
_DEMO_FILES = """
import asyncio, importlib.util, json, sys
from mipro import cli
from mipro._settings import Settings
from mipro._stack import EXAMPLE_TASK_APP_MODULE, Stack, free_port

async def start_task_app():
    stack = Stack(Settings.from_env({"MIPRO_API_KEYS": "mk_x"}))
    try:
        return await stack.start_task_app(free_port(), "env_key")
    finally:
        await stack.stop()

print(json.dumps({
    "jobs": [str(cli.EXAMPLE_JOB), str(cli.LOCAL_MODEL_JOB)],
    "job_seeds": [len(json.loads(j.read_text())["policy_optimization"]["mipro"]["val_seeds"])
                  for j in (cli.EXAMPLE_JOB, cli.LOCAL_MODEL_JOB)],
    "task_app": importlib.util.find_spec(EXAMPLE_TASK_APP_MODULE).origin,
    "task_app_url": asyncio.run(start_task_app()),
}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel built from this checkout; returns its `bin/`."""
    tmp = tmp_path_factory.mktemp("installed")
    source = tmp / "source"
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCES)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    # This venv's setuptools builds it (no isolated build env to download).
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                    str(source)], check=True, timeout=60, capture_output=True)
    wheel = next((tmp / "dist").glob("mipro_backend-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=30)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=60, capture_output=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print("
                                "sysconfig.get_paths()['purelib'])"], check=True, text=True,
                               capture_output=True, timeout=30).stdout.strip())
    (site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def _run(installed: Path, code: str, cwd: Path) -> str:
    result = subprocess.run([str(installed / "python"), "-c", code], cwd=cwd, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_installed_packages_come_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    out = _run(installed, "import gateway, mipro, mipro.examples, orchestrator, proposer_service;"
               "print('\\n'.join(m.__file__ for m in (gateway, mipro, mipro.examples, "
               "orchestrator, proposer_service)))", tmp_path)
    site = installed.parent / "lib"
    for path in out.split():
        assert Path(path).is_relative_to(site), f"{path} is not the installed copy"


def test_installed_mipro_up_serves_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    env = up_env(tmp_path / "data")
    with running_up([str(installed / "mipro"), "up"], env, tmp_path, tmp_path / "up.log") as up:
        wait_ready(env, up.process, up.log)
        for child in up.children():
            assert not Path(f"/proc/{child.pid}/cwd").resolve().is_relative_to(REPO_ROOT)
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(timeout=30) == 0, tail(up.log)
    config = (tmp_path / "data" / "envoy.yaml").read_text()
    assert str(installed.parent / "lib") in config and str(REPO_ROOT) not in config


def test_installed_demo_finds_its_example_files(installed: Path, tmp_path: Path) -> None:
    found = json.loads(_run(installed, _DEMO_FILES, tmp_path))
    site = installed.parent / "lib"
    for path in (*found["jobs"], found["task_app"]):
        assert Path(path).is_relative_to(site) and Path(path).is_file(), path
    assert all(seeds > 0 for seeds in found["job_seeds"])
    assert found["task_app_url"].startswith("http://127.0.0.1:")
