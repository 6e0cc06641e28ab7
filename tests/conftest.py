"""Shared fixtures: a real stack of processes for the end-to-end tests.

`running_stack` starts, on free 127.0.0.1 ports and in a temporary data directory, the fake
model (`tests/fakes/fake_model.py`, a deterministic stand-in that says nothing about
quality), the example task app (recording what it receives), the proposer service, the
orchestrator and a real Envoy gateway, as `mipro demo --model-url` does, and stops every one
of them by pid at the end of the session.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from mipro._settings import Settings
from mipro._stack import Stack, free_port, free_ports_env, stack_env, together
from orchestrator._store_postgres import upgrade as upgrade_postgres

from . import _synth_venvs
from ._launch import start_fake_model, start_http_proxy
from ._stores import REQUIRE_VARIABLE, PostgresServer, find_bindir, start_postgres

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_finish(session: pytest.Session) -> None:
    """Starts building the venvs of Synth's clients that the collected tests use, so pip
    works while the tests before them run."""
    files = {Path(item.nodeid.split("::")[0]).name for item in session.items}
    for version, module in _synth_venvs.MODULES.items():
        if module in files:
            _synth_venvs.start(session.config, version)


@dataclass(frozen=True)
class RunningStack:
    """Addresses and secrets of the stack under test."""

    gateway_url: str
    #: Where the task apps' model calls go (the public base URL).
    inference_gateway_url: str
    grpc_address: str
    api_key: str
    environment_key: str
    task_app_url: str
    model_url: str
    task_app_record: Path
    model_record: Path
    log_dir: Path
    stack: Stack


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("stack")


async def launch_stack(tmp: Path, *, model_front: str | None = None,
                       extra_env: dict[str, str] | None = None) -> RunningStack:
    """Starts the whole stack on free ports under `tmp`; the caller stops `.stack`.

    `model_front`, when given, is a module run as a proxy in front of the fake model
    (`python -m MODULE --host --port --upstream`), e.g. a fault injector.
    """
    api_key = "mk_test_" + secrets.token_hex(8)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("MIPRO_", "OPENAI_", "PROD_OPENAI_", "GROQ_"))}
    env = {
        **base_env,
        "MIPRO_HOST": "127.0.0.1",
        **free_ports_env(),
        "MIPRO_DATA_DIR": str(tmp / "data"),
        "MIPRO_API_KEYS": f"{api_key},mk_other_owner_key",
        "MIPRO_LOG_FORMAT": "json",
        "MIPRO_TASK_APP_ALLOW": "loopback",  # the dev profile: task apps on this machine
        **(extra_env or {}),
    }
    settings = Settings.from_env(env)
    log_dir = tmp / "logs"
    stack = Stack(settings, stack_env(settings, env), log_dir=log_dir)
    task_app_record = tmp / "task_app_record.jsonl"
    model_record = tmp / "model_record.jsonl"
    environment_key = "env_test_" + secrets.token_hex(8)
    host = settings.host
    model_port, front_port, task_app_port = free_port(), free_port(), free_port()
    model_url = f"http://{host}:{model_port}/v1"
    if model_front is not None:
        model_url = f"http://{host}:{front_port}/v1"
    # The services only dial the model and the task app when a job runs, so all start at once.
    stack.env["MIPRO_PROVIDER_OPENAI_BASE_URL"] = model_url
    stack.env["MIPRO_PROVIDER_OPENAI_API_KEY"] = "fake"
    task_app_url = f"http://{host}:{task_app_port}"

    async def start_model() -> None:
        fake = await start_fake_model(stack, model_port, record=model_record)
        if model_front is not None:
            await start_http_proxy(stack, model_front, fake.removesuffix("/v1"), front_port,
                                   log=tmp / "model_front.jsonl")

    try:
        await together(start_model(),
                       stack.start_task_app(task_app_port, environment_key,
                                            record=task_app_record),
                       stack.start_core())
    except BaseException:
        await asyncio.shield(stack.stop())
        raise
    return RunningStack(
        gateway_url=stack.gateway_url, inference_gateway_url=stack.inference_gateway_url,
        grpc_address=f"127.0.0.1:{settings.orchestrator_port}",
        api_key=api_key, environment_key=environment_key, task_app_url=task_app_url,
        model_url=model_url, task_app_record=task_app_record, model_record=model_record,
        log_dir=log_dir, stack=stack)


@pytest_asyncio.fixture(scope="session")
async def running_stack(session_tmp: Path) -> AsyncIterator[RunningStack]:
    running = await launch_stack(session_tmp)
    try:
        yield running
    finally:
        await asyncio.shield(running.stack.stop())


# -- job-store backends: every store test runs on SQLite and on a real Postgres ---------------

@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A Postgres server of this session (`tests/_stores.py`), stopped by pid at the end."""
    bindir = find_bindir()
    if bindir is None:
        message = ("Postgres is not installed: `make setup-postgres` installs Debian's "
                   "postgresql package")
        if os.environ.get(REQUIRE_VARIABLE):
            pytest.fail(message)
        pytest.skip(message)
    server = start_postgres(bindir)
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`MIPRO_DATABASE_URL` of an empty store: a new SQLite file, or a new schema of the
    session's Postgres brought up to date as `mipro db upgrade` does."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mipro.db'}"
    url = request.getfixturevalue("postgres").new_schema()
    await upgrade_postgres(url)
    return str(url)
