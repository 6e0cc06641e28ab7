"""What the example task app recorded for a job (`--record`), and the winner that the README's
rule ("How the winner is picked") picks from those records.

This is the test's own reading of the rule, written from the README, not the engine's code:
a job whose reported winner differs from it picked wrongly, or reported wrongly, whatever
model answered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

#: (candidate index, seed) -> the reward, or None for a rollout that returned none.
Results = dict[tuple[int, int], float | None]


def job_results(record: Path, job_id: str, seeds: Sequence[int]) -> Results:
    """The result of every rollout of `job_id` on `seeds`, by candidate and seed. A pair tried
    more than once (a retry) counts as scored when any attempt returned a reward."""
    wanted = set(seeds)
    results: Results = {}
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        if not (entry["run_id"] or "").startswith(job_id) or entry["seed"] not in wanted:
            continue
        pair = (int(entry["policy_id"].removeprefix("cand_")), entry["seed"])
        if entry["reward"] is not None or pair not in results:
            results[pair] = entry["reward"]
    return results


def mean_reward(results: Results, candidate: int) -> float | None:
    """The candidate's mean over the seeds that returned a reward (None when none did)."""
    rewards = [r for (c, _), r in results.items() if c == candidate and r is not None]
    return sum(rewards) / len(rewards) if rewards else None


def winner(results: Results, val_seeds: Sequence[int]) -> int | None:
    """The candidate the README's rule picks from the validation results, or None."""
    standings = []
    for candidate in sorted({c for c, _ in results}):
        outcomes = [results[(candidate, s)] for s in val_seeds if (candidate, s) in results]
        scored = [r for r in outcomes if r is not None]
        failures = len(outcomes) - len(scored)
        if scored and failures <= len(outcomes) / 2:
            standings.append((candidate, sum(scored) / len(scored), len(scored), len(outcomes)))
    if not standings:
        return None
    complete = [s for s in standings if s[3] == len(set(val_seeds))]
    pool = complete or [s for s in standings if s[3] == max(s[3] for s in standings)]
    # Highest mean; a tie goes to more seeds scored, then to the lower index.
    return max(pool, key=lambda s: (s[1], s[2], -s[0]))[0]
