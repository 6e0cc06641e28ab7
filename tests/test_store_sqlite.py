"""The SQLite job store: what is written is read back, across a reopen, per owner."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator import JobStatus, SqliteJobStore
from orchestrator._models import (
    CandidateRecord,
    JobRecord,
    JobSpec,
    PolicySpec,
    ProposerSpec,
    RolloutResult,
)
from orchestrator._secrets import EnvKeyVault

SPEC = JobSpec(task_app_url="http://127.0.0.1:1", policy=PolicySpec("m", "openai", 0.0, 64),
               proposer=ProposerSpec("m", "openai"), bootstrap_train_seeds=(0, 1),
               val_seeds=(5, 6), env_config={"split": "val"})


def _job(job_id: str, owner: str = "own_a", minutes: int = 0, request_id: str = "") -> JobRecord:
    return JobRecord(job_id=job_id, owner=owner, spec=SPEC, status=JobStatus.QUEUED,
                     created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
                     request_id=request_id)


async def test_job_round_trip_survives_reopen(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "db.sqlite")
    await store.open()
    job = _job("pl_1")
    await store.create_job(job)
    job.status = JobStatus.SUCCEEDED
    job.best_score = 0.5
    job.candidates = [CandidateRecord(0, "base", "baseline", 0.25, 2, 0)]
    job.failures_by_cause = {"timeout": 1}
    job.dataset_summary = "Short banking questions."
    await store.save_job(job)
    await store.record_rollout("pl_1", RolloutResult("pl_1_r000000", 0, 5, "val", 1.0,
                                                     tokens=12, trace={"input": "hi"}))
    await store.record_rollout("pl_1", RolloutResult("pl_1_r000001", 0, 6, "val", None,
                                                     "http_500", "boom"))
    await store.close()

    reopened = SqliteJobStore(tmp_path / "db.sqlite")
    await reopened.open()
    loaded = await reopened.get_job("pl_1")
    assert loaded is not None
    assert loaded.spec == SPEC and loaded.status is JobStatus.SUCCEEDED
    assert loaded.best_score == 0.5 and loaded.candidates == job.candidates
    assert loaded.failures_by_cause == {"timeout": 1}
    assert loaded.dataset_summary == "Short banking questions."  # a resume shows it again
    rollouts = await reopened.list_rollouts("pl_1")
    assert [r.reward for r in rollouts] == [1.0, None]
    assert rollouts[1].failure_cause == "http_500"
    await reopened.close()


async def test_owner_isolation_and_paging(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "db.sqlite")
    await store.open()
    for i in range(5):
        await store.create_job(_job(f"pl_{i}", minutes=i))
    await store.create_job(_job("pl_other", owner="own_b"))
    assert await store.get_job("pl_other", "own_a") is None
    first, token = await store.list_jobs("own_a", status=None, limit=2, page_token="")
    second, token2 = await store.list_jobs("own_a", status=None, limit=2, page_token=token)
    third, token3 = await store.list_jobs("own_a", status=None, limit=2, page_token=token2)
    assert [j.job_id for j in first + second + third] == ["pl_4", "pl_3", "pl_2", "pl_1", "pl_0"]
    assert token and token2 and token3 == ""
    await store.close()


async def test_request_id_makes_create_idempotent(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "db.sqlite")
    await store.open()
    first = await store.create_job(_job("pl_a", request_id="r-1"))
    again = await store.create_job(_job("pl_b", request_id="r-1"))
    assert again.job_id == first.job_id == "pl_a"
    assert await store.get_job("pl_b") is None
    await store.close()


async def test_events_are_numbered_without_gaps_under_concurrency(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "db.sqlite")
    await store.open()
    await asyncio.gather(*(store.append_event("pl_1", "t", f"m{i}", {"i": i}, terminal=False)
                           for i in range(50)))
    events = await store.list_events("pl_1", since_seq=0, limit=1000)
    assert [e.seq for e in events] == list(range(1, 51))
    later = await store.list_events("pl_1", since_seq=45, limit=10)
    assert [e.seq for e in later] == [46, 47, 48, 49, 50]
    await store.close()


async def test_env_keys_replace_per_owner(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "db.sqlite", vault=EnvKeyVault(os.urandom(32)))
    await store.open()
    await store.put_env_key("own_a", "ENVIRONMENT_API_KEY", "one")
    await store.put_env_key("own_a", "ENVIRONMENT_API_KEY", "two")
    assert await store.get_env_key("own_a", "ENVIRONMENT_API_KEY") == "two"
    assert await store.get_env_key("own_b", "ENVIRONMENT_API_KEY") is None
    await store.close()
