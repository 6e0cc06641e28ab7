"""The stages of a task app, read from the baseline's bootstrap traces.

Each call the interceptor saw is tagged with a stage key (`_candidate_prompt.stage_key`): the
stage id the task app put in its inference URL, else the fingerprint of the call's system
message. After bootstrap:

- a declared stage (`modules[].stages[]`) that was seen is a stage, in declared order;
- so is any other stage id seen in a URL, in order of first appearance;
- so is a fingerprint seen in at least half of the scored bootstrap rollouts (a system
  message that changes with every seed, because it embeds the input, is no stage);
- with fewer than two stages and none declared, the job is single-stage: one stage under
  `DEFAULT_STAGE`, whose prompt applies to every call, as an instruction-only job always did.

Each stage has its baseline instruction (the system message its calls carried most often),
its scored examples for the proposer, and the settings of its declaration.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._candidate_prompt import DEFAULT_STAGE, is_fingerprint
from ._models import JobSpec, RolloutResult


@dataclass(frozen=True)
class Stage:
    """One stage of the job's task app."""

    key: str
    baseline_instruction: str
    #: Whether candidates replace its instruction (`max_instruction_slots` > 0).
    optimize_instruction: bool
    #: Demos per demo set in this stage, at most.
    max_demos: int


def calls_of(result: RolloutResult) -> list[dict[str, Any]]:
    """The traced calls of a rollout (`_exchanges.trace_of`'s `calls`)."""
    calls = (result.trace or {}).get("calls")
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def calls_in(result: RolloutResult, key: str) -> list[dict[str, Any]]:
    """The rollout's calls of stage `key` (all of them for `DEFAULT_STAGE`)."""
    return [c for c in calls_of(result) if key == DEFAULT_STAGE or c.get("stage") == key]


def discover(spec: JobSpec, bootstrap: Sequence[RolloutResult],
             baseline: str) -> tuple[Stage, ...]:
    """The job's stages (see the module's docstring); `baseline` is the single-stage
    baseline instruction."""
    scored = [r for r in bootstrap if r.ok and r.trace]
    seen: list[str] = []
    rollouts_with: Counter[str] = Counter()
    instructions: dict[str, Counter[str]] = {}
    for result in scored:
        in_rollout: set[str] = set()
        for call in calls_of(result):
            key = str(call.get("stage", ""))
            if key not in instructions:
                seen.append(key)
                instructions[key] = Counter()
            instructions[key][str(call.get("instruction", ""))] += 1
            in_rollout.add(key)
        rollouts_with.update(in_rollout)
    declared = {s.stage_id: s for s in spec.stages}
    needed = max(1, math.ceil(len(scored) / 2))
    keys = [s.stage_id for s in spec.stages if s.stage_id in instructions]
    keys += [k for k in seen if k and not is_fingerprint(k) and k not in declared]
    keys += [k for k in seen if is_fingerprint(k) and rollouts_with[k] >= needed]
    if len(keys) < 2 and not spec.stages:
        return (Stage(DEFAULT_STAGE, baseline, True, spec.max_demo_set_size),)
    stages = []
    for key in keys:
        declaration = declared.get(key)
        stages.append(Stage(
            key=key, baseline_instruction=instructions[key].most_common(1)[0][0],
            optimize_instruction=declaration is None or declaration.max_instruction_slots > 0,
            max_demos=(declaration.max_demo_slots if declaration is not None
                       else spec.max_demo_set_size)))
    return tuple(stages)


def is_multi_stage(stages: Sequence[Stage]) -> bool:
    return any(s.key != DEFAULT_STAGE for s in stages)
