"""The job store, on SQLite and on Postgres alike (`store_url` is parametrized over both):
what is written is read back, across a reopen, per owner."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator import JobStatus
from orchestrator._exchanges import Exchange
from orchestrator._models import (
    CandidateRecord,
    JobRecord,
    JobSpec,
    PolicySpec,
    ProposerSpec,
    RolloutResult,
)
from orchestrator._secrets import EnvKeyVault
from orchestrator._store import Admission, JobStore, JobUsage, RolloutOpening

from ._stores import store_at

SPEC = JobSpec(task_app_url="http://127.0.0.1:1", policy=PolicySpec("m", "openai", 0.0, 64),
               proposer=ProposerSpec("m", "openai"), bootstrap_train_seeds=(0, 1),
               val_seeds=(5, 6), env_config={"split": "val"})


def _job(job_id: str, owner: str = "own_a", minutes: int = 0, request_id: str = "") -> JobRecord:
    return JobRecord(job_id=job_id, owner=owner, spec=SPEC, status=JobStatus.QUEUED,
                     created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
                     request_id=request_id)


async def test_job_round_trip_survives_reopen(store_url: str) -> None:
    store = store_at(store_url)
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

    reopened = store_at(store_url)
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


async def test_owner_isolation_and_paging(store_url: str) -> None:
    store = store_at(store_url)
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


async def test_request_id_makes_create_idempotent(store_url: str) -> None:
    store = store_at(store_url)
    await store.open()
    first = await store.create_job(_job("pl_a", request_id="r-1"))
    again = await store.create_job(_job("pl_b", request_id="r-1"))
    assert again.job_id == first.job_id == "pl_a"
    assert await store.get_job("pl_b") is None
    await store.close()


async def test_events_are_numbered_without_gaps_under_concurrency(store_url: str) -> None:
    store = store_at(store_url)
    await store.open()
    await asyncio.gather(*(store.append_event("pl_1", "t", f"m{i}", {"i": i}, terminal=False)
                           for i in range(50)))
    events = await store.list_events("pl_1", since_seq=0, limit=1000)
    assert [e.seq for e in events] == list(range(1, 51))
    later = await store.list_events("pl_1", since_seq=45, limit=10)
    assert [e.seq for e in later] == [46, 47, 48, 49, 50]
    await store.close()


async def test_env_keys_replace_per_owner(store_url: str) -> None:
    store = store_at(store_url, vault=EnvKeyVault(os.urandom(32)))
    await store.open()
    await store.put_env_key("own_a", "ENVIRONMENT_API_KEY", "one")
    await store.put_env_key("own_a", "ENVIRONMENT_API_KEY", "two")
    assert await store.get_env_key("own_a", "ENVIRONMENT_API_KEY") == "two"
    assert await store.get_env_key("own_b", "ENVIRONMENT_API_KEY") is None
    await store.close()


async def test_rollout_pages_match_the_interfaces_rule_and_skip_nothing(store_url: str) -> None:
    """The indexed `list_rollouts_page` answers what the interface's default (a filter over
    `list_rollouts`) answers, page after page, with each filter, while rows keep arriving."""
    from orchestrator._store import RolloutFilter

    store = store_at(store_url)
    await store.open()
    for job_id in ("pl_1", "pl_2"):  # interleaved, so positions of one job are not dense
        await store.create_job(_job(job_id))
    for n in range(30):
        for job_id in ("pl_1", "pl_2"):
            await store.record_rollout(job_id, RolloutResult(
                f"{job_id}_r{n}", n % 3, 100 + n % 7, "val" if n % 5 else "bootstrap",
                None if n % 4 == 0 else n / 30, "timeout" if n % 4 == 0 else "",
                trace={"n": n}))

    async def pages(read: Any, where: RolloutFilter | None) -> list[list[str]]:
        found: list[list[str]] = []
        after = 0
        while rows := await read("pl_1", after=after, limit=4, where=where):
            found.append([r.rollout_id for _, r in rows])
            after = rows[-1][0]
        return found

    default = JobStore.list_rollouts_page.__get__(store)
    for where in (None, RolloutFilter(phase="val"), RolloutFilter(ok=False),
                  RolloutFilter(candidate=1, seed=101), RolloutFilter(candidate=9)):
        ours = await pages(store.list_rollouts_page, where)
        assert [len(p) for p in ours] == [len(p) for p in await pages(default, where)]
        flat = [rid for page in ours for rid in page]
        assert flat == [rid for page in await pages(default, where) for rid in page]
        expected = [r.rollout_id for r in await store.list_rollouts("pl_1")
                    if (where or RolloutFilter()).keeps(r)]
        assert flat == expected
    assert all(r.trace is None for _, r in await store.list_rollouts_page(
        "pl_1", after=0, limit=100))
    await store.close()


async def test_writers_in_several_processes_number_one_jobs_events_without_gaps(
        store_url: str) -> None:
    writers, per_writer = 3, 30
    processes = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests._event_writer", store_url, "pl_shared", f"w{n}",
        str(per_writer), cwd=Path(__file__).parent.parent) for n in range(writers)]
    codes = await asyncio.gather(*(p.wait() for p in processes))
    assert codes == [0] * writers
    store = store_at(store_url)
    await store.open()
    events = await store.list_events("pl_shared", since_seq=0, limit=10_000)
    await store.close()
    assert [e.seq for e in events] == list(range(1, writers * per_writer + 1))
    written = sorted((e.data["writer"], e.data["i"]) for e in events)
    assert written == sorted((f"w{n}", i) for n in range(writers) for i in range(per_writer))


async def test_env_keys_survive_a_server_key_rotation_and_are_resealed(store_url: str) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    store = store_at(store_url, vault=EnvKeyVault(old_key))
    await store.open()
    await store.put_env_key("own_a", "ENVIRONMENT_API_KEY", "sk-rotate-me")
    await store.close()
    store = store_at(store_url, vault=EnvKeyVault(new_key, previous=[old_key]))
    await store.open()  # reseals under the new key
    assert await store.get_env_key("own_a", "ENVIRONMENT_API_KEY") == "sk-rotate-me"
    await store.close()
    store = store_at(store_url, vault=EnvKeyVault(new_key))  # the old key is retired
    await store.open()
    assert await store.get_env_key("own_a", "ENVIRONMENT_API_KEY") == "sk-rotate-me"
    await store.close()
    store = store_at(store_url, vault=EnvKeyVault(os.urandom(32)))  # the key is lost
    await store.open()
    assert await store.get_env_key("own_a", "ENVIRONMENT_API_KEY") is None
    await store.close()


# -- open rollouts, exchanges and usage: what interceptor and worker replicas share ------------

def _exchange(text: str, error: str = "") -> Exchange:
    return Exchange(messages=[{"role": "user", "content": text}],
                    response=None if error else {"choices": [{"message": {"content": text}}]},
                    prompt_tokens=3, completion_tokens=2, latency_ms=1.5, error=error)


async def _two(store_url: str) -> tuple[JobStore, JobStore]:
    """Two stores on one database, as two processes would have."""
    first, second = store_at(store_url), store_at(store_url)
    await first.open()
    await second.open()
    return first, second


async def test_an_opening_is_served_by_another_store_and_closed_once(store_url: str) -> None:
    worker, interceptor = await _two(store_url)
    opening = RolloutOpening("pl_1", "pl_1_v01s5", "n1", 1)
    await worker.open_rollout(opening)
    assert await interceptor.admit_call(opening, max_calls=2) is Admission.ADMITTED
    assert await interceptor.record_exchange("pl_1_v01s5", "n1", _exchange("a"))
    assert await interceptor.admit_call(opening, max_calls=2) is Admission.ADMITTED
    assert await interceptor.record_exchange("pl_1_v01s5", "n1", _exchange("b", "boom"))
    assert await interceptor.admit_call(opening, max_calls=2) is Admission.OVER_LIMIT
    assert [e.error for e in await worker.rollout_exchanges("pl_1_v01s5", "n1")] == ["", "boom"]
    closed = await worker.close_rollout("pl_1_v01s5", "n1")
    assert closed == [_exchange("a"), _exchange("b", "boom")]
    assert await interceptor.admit_call(opening, max_calls=2) is Admission.UNKNOWN
    assert not await interceptor.record_exchange("pl_1_v01s5", "n1", _exchange("late"))
    assert await worker.close_rollout("pl_1_v01s5", "n1") == []
    # A new opening replaces the old one and drops its exchanges; others are unknown.
    await worker.open_rollout(RolloutOpening("pl_1", "pl_1_v01s5", "old", 1))
    await interceptor.record_exchange("pl_1_v01s5", "old", _exchange("stale"))
    new = RolloutOpening("pl_1", "pl_1_v01s5", "new", 1)
    await worker.open_rollout(new)
    for wrong in (RolloutOpening("pl_1", "pl_1_v01s5", "old", 1),
                  RolloutOpening("pl_2", "pl_1_v01s5", "new", 1),
                  RolloutOpening("pl_1", "pl_1_v01s5", "new", 2)):
        assert await interceptor.admit_call(wrong, max_calls=5) is Admission.UNKNOWN
    assert await worker.rollout_exchanges("pl_1_v01s5", "old") == []
    await worker.open_rollout(RolloutOpening("pl_1", "pl_1_v00s1", "x", 0))
    await worker.open_rollout(RolloutOpening("pl_9", "pl_9_v00s1", "z", 0))
    assert await worker.drop_open_rollouts("pl_1") == 2
    assert await interceptor.admit_call(new, max_calls=5) is Admission.UNKNOWN
    assert await interceptor.admit_call(RolloutOpening("pl_9", "pl_9_v00s1", "z", 0),
                                        max_calls=1) is Admission.ADMITTED
    await worker.close()
    await interceptor.close()


async def test_the_call_limit_and_usage_hold_under_concurrent_writers(store_url: str) -> None:
    first, second = await _two(store_url)
    opening = RolloutOpening("pl_1", "pl_1_v01s5", "n", 1)
    await first.open_rollout(opening)
    answers = await asyncio.gather(*(s.admit_call(opening, max_calls=7)
                                     for s in (first, second) * 10))
    assert answers.count(Admission.ADMITTED) == 7
    assert answers.count(Admission.OVER_LIMIT) == 13
    assert await first.get_usage("pl_1") == JobUsage()
    await asyncio.gather(*(s.add_usage("pl_1", JobUsage(policy_prompt_tokens=10,
                                                        policy_completion_tokens=1))
                           for s in (first, second) * 5))
    total = await second.add_usage("pl_1", JobUsage(rollouts=3, proposer_tokens=7,
                                                    proposer_cost_usd=0.25))
    assert total == JobUsage(3, 100, 10, 7, 0.25) == await first.get_usage("pl_1")
    assert await first.get_usage("pl_2") == JobUsage()
    for seed in range(4):
        await (first if seed % 2 else second).record_rollout(
            "pl_1", RolloutResult(f"pl_1_v00s{seed}", 0, seed, "val", 0.5))
    await first.record_rollout("pl_2", RolloutResult("pl_2_v00s0", 0, 0, "val", 0.5))
    assert [r.seed for r in await second.list_rollouts_from("pl_1", 1)] == [1, 2, 3]
    assert [r.seed for r in await second.list_rollouts_from("pl_1", 0)] == [0, 1, 2, 3]
    assert await first.list_rollouts_from("pl_1", 4) == []
    await first.close()
    await second.close()


async def test_concurrent_creates_with_one_request_id_make_one_job(store_url: str) -> None:
    first, second = await _two(store_url)
    made = await asyncio.gather(*(s.create_job(_job(f"pl_{i}", request_id="retry-1"))
                                  for i, s in enumerate((first, second) * 4)))
    assert len({j.job_id for j in made}) == 1
    jobs, _ = await first.list_jobs("own_a", status=None, limit=10, page_token="")
    assert [j.job_id for j in jobs] == [made[0].job_id]
    await first.close()
    await second.close()


async def test_a_job_stored_terminal_is_never_changed_again(store_url: str) -> None:
    first, second = await _two(store_url)
    job = await first.create_job(_job("pl_1"))
    job.status, job.best_score = JobStatus.CANCELLED, 0.25
    await first.save_job(job)
    late = await second.get_job("pl_1")
    assert late is not None
    late.status, late.best_score = JobStatus.RUNNING, 0.75  # a replica's late write
    await second.save_job(late)
    stored = await first.get_job("pl_1")
    assert stored is not None and stored.status is JobStatus.CANCELLED
    assert stored.best_score == 0.25
    await first.close()
    await second.close()
