"""The scoreboard: the one home of per-candidate tallies, eligibility, ranking and the winner.

Every finished rollout is folded in by `record` in O(1): a sum, a count and a failure count
per (phase, candidate), plus the job-wide counters the API reports. Rankings and the winner
are read from the tallies (O(candidates)), never recomputed from the history.

The rules (the README's "How the winner is picked")
---------------------------------------------------
*Eligible*: the candidate has a mean (at least one validation seed returned a reward) and
its failed validation rollouts are at most `max_failure_rate` of those attempted.

*Ranking*: eligible before ineligible; then more validation seeds attempted (so only the
candidates evaluated on the most seeds, the whole validation set when any is, compete for
first place); then the higher mean; then more seeds scored; then the lower index, so the
baseline (candidate 0) wins a tie.

*Winner*: the first eligible candidate of that ranking, or None.

A failed rollout (reward None) is never a 0: it is left out of every mean and only counts
against the failure share.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._models import RolloutResult

#: A candidate failing more than this share of its validation rollouts cannot win.
MAX_FAILURE_RATE = 0.5


class Phase(enum.StrEnum):
    """Which part of the plan a rollout belongs to."""

    BOOTSTRAP = "bootstrap"
    VAL = "val"
    TEST = "test"


@dataclass
class Tally:
    """Running figures of one candidate in one phase."""

    total: float = 0.0
    scored: int = 0
    failures: int = 0

    @property
    def attempted(self) -> int:
        return self.scored + self.failures

    @property
    def mean(self) -> float | None:
        return self.total / self.scored if self.scored else None

    def add(self, reward: float | None) -> None:
        if reward is None:
            self.failures += 1
        else:
            self.total += reward
            self.scored += 1


@dataclass(frozen=True)
class Standing:
    """One candidate's validation figures, as ranked."""

    index: int
    mean: float | None
    seeds_scored: int
    failures: int
    fully_evaluated: bool
    """Attempted (scored or failed) on every validation seed."""
    eligible: bool
    excluded_reason: str
    """"failure_rate" when too many of its rollouts failed, else ""."""


def is_eligible(mean: float | None, scored: int, failures: int,
                max_failure_rate: float = MAX_FAILURE_RATE) -> bool:
    """Whether a candidate with these figures may win (see the module's docstring)."""
    return mean is not None and failures <= max_failure_rate * (scored + failures)


def rank_key(index: int, mean: float | None, scored: int, failures: int,
             max_failure_rate: float = MAX_FAILURE_RATE) -> tuple[bool, int, float, int, int]:
    """Sort key of the ranking: best first. The search ranks on a shared seed prefix with it
    too, where every candidate has been attempted on the same seeds."""
    eligible = is_eligible(mean, scored, failures, max_failure_rate)
    return (not eligible, -(scored + failures), -(mean if mean is not None else float("-inf")),
            -scored, index)


@dataclass(frozen=True)
class Usage:
    """Tokens spent by the policy model, in total or for one candidate."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens)


class Scoreboard:
    """Folds rollout results into tallies; answers rankings and the winner."""

    def __init__(self, val_seeds: Iterable[int], *,
                 max_failure_rate: float = MAX_FAILURE_RATE) -> None:
        self._val_seeds = frozenset(val_seeds)
        self.max_failure_rate = max_failure_rate
        self._tallies: dict[tuple[Phase, int], Tally] = {}
        self._usage: dict[int, Usage] = {}
        #: (candidate, seed) -> reward (None: failed) of every validation rollout: what the
        #: search reads. Keys of the other phases are kept only to refuse duplicates.
        self.val_results: dict[tuple[int, int], float | None] = {}
        self._seen: set[tuple[Phase, int, int]] = set()
        self.completed = 0
        self.failed = 0
        self.failures_by_cause: Counter[str] = Counter()
        self.usage = Usage()
        self.num_candidates = 0

    @classmethod
    def from_results(cls, val_seeds: Iterable[int],
                     results: Mapping[tuple[int, int], float | None], *,
                     max_failure_rate: float = MAX_FAILURE_RATE) -> Scoreboard:
        """A scoreboard of validation results only (the search's view), e.g. for a benchmark."""
        board = cls(val_seeds, max_failure_rate=max_failure_rate)
        for (candidate, seed), reward in results.items():
            board.record(Phase.VAL, candidate, seed, reward)
        return board

    # -- folding -----------------------------------------------------------------------------

    def has(self, phase: Phase, candidate: int, seed: int) -> bool:
        return (phase, candidate, seed) in self._seen

    def record(self, phase: Phase, candidate: int, seed: int, reward: float | None, *,
               cause: str = "", usage: Usage = Usage()) -> bool:
        """Folds one result in, O(1); False (and nothing changes) if it was recorded before."""
        key = (phase, candidate, seed)
        if key in self._seen:
            return False
        self._seen.add(key)
        self.num_candidates = max(self.num_candidates, candidate + 1)
        if phase is Phase.VAL:
            if seed not in self._val_seeds:
                raise ValueError(f"seed {seed} is not a validation seed")
            self.val_results[(candidate, seed)] = reward
        tally = self._tallies.get((phase, candidate))
        if tally is None:
            tally = self._tallies[(phase, candidate)] = Tally()
        tally.add(reward)
        if reward is None:
            self.failed += 1
            self.failures_by_cause[cause or "unknown"] += 1
        else:
            self.completed += 1
        if usage.total:
            self._usage[candidate] = self._usage.get(candidate, Usage()) + usage
            self.usage = self.usage + usage
        return True

    def fold(self, result: RolloutResult) -> bool:
        """Folds a stored or fresh rollout result in (see `record`)."""
        return self.record(Phase(result.phase), result.candidate_index, result.seed,
                           result.reward, cause=result.failure_cause,
                           usage=Usage(result.prompt_tokens, result.completion_tokens))

    # -- reading -----------------------------------------------------------------------------

    def tally(self, phase: Phase, candidate: int) -> Tally:
        return self._tallies.get((phase, candidate)) or Tally()

    def candidate_usage(self, candidate: int) -> Usage:
        return self._usage.get(candidate, Usage())

    def standing(self, candidate: int) -> Standing:
        t = self.tally(Phase.VAL, candidate)
        eligible = is_eligible(t.mean, t.scored, t.failures, self.max_failure_rate)
        too_many_failures = t.failures > self.max_failure_rate * t.attempted
        return Standing(
            index=candidate, mean=t.mean, seeds_scored=t.scored, failures=t.failures,
            fully_evaluated=bool(self._val_seeds) and t.attempted == len(self._val_seeds),
            eligible=eligible,
            excluded_reason="failure_rate" if t.attempted and too_many_failures else "")

    def ranked(self, num_candidates: int | None = None) -> list[Standing]:
        """Every candidate's standing, best first."""
        count = self.num_candidates if num_candidates is None else num_candidates
        standings = [self.standing(c) for c in range(count)]
        return sorted(standings, key=lambda s: rank_key(
            s.index, s.mean, s.seeds_scored, s.failures, self.max_failure_rate))

    def winner(self, num_candidates: int | None = None) -> int | None:
        """The winning candidate's index, or None when no candidate is eligible."""
        ranked = self.ranked(num_candidates)
        return ranked[0].index if ranked and ranked[0].eligible else None
