"""What the Temporal host's workflow payloads carry of stored rollouts (issue 12): pages of
at most a set size, in store order, with no trace but a bootstrap one, whose demo turns are
reduced to a flag (Temporal refuses a payload over 2 MB; a bootstrap trace holds up to 8
calls of demo turns of up to 8000 characters each)."""

from __future__ import annotations

from pathlib import Path

from orchestrator import SqliteJobStore
from orchestrator._demos import qualified
from orchestrator._models import JobSpec, PolicySpec, ProposerSpec, RolloutResult
from orchestrator._temporal_worker import stored_page

SPEC = JobSpec(task_app_url="http://127.0.0.1:1", policy=PolicySpec("m", "openai", 0.0, 64),
               proposer=ProposerSpec("m", "openai"), bootstrap_train_seeds=(0, 1),
               val_seeds=(5, 6), few_shot_score_threshold=0.0)
TURNS = [{"role": "user", "content": "x" * 7000}, {"role": "assistant", "content": "billing"}]


def _bootstrap(seed: int) -> RolloutResult:
    call = {"stage": "", "instruction": "Classify.", "input": "x", "output": "billing",
            "turns": TURNS}
    return RolloutResult(f"pl_1_b00s{seed}", 0, seed, "bootstrap", 1.0, trace={
        "instruction": "Classify.", "input": "x", "output": "billing", "calls": [call] * 8})


async def test_stored_rollouts_page_in_store_order_without_demo_turns(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "db")
    await store.open()
    try:
        stored = [_bootstrap(0), _bootstrap(1),
                  *(RolloutResult(f"pl_1_v01s{s}", 1, s, "val", 0.5, trace={"input": "x"})
                    for s in (5, 6, 7))]
        for result in stored:
            await store.record_rollout("pl_1", result)
        pages = [await stored_page(store, "pl_1", start, size=2) for start in (0, 2, 4)]
    finally:
        await store.close()
    assert [p.more for p in pages] == [True, True, False]
    got = [r for p in pages for r in p.results]
    assert [r.rollout_id for r in got] == [r.rollout_id for r in stored]
    assert all(r.trace is None for r in got[2:])  # traces stay in the store
    for result in got[:2]:
        assert result.trace is not None and len(result.trace["calls"]) == 8
        assert all(c["turns"] is True for c in result.trace["calls"])
        assert len(repr(result)) < 3000  # against about 60 kB stored
    # What the workflow's plan reads of them is unchanged: both qualify as demos.
    assert [r.seed for r in qualified(SPEC, got[:2])] == [0, 1]
