"""One job through the real stack (gateway, orchestrator, proposer, task app, fake model) on a
Postgres job store: upgraded by `mipro db upgrade`, the orchestrator killed with SIGKILL
mid-job, and the job resumed from what Postgres holds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from ._stores import PostgresServer
from .conftest import REPO_ROOT, launch_stack
from .test_durability import (
    _completed_run_ids,
    _events,
    _finished,
    _restart_orchestrator,
    _submit,
    _wait,
)

#: Long enough to interrupt, short enough for `make test`: 3 candidates x 60 seeds after the
#: bootstrap, 2 rollouts at a time. The kill comes once 20 rollouts are seen done; with 24
#: seeds (77 rollouts) a job on a fresh clone once ended before the kill came (resumes 0).
JOB: dict[str, Any] = {"val_seeds": list(range(100, 160)), "num_candidates": 2,
                       "max_concurrent": 2, "seed": 5}


async def test_a_job_on_postgres_survives_a_killed_orchestrator(
        postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_schema()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIPRO_")}
    upgraded = subprocess.run([sys.executable, "-m", "mipro.cli", "db", "upgrade"],
                              env={**env, "MIPRO_DATABASE_URL": url}, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert postgres.password not in upgraded.stdout + upgraded.stderr

    stack = await launch_stack(tmp_path, extra_env={"MIPRO_DATABASE_URL": url})
    try:
        job_id = await _submit(stack, **JOB)
        await _wait(stack, job_id, until=lambda j: j["rollouts_completed"] >= 20 or _finished(j))
        await _restart_orchestrator(stack, signal.SIGKILL)
        job = await _wait(stack, job_id, until=_finished)
        events = await _events(stack, job_id)
        repeats = [r for r, n in _completed_run_ids(stack, job_id).items() if n > 1]
        logs = "".join(p.read_text(errors="replace") for p in stack.log_dir.iterdir())
    finally:
        await asyncio.shield(stack.stack.stop())

    assert job["status"] == "succeeded", job["error"]
    assert job["resumes"] == 1  # the kill came mid-job
    assert len(repeats) <= JOB["max_concurrent"], repeats
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("job.resumed") == 1
    assert events[-1]["type"] == "job.succeeded"
    assert postgres.password not in logs and stack.environment_key not in logs
    # Everything lives in Postgres: no SQLite file was made, each rollout is one row, and
    # the environment key is stored sealed.
    assert not (tmp_path / "data" / "mipro.db").exists()
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT rollout_id) FROM rollout_results"
                            " WHERE job_id = %s", (job_id,)).fetchone()
        (status,), = conn.execute("SELECT status FROM jobs WHERE job_id = %s", (job_id,))
        sealed = [v for (v,) in conn.execute("SELECT value FROM env_keys")]
    assert rows is not None and rows[0] == rows[1] == (
        job["rollouts_completed"] + job["rollouts_failed"])
    assert status == "succeeded"
    assert sealed and all(stack.environment_key not in v for v in sealed)
