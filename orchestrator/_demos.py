"""Few-shot demo sets, bootstrapped from the baseline's scored bootstrap rollouts.

A bootstrap rollout *qualifies* when its reward is at least `few_shot_score_threshold` and
its seed is neither a validation nor a test seed (so a demo never shows the answer of a seed
it is scored on). A demo set is an ordered choice of qualified rollouts; in each stage, a
rollout's demo is its last call of that stage (the fullest conversation: the user turn, any
tool turns, the model's answer), as `_candidate_prompt.demo_turns` recorded it.

`demo_sets` returns the empty set `d0` first, then up to `max_demo_sets` distinct sets
`d1`, `d2`, ... of `max_demo_set_size` rollouts each, drawn with the job's seed (DSPy's
bootstrap random search draws its candidate sets the same way). Everything here is a pure
function of the bootstrap results and the spec, so a resumed job rebuilds the same sets.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._candidate_prompt import Message
from ._models import JobSpec, RolloutResult
from ._stages import Stage, calls_in

#: Draws tried per wanted demo set before giving up on finding a new one.
_DRAWS_PER_SET = 8


@dataclass(frozen=True)
class DemoSet:
    """An ordered choice of qualified bootstrap seeds; `d0` is the empty set."""

    id: str
    seeds: tuple[int, ...]


EMPTY = DemoSet("d0", ())


def qualified(spec: JobSpec, bootstrap: Sequence[RolloutResult]) -> list[RolloutResult]:
    """The bootstrap rollouts demos may come from, in the bootstrap seeds' order."""
    held_out = {*spec.val_seeds, *spec.test_seeds}
    return [r for r in bootstrap
            if r.ok and r.reward is not None and r.reward >= spec.few_shot_score_threshold
            and r.seed in spec.bootstrap_train_seeds and r.seed not in held_out
            and any(c.get("turns") for c in calls_in(r, ""))]


def demo_sets(spec: JobSpec, pool: Sequence[RolloutResult]) -> tuple[DemoSet, ...]:
    """`d0` and up to `max_demo_sets` distinct non-empty sets drawn from `pool`."""
    seeds = [r.seed for r in pool]
    size = min(spec.max_demo_set_size, len(seeds))
    sets = [EMPTY]
    if size == 0:
        return tuple(sets)
    rng = random.Random(f"{spec.seed}/demo-sets")
    seen: set[tuple[int, ...]] = set()
    for _ in range(spec.max_demo_sets * _DRAWS_PER_SET):
        if len(sets) > spec.max_demo_sets:
            break
        drawn = tuple(rng.sample(seeds, size))
        if tuple(sorted(drawn)) in seen:
            continue
        seen.add(tuple(sorted(drawn)))
        sets.append(DemoSet(f"d{len(sets)}", drawn))
    return tuple(sets)


def stage_demos(stage: Stage, demo_set: DemoSet,
                by_seed: Mapping[int, RolloutResult]) -> tuple[tuple[Message, ...], ...]:
    """The demos of `demo_set` in `stage`: per seed, the turns of its last call there, at
    most `stage.max_demos`."""
    demos: list[tuple[Message, ...]] = []
    for seed in demo_set.seeds:
        if len(demos) >= stage.max_demos:
            break
        result = by_seed.get(seed)
        calls = calls_in(result, stage.key) if result is not None else []
        turns: Any = next((c.get("turns") for c in reversed(calls) if c.get("turns")), None)
        if turns:
            demos.append(tuple(dict(t) for t in turns))
    return tuple(demos)
