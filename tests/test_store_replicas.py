"""The store's part of stateless replicas: open rollouts, their exchanges and metered usage,
shared by separate connections to one SQLite file as separate processes would share it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from orchestrator import SqliteJobStore
from orchestrator._exchanges import Exchange
from orchestrator._models import RolloutResult
from orchestrator._store import Admission, JobUsage, RolloutOpening


def _exchange(text: str, error: str = "") -> Exchange:
    return Exchange(messages=[{"role": "user", "content": text}],
                    response=None if error else {"choices": [{"message": {"content": text}}]},
                    prompt_tokens=3, completion_tokens=2, latency_ms=1.5, error=error)


async def _two(tmp_path: Path) -> tuple[SqliteJobStore, SqliteJobStore]:
    first, second = SqliteJobStore(tmp_path / "db"), SqliteJobStore(tmp_path / "db")
    await first.open()
    await second.open()
    return first, second


async def test_an_opening_is_served_from_another_connection_and_closed_once(
        tmp_path: Path) -> None:
    worker, interceptor = await _two(tmp_path)
    opening = RolloutOpening("pl_1", "pl_1_v01s5", "n1", 1)
    await worker.open_rollout(opening)
    assert await interceptor.admit_call(opening, max_calls=2) is Admission.ADMITTED
    assert await interceptor.record_exchange("pl_1_v01s5", "n1", _exchange("a"))
    assert await interceptor.admit_call(opening, max_calls=2) is Admission.ADMITTED
    assert await interceptor.record_exchange("pl_1_v01s5", "n1", _exchange("b", "boom"))
    assert await interceptor.admit_call(opening, max_calls=2) is Admission.OVER_LIMIT
    assert [e.error for e in await worker.rollout_exchanges("pl_1_v01s5", "n1")] == ["", "boom"]
    closed = await worker.close_rollout("pl_1_v01s5", "n1")
    assert [e.messages[0]["content"] for e in closed] == ["a", "b"]
    assert closed[0] == _exchange("a")
    # closed: nothing more is admitted or kept, and a second close returns nothing
    assert await interceptor.admit_call(opening, max_calls=2) is Admission.UNKNOWN
    assert not await interceptor.record_exchange("pl_1_v01s5", "n1", _exchange("late"))
    assert await worker.close_rollout("pl_1_v01s5", "n1") == []
    await worker.close()
    await interceptor.close()


async def test_a_new_opening_replaces_the_old_one_and_its_exchanges(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "db")
    await store.open()
    old = RolloutOpening("pl_1", "pl_1_v01s5", "old", 1)
    await store.open_rollout(old)
    await store.admit_call(old, max_calls=5)
    await store.record_exchange("pl_1_v01s5", "old", _exchange("a"))
    new = RolloutOpening("pl_1", "pl_1_v01s5", "new", 1)
    await store.open_rollout(new)
    assert await store.admit_call(old, max_calls=5) is Admission.UNKNOWN
    assert not await store.record_exchange("pl_1_v01s5", "old", _exchange("stale"))
    for wrong in (RolloutOpening("pl_2", "pl_1_v01s5", "new", 1),
                  RolloutOpening("pl_1", "pl_1_v01s5", "new", 2)):
        assert await store.admit_call(wrong, max_calls=5) is Admission.UNKNOWN
    assert await store.admit_call(new, max_calls=5) is Admission.ADMITTED
    assert await store.close_rollout("pl_1_v01s5", "new") == []
    await store.open_rollout(RolloutOpening("pl_1", "pl_1_v00s1", "x", 0))
    await store.open_rollout(RolloutOpening("pl_1", "pl_1_v00s2", "y", 0))
    await store.record_exchange("pl_1_v00s1", "x", _exchange("a"))
    await store.open_rollout(RolloutOpening("pl_9", "pl_9_v00s1", "z", 0))
    assert await store.drop_open_rollouts("pl_1") == 2
    assert await store.rollout_exchanges("pl_1_v00s1", "x") == []
    assert await store.admit_call(RolloutOpening("pl_9", "pl_9_v00s1", "z", 0),
                                  max_calls=1) is Admission.ADMITTED
    await store.close()


async def test_the_call_limit_holds_under_concurrent_admissions(tmp_path: Path) -> None:
    first, second = await _two(tmp_path)
    opening = RolloutOpening("pl_1", "pl_1_v01s5", "n", 1)
    await first.open_rollout(opening)
    answers = await asyncio.gather(*(s.admit_call(opening, max_calls=7)
                                     for s in (first, second) * 10))
    assert answers.count(Admission.ADMITTED) == 7
    assert answers.count(Admission.OVER_LIMIT) == 13
    await first.close()
    await second.close()


async def test_usage_adds_up_across_writers_and_survives_reopen(tmp_path: Path) -> None:
    first, second = await _two(tmp_path)
    assert await first.get_usage("pl_1") == JobUsage()
    await asyncio.gather(*(s.add_usage("pl_1", JobUsage(policy_prompt_tokens=10,
                                                        policy_completion_tokens=1))
                           for s in (first, second) * 5))
    total = await second.add_usage("pl_1", JobUsage(rollouts=3, proposer_tokens=7,
                                                    proposer_cost_usd=0.25))
    assert total == JobUsage(3, 100, 10, 7, 0.25)
    assert await first.get_usage("pl_2") == JobUsage()
    await first.close()
    await second.close()
    reopened = SqliteJobStore(tmp_path / "db")
    await reopened.open()
    assert await reopened.get_usage("pl_1") == total
    await reopened.close()


async def test_rollouts_from_a_position_catch_a_replica_up(tmp_path: Path) -> None:
    first, second = await _two(tmp_path)
    for seed in range(4):
        await (first if seed % 2 else second).record_rollout(
            "pl_1", RolloutResult(f"pl_1_v00s{seed}", 0, seed, "val", 0.5))
    await first.record_rollout("pl_2", RolloutResult("pl_2_v00s0", 0, 0, "val", 0.5))
    assert [r.seed for r in await second.list_rollouts_from("pl_1", 1)] == [1, 2, 3]
    assert [r.seed for r in await second.list_rollouts_from("pl_1", 0)] == [0, 1, 2, 3]
    assert await first.list_rollouts_from("pl_1", 4) == []
    await first.close()
    await second.close()


async def test_a_late_save_never_reopens_a_job_that_ended(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from orchestrator import JobStatus
    from orchestrator._models import JobRecord

    from .test_store_sqlite import SPEC

    store = SqliteJobStore(tmp_path / "db")
    await store.open()
    job = JobRecord(job_id="pl_1", owner="own", spec=SPEC, status=JobStatus.RUNNING,
                    created_at=datetime(2026, 1, 1, tzinfo=UTC))
    await store.create_job(job)
    job.status, job.phase = JobStatus.CANCELLED, "done"
    await store.save_job(job)
    job.status, job.phase = JobStatus.RUNNING, "evaluate"  # a cancelled batch's last flush
    await store.save_job(job)
    stored = await store.get_job("pl_1")
    assert stored is not None and stored.status is JobStatus.CANCELLED and stored.phase == "done"
    await store.close()


async def test_an_interceptor_replica_serves_a_rollout_another_process_opened(
        tmp_path: Path) -> None:
    """StoreBook on both sides, over two connections: what the interceptor replica needs it
    reads from the store, and the budget it enforces is the one metered there."""
    import os
    from datetime import UTC, datetime

    from mipro._pricing import PriceTable
    from orchestrator import JobStatus
    from orchestrator._budget import Budget, Meter
    from orchestrator._exchanges import CallRefused, RolloutGrant
    from orchestrator._models import CandidateRecord, JobRecord
    from orchestrator._rollout_book import StoreBook
    from orchestrator._secrets import EnvKeyVault
    from orchestrator._tokens import RolloutClaims

    from .test_store_sqlite import SPEC

    vault = EnvKeyVault(os.urandom(32))
    worker_store = SqliteJobStore(tmp_path / "db", vault=vault)
    interceptor_store = SqliteJobStore(tmp_path / "db", vault=vault)
    await worker_store.open()
    await interceptor_store.open()
    prices = PriceTable.load()
    spec = dataclasses.replace(SPEC, max_tokens=100)
    job = JobRecord(job_id="pl_1", owner="own", spec=spec, status=JobStatus.RUNNING,
                    created_at=datetime.now(UTC), started_at=datetime.now(UTC),
                    candidates=[CandidateRecord(0, "base", "baseline"),
                                CandidateRecord(1, "be brief", "tip", round=1)])
    await worker_store.create_job(job)
    await worker_store.put_env_key("own", spec.env_key_name, "env-secret")
    worker, interceptor = (StoreBook(s, prices=prices, max_calls_per_rollout=2)
                           for s in (worker_store, interceptor_store))
    await worker.open(RolloutGrant(job_id="pl_1", rollout_id="pl_1_v01s5", nonce="n1",
                                   candidate_index=1, instruction="be brief",
                                   policy=spec.policy, environment_key="env-secret"))
    claims = RolloutClaims("pl_1", 1, "pl_1_v01s5", "n1", expires_at=2**40)
    grant = await interceptor.admit(claims)
    assert (grant.instruction, grant.environment_key, grant.policy) == (
        "be brief", "env-secret", spec.policy)
    assert await interceptor.spent(grant) is None
    await interceptor.record(grant, _exchange("a", "provider said 500"))
    await interceptor.meter_call(grant, 90, 20)  # over max_tokens=100, metered in the store
    assert await interceptor.spent(grant) == "max_tokens"
    assert await worker.provider_error("pl_1_v01s5", "n1") == "provider said 500"
    meter = Meter(Budget.of(spec), started_at=datetime.now(UTC), prices=prices,
                  policy_model=spec.policy.model, proposer_model=spec.proposer.model)
    await worker.refresh_meter("pl_1", meter)
    assert meter.policy_tokens == 110 and meter.exhausted() == "max_tokens"
    await interceptor.admit(claims)
    with pytest.raises(CallRefused) as refused:  # its third call: over the limit of 2
        await interceptor.admit(claims)
    assert refused.value.status == 429
    assert len(await worker.close("pl_1_v01s5", "n1")) == 1
    with pytest.raises(CallRefused) as refused:  # closed: refused before anything is read
        await interceptor.admit(claims)
    assert refused.value.status == 404
    await worker_store.close()
    await interceptor_store.close()
