"""Schema versions of the job store: SQLite files of every earlier release upgraded in place,
Postgres upgraded only by `mipro db upgrade` (also by several replicas at once), and the
`mipro db` commands."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from mipro import cli
from mipro._settings import Settings, SettingsError
from orchestrator import JobStatus, SqliteJobStore
from orchestrator._migrations import SchemaError, latest_version, migrations
from orchestrator._models import JobRecord, JobSpec, PolicySpec, ProposerSpec, RolloutResult
from orchestrator._secrets import EnvKeyVault
from orchestrator._store import job_state
from orchestrator._store_postgres import PostgresJobStore, current, upgrade

from ._stores import PostgresServer

SPEC = JobSpec(task_app_url="http://127.0.0.1:1", policy=PolicySpec("m", "openai", 0.0, 64),
               proposer=ProposerSpec("m", "openai"), bootstrap_train_seeds=(0, 1),
               val_seeds=(5, 6))
JOB = JobRecord(job_id="pl_old", owner="own_a", spec=SPEC, status=JobStatus.SUCCEEDED,
                created_at=datetime(2026, 1, 1, tzinfo=UTC), best_score=0.5)
SECRET = "sk-env-Old-Plain-0123456789"
RESULT = RolloutResult("pl_old_v0s5", 0, 5, "val", 0.75, trace={"input": "hi"},
                       prompt_tokens=7, completion_tokens=3)


def _legacy_file(path: Path, version: int) -> None:
    """A file as the release at `version` left it, before migrations existed: its tables
    (the migration files are those releases' schemas), a job with a rollout, an event and
    an environment key in plain text, and no `schema_version` table."""
    with sqlite3.connect(path) as db:
        for migration in migrations("sqlite")[:version]:
            db.executescript(migration.sql)
        db.execute("INSERT INTO jobs VALUES (?, ?, '', ?, ?, ?)",
                   (JOB.job_id, JOB.owner, JOB.status.value, JOB.created_at.isoformat(),
                    json.dumps(job_state(JOB))))
        if version == 1:
            db.execute("INSERT INTO rollouts VALUES (?, ?, 0, ?)",
                       (JOB.job_id, RESULT.rollout_id, json.dumps(dataclasses.asdict(RESULT))))
        else:
            db.execute("INSERT INTO rollout_results (job_id, rollout_id, phase, candidate, seed,"
                       " reward, failure_cause, failure_detail, prompt_tokens,"
                       " completion_tokens, trace_json) VALUES (?, ?, 'val', 0, 5, 0.75, '',"
                       " '', 7, 3, ?)", (JOB.job_id, RESULT.rollout_id, json.dumps(RESULT.trace)))
        db.execute("INSERT INTO events VALUES (?, 1, 'job.started', 'started', '{}', 0, ?)",
                   (JOB.job_id, JOB.created_at.isoformat()))
        db.execute("INSERT INTO env_keys (owner, name, value, updated_at)"
                   " VALUES ('own_a', 'ENVIRONMENT_API_KEY', ?, ?)",
                   (SECRET, JOB.created_at.isoformat()))
        # Releases wrote user_version 1-3; the one with sealed keys (4) still said 3.
        db.execute(f"PRAGMA user_version = {min(version, 3)}")


@pytest.mark.parametrize("version", [1, 2, 3, 4])
async def test_a_file_of_an_earlier_release_is_upgraded_in_place(tmp_path: Path,
                                                                 version: int) -> None:
    path = tmp_path / "mipro.db"
    _legacy_file(path, version)
    vault = EnvKeyVault(os.urandom(32))
    for _ in range(2):  # the second open finds nothing to do and changes nothing
        store = SqliteJobStore(path, vault=vault)
        await store.open()
        try:
            job = await store.get_job("pl_old", "own_a")
            assert job is not None and job.status is JobStatus.SUCCEEDED and job.spec == SPEC
            rollouts = await store.list_rollouts("pl_old")
            assert [(r.rollout_id, r.reward, r.trace, r.prompt_tokens, r.completion_tokens)
                    for r in rollouts] == [("pl_old_v0s5", 0.75, {"input": "hi"}, 7, 3)]
            assert await store.get_env_key("own_a", "ENVIRONMENT_API_KEY") == SECRET
        finally:
            await store.close()
    store = SqliteJobStore(path, vault=vault)
    await store.open()
    assert (await store.append_event("pl_old", "t", "m", {}, terminal=False)).seq == 2
    await store.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
        (sealed,), = db.execute("SELECT value FROM env_keys").fetchall()
        assert db.execute("PRAGMA user_version").fetchone()[0] == latest_version("sqlite")
    assert [v for v, _ in rows] == list(range(1, latest_version("sqlite") + 1))
    assert [n for v, n in rows if v <= version] == ["before migrations"] * version
    assert SECRET not in sealed


async def test_a_file_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mipro.db"
    store = SqliteJobStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (999, 'from the future', 'now')")
    with pytest.raises(SchemaError, match="schema version 999, newer than this release"):
        await SqliteJobStore(path).open()


async def test_postgres_is_not_opened_before_mipro_db_upgrade(postgres: PostgresServer) -> None:
    url = postgres.new_schema()
    with pytest.raises(SchemaError) as raised:
        await PostgresJobStore(url).open()
    assert "run `mipro db upgrade`" in str(raised.value)
    assert postgres.password not in str(raised.value)
    before, applied = await upgrade(url)
    assert before == 0 and applied == list(migrations("postgres"))
    store = PostgresJobStore(url)
    await store.open()
    await store.close()
    assert await upgrade(url) == (latest_version("postgres"), [])


async def test_replicas_upgrading_at_once_apply_each_migration_once(
        postgres: PostgresServer) -> None:
    url = postgres.new_schema()
    results = await asyncio.gather(*(upgrade(url) for _ in range(4)))
    every = len(migrations("postgres"))
    assert sorted(len(applied) for _, applied in results) == [0, 0, 0, every]
    assert await current(url) == latest_version("postgres")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (every,)


def test_mipro_db_commands_on_postgres(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MIPRO_DATABASE_URL", postgres.new_schema())
    assert cli.main(["db", "current"]) == 1
    assert cli.main(["db", "upgrade"]) == 0
    assert cli.main(["db", "current"]) == 0
    out = capsys.readouterr().out
    assert "schema version 0 (behind: run `mipro db upgrade`" in out
    assert "applied 0004_initial\napplied 0005_replicas\n" in out
    assert f"schema version {latest_version('postgres')} (up to date)" in out
    assert postgres.password not in out and "postgresql://mipro:***@127.0.0.1" in out


def test_mipro_db_commands_on_an_older_sqlite_file(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _legacy_file(tmp_path / "mipro.db", 2)
    assert cli.main(["db", "current", "--data-dir", str(tmp_path)]) == 1
    assert cli.main(["db", "upgrade", "--data-dir", str(tmp_path)]) == 0
    assert cli.main(["db", "current", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "schema version 2 (behind" in out
    assert "applied 0003_tenants\napplied 0004_env_key_ids\n" in out
    assert f"schema version {latest_version('sqlite')} (up to date)" in out


def test_a_malformed_database_url_is_named(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIPRO_DATABASE_URL", "mysql://root:hunter2@db/mipro")
    assert cli.main(["db", "current"]) == 2
    out = capsys.readouterr().out
    assert "MIPRO_DATABASE_URL must be sqlite:///PATH or postgresql://" in out
    assert "hunter2" not in out


def test_an_orchestrator_on_a_postgres_not_upgraded_exits_saying_what_to_run(
        postgres: PostgresServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIPRO_")}
    env.update({"MIPRO_DATABASE_URL": postgres.new_schema(), "MIPRO_DATA_DIR": str(tmp_path),
                "MIPRO_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode(),
                "MIPRO_ORCHESTRATOR_PORT": "0", "MIPRO_INTERCEPTOR_PORT": "0",
                "MIPRO_LOG_FORMAT": "json"})
    done = subprocess.run([sys.executable, "-m", "orchestrator"], env=env, capture_output=True,
                          text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "run `mipro db upgrade`" in output and "Traceback" not in output
    assert postgres.password not in output


def test_the_database_url_picks_the_store() -> None:
    default = Settings.from_env({"MIPRO_DATA_DIR": "/srv/mipro"})
    assert default.database_dialect == "sqlite"
    assert default.database_path == Path("/srv/mipro/mipro.db")
    relative = Settings.from_env({"MIPRO_DATABASE_URL": "sqlite:///jobs/mipro.db"})
    assert relative.database_path == Path("jobs/mipro.db")
    absolute = Settings.from_env({"MIPRO_DATABASE_URL": "sqlite:////var/lib/mipro.db"})
    assert absolute.database_path == Path("/var/lib/mipro.db")
    for url in ("postgresql://u:pw@db:5432/mipro", "postgres://u@db/mipro?sslmode=require"):
        assert Settings.from_env({"MIPRO_DATABASE_URL": url}).database_dialect == "postgres"
    assert "pw@" not in repr(Settings.from_env({"MIPRO_DATABASE_URL":
                                                "postgresql://u:pw@db/mipro"}))
    for bad in ("sqlite:mipro.db", "mysql://u:secret-pw@db/mipro", "/var/lib/mipro.db"):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({"MIPRO_DATABASE_URL": bad})
        assert str(caught.value).startswith("MIPRO_DATABASE_URL must be sqlite:///PATH")
        assert "secret-pw" not in str(caught.value)
