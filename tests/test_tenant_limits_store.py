"""Tenant limits across replicas, in the store (issue 12), on SQLite and on Postgres alike: a
job becomes `running` only by `admit_job`'s conditional update, which counts the tenant's
running jobs. Several store objects race as several replicas would (for SQLite, separate
connections to one file; for Postgres, a pool each)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from orchestrator import JobStatus
from orchestrator._models import JobRecord, JobSpec, PolicySpec, ProposerSpec

from ._stores import store_at

SPEC = JobSpec(task_app_url="http://127.0.0.1:1", policy=PolicySpec("m", "openai", 0.0, 64),
               proposer=ProposerSpec("m", "openai"), bootstrap_train_seeds=(0, 1),
               val_seeds=(5, 6))


def _job(job_id: str, owner: str, minutes: int) -> JobRecord:
    return JobRecord(job_id=job_id, owner=owner, spec=SPEC, status=JobStatus.QUEUED,
                     created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes))


async def test_racing_replicas_admit_at_most_the_tenant_s_limit_oldest_first(
        store_url: str) -> None:
    replicas = [store_at(store_url) for _ in range(3)]
    for store in replicas:
        await store.open()
    first = replicas[0]
    try:
        jobs = [_job(f"pl_a{n}", "own_a", n) for n in range(6)]
        for job in [*jobs, _job("pl_b0", "own_b", 0)]:
            await first.create_job(job)
        # Every queued job of own_a asks at once, through three replicas, twice over.
        asks = [replicas[n % 3].admit_job(job.job_id, "own_a", 2)
                for n, job in enumerate(jobs * 2)]
        admitted = await asyncio.gather(*asks)
        running = {job.job_id for job, ok in zip(jobs * 2, admitted, strict=True) if ok}
        assert running == {"pl_a0", "pl_a1"}  # the two oldest, whoever asked first
        assert await first.tenant_job_counts("own_a") == (4, 2)
        # Another tenant's slots are its own.
        assert await replicas[1].admit_job("pl_b0", "own_b", 2)
        assert await first.tenant_job_counts("own_b") == (0, 1)
        # Asking again for a running job says running; one ending frees one slot.
        assert await replicas[2].admit_job("pl_a0", "own_a", 2)
        ended = await first.get_job("pl_a0")
        assert ended is not None
        ended.status = JobStatus.SUCCEEDED
        await first.save_job(ended)
        assert not await replicas[1].admit_job("pl_a3", "own_a", 2)  # pl_a2 is older
        assert await replicas[1].admit_job("pl_a2", "own_a", 2)
        assert not await replicas[2].admit_job("pl_a3", "own_a", 2)
        # A paused job holds no slot and is not admitted until it queues again.
        paused = await first.get_job("pl_a1")
        assert paused is not None
        paused.status = JobStatus.PAUSED
        await first.save_job(paused)
        assert not await first.admit_job("pl_a1", "own_a", 2)
        assert await first.tenant_job_counts("own_a") == (3, 1)
        assert await replicas[2].admit_job("pl_a3", "own_a", 2)
    finally:
        for store in replicas:
            await store.close()


async def test_a_candidate_prompt_is_stored_once_and_read_by_another_replica(
        store_url: str) -> None:
    worker, interceptor = store_at(store_url), store_at(store_url)
    await worker.open()
    await interceptor.open()
    try:
        prompt = {"stages": [{"stage": "router", "instruction": "Route it.",
                              "demos": [[{"role": "user", "content": "hi"},
                                         {"role": "assistant", "content": "billing"}]]}]}
        assert await interceptor.get_candidate_prompt("pl_1", 1) == (False, None)
        await worker.put_candidate_prompt("pl_1", 1, prompt)
        await worker.put_candidate_prompt("pl_1", 1, {"stages": []})  # the first one stays
        await worker.put_candidate_prompt("pl_1", 2, None)
        assert await interceptor.get_candidate_prompt("pl_1", 1) == (True, prompt)
        assert await interceptor.get_candidate_prompt("pl_1", 2) == (True, None)
    finally:
        await worker.close()
        await interceptor.close()
