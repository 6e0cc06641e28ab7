"""The store's part of stateless replicas on SQLite, beyond what `test_store_sqlite.py` checks
on both dialects: metered usage kept across a reopen, and an interceptor replica served over
`StoreBook` by a second connection, as a separate process would be."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orchestrator import SqliteJobStore
from orchestrator._exchanges import Exchange
from orchestrator._store import JobUsage


def _exchange(text: str, error: str = "") -> Exchange:
    return Exchange(messages=[{"role": "user", "content": text}],
                    response=None if error else {"choices": [{"message": {"content": text}}]},
                    prompt_tokens=3, completion_tokens=2, latency_ms=1.5, error=error)


async def _two(tmp_path: Path) -> tuple[SqliteJobStore, SqliteJobStore]:
    first, second = SqliteJobStore(tmp_path / "db"), SqliteJobStore(tmp_path / "db")
    await first.open()
    await second.open()
    return first, second


async def test_usage_survives_reopen(tmp_path: Path) -> None:
    first, second = await _two(tmp_path)
    await first.add_usage("pl_1", JobUsage(policy_prompt_tokens=10, policy_completion_tokens=1))
    total = await second.add_usage("pl_1", JobUsage(rollouts=3, proposer_tokens=7,
                                                    proposer_cost_usd=0.25))
    await first.close()
    await second.close()
    reopened = SqliteJobStore(tmp_path / "db")
    await reopened.open()
    assert await reopened.get_usage("pl_1") == total == JobUsage(3, 10, 1, 7, 0.25)
    await reopened.close()


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
