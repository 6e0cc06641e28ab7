"""The running slots are shared round-robin by tenant, within a per-tenant cap."""

from __future__ import annotations

import asyncio

from orchestrator._scheduler import FairScheduler


def test_one_tenants_backlog_does_not_block_another_tenant() -> None:
    scheduler = FairScheduler(max_running=2, per_tenant=2)
    started = [j for j in (f"a{i}" for i in range(50)) if scheduler.submit(j, "a")]
    assert started == ["a0", "a1"]
    assert not scheduler.submit("b0", "b") and not scheduler.submit("b1", "b")
    # Each freed slot alternates between the tenants with waiting jobs, oldest job first.
    order = [*scheduler.done("a0"), *scheduler.done("a1"), *scheduler.done("b0"),
             *scheduler.done("a2")]
    assert order == ["b0", "a2", "b1", "a3"]
    assert scheduler.waiting("b") == 0 and scheduler.waiting("a") == 46


def test_the_per_tenant_cap_leaves_free_slots_to_others() -> None:
    scheduler = FairScheduler(max_running=4, per_tenant=1)
    assert scheduler.submit("a0", "a") and not scheduler.submit("a1", "a")
    assert not scheduler.can_start_now("a") and scheduler.can_start_now("b")
    assert scheduler.submit("b0", "b")  # a free slot, and b runs nothing yet
    assert scheduler.running("a") == 1 and scheduler.waiting("a") == 1
    assert scheduler.done("a0") == ["a1"]


def test_a_cancelled_waiting_job_gives_up_its_place() -> None:
    scheduler = FairScheduler(max_running=1, per_tenant=1)
    assert scheduler.submit("a0", "a")
    assert not scheduler.submit("a1", "a") and not scheduler.submit("a2", "a")
    assert scheduler.done("a1") == []  # cancelled while queued: nothing starts
    assert scheduler.waiting("a") == 1
    assert scheduler.done("a0") == ["a2"]
    assert scheduler.done("a0") == []  # done twice does nothing
    assert scheduler.done("a2") == [] and scheduler.can_start_now("a")


async def test_wait_returns_when_the_slot_is_granted() -> None:
    scheduler = FairScheduler(max_running=1, per_tenant=1)
    scheduler.submit("a0", "a")
    scheduler.submit("b0", "b")
    waiter = asyncio.create_task(scheduler.wait("b0"))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    scheduler.done("a0")
    await asyncio.wait_for(waiter, timeout=1.0)
