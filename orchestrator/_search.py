"""Budget-aware search over candidates: which (candidate, seed) rollouts to run next, and
which candidate wins.

Pure and deterministic: no I/O, no clock, no hidden randomness. Every function reads one
`SearchState` (the candidates, the validation seeds, every result scored so far and the
rollouts still allowed) and nothing else, so the engine can ask again at any time, after a
restart included, and get the same answer.

The algorithm
-------------
*Enough budget.* When the budget covers every (candidate, seed) pair not scored yet, the
search asks for all of them in one batch, seed-major, and the winner is picked from the
complete table.

*Not enough budget: paired successive halving with racing.* Seeds are put in one order for
every candidate: those already scored for the most candidates first (earlier proposal rounds
screen on the first validation seeds), the rest shuffled by `SearchState.seed`. Every
candidate is always evaluated on a *prefix* of that order, so any two candidates are
compared on the seeds they share: a seed that is hard for everyone costs every candidate
alike and cancels out of the comparison.

1. *Plan.* From the candidates still in the race (`m`), the prefix they share (`n`) and the
   rollouts left (`r`), plan successive halving down to `f` finalists, each round spending the
   same number of rollouts, the finalists going to the full validation set: the final pick
   is always evaluated on every seed when the budget allows it (that share is reserved
   first). `f` is the feasible count closest to "the finalists use about half of what is
   left", so a large budget keeps several finalists and a small one narrows to one.
2. *Race.* The race extends every candidate in it by a few seeds per batch (at least
   `max_concurrent` rollouts per batch while more than a few candidates remain). After
   each batch, a candidate trailing the last one the planned cut would keep by more than
   `RACING_Z` standard errors of their paired difference on the shared prefix leaves the
   race at once; when that already brings the race down to the planned number, the cut is
   made there.
3. *Cut.* At the planned prefix the candidates are ranked by their mean on that prefix
   (eligible first, then mean, seeds scored, index) and only the planned number stays; the
   rest of the race is re-planned from there, so rollouts saved by racing go to the
   remaining candidates.
4. *Leftovers.* When the plan is done and budget is left (results from earlier rounds were
   reused, or a candidate left the race early), the best candidate not fully evaluated,
   judged against the leader on their shared seeds, is completed, if the budget covers it.

When the budget cannot take even one candidate to the full set, the race halves down to one
candidate and takes it as deep as the budget goes. The plan counts every pair of its own
region, reused ones included; if results outside it (screening of candidates the race
drops) leave the real budget short, the best candidates the real budget can still complete
are completed instead.

The whole schedule is replayed from the results at every call (a cut depends only on the
results on its prefix and on the budget planned so far, never on completion order), so a
batch is a pure function of the state and a resumed job plans the same batches. A pair
already in `results` is never asked for again, and the rollouts of all batches never add up
to more than `budget`.

The winner
----------
The search decides what to run; which candidate wins is the scoreboard's rule
(`_scoreboard.py`), and the race ranks on a prefix with the same `rank_key`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._scoreboard import rank_key

#: A rollout's reward, or None for a failed rollout (left out of means, never scored 0).
Result = float | None

#: Before a planned cut, a candidate trailing the last one the cut would keep by more than
#: this many standard errors of their paired difference leaves the race at once.
RACING_Z = 1.0
#: No racing decision is taken on fewer shared seeds than this.
RACING_MIN_SEEDS = 5
#: The finalists' share of the rollouts left when a plan is made.
FINALIST_SHARE = 0.5
#: Each round of a plan keeps 1/HALVING of the candidates.
HALVING = 2.0
#: Each step of the race extends the candidates by at least this many seeds.
MIN_STEP_SEEDS = 3

_MISSING = object()


@dataclass(frozen=True)
class SearchState:
    """Everything the search reads: the candidates, the seeds, the results, the budget."""

    num_candidates: int
    """Candidates are indices 0..num_candidates-1; 0 is the baseline."""
    val_seeds: tuple[int, ...]
    """The full validation set, in the job's order."""
    results: Mapping[tuple[int, int], Result]
    """(candidate, seed) -> reward (None for a failed rollout), for every pair scored so far."""
    budget: int | None
    """Validation rollouts still allowed (None: unlimited)."""
    max_failure_rate: float = 0.5
    """A candidate failing more than this share of its attempted rollouts cannot win."""
    seed: int = 0
    """Orders the seeds not scored yet; the same seed gives the same plan."""
    max_concurrent: int = 32
    """Rollouts the engine runs at once: racing batches are made at least this large."""


# -- the next batch --------------------------------------------------------------------------


def next_batch(state: SearchState) -> list[tuple[int, int]]:
    """The (candidate, seed) pairs to run next, all at once; [] when the search is done."""
    k = state.num_candidates
    seeds = _unique(state.val_seeds)
    if k <= 0 or not seeds:
        return []
    missing = [(c, s) for s in seeds for c in range(k) if (c, s) not in state.results]
    if not missing:
        return []
    if state.budget is None or state.budget >= len(missing):
        return missing
    if state.budget <= 0:
        return []
    return _Race(state, seeds).next_batch()


def _unique(seeds: Sequence[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(seeds))


class _Race:
    """Replays the schedule from the results and returns the first batch not yet run."""

    def __init__(self, state: SearchState, seeds: tuple[int, ...]) -> None:
        self.state = state
        self.k = state.num_candidates
        self.v = len(seeds)
        assert state.budget is not None
        self.budget = state.budget
        results = state.results
        coverage = {s: sum(1 for c in range(self.k) if (c, s) in results) for s in seeds}
        shuffled = list(seeds)
        random.Random(state.seed).shuffle(shuffled)
        rank = {s: i for i, s in enumerate(shuffled)}
        self.order = sorted(seeds, key=lambda s: (-coverage[s], rank[s]))
        #: rows[c][i]: candidate c's result on the i-th seed of the order, or _MISSING.
        self.rows = [[results.get((c, s), _MISSING) for s in self.order] for c in range(self.k)]
        known = sum(1 for row in self.rows for r in row if r is not _MISSING)
        #: The rollouts the whole search may use, those already scored included. It is the
        #: same at every call of one search, so every replayed decision is the same too.
        self.total = known + self.budget
        rewards = [float(r) for row in self.rows for r in row  # type: ignore[arg-type]
                   if r is not _MISSING and r is not None]
        spread = (max(rewards) - min(rewards)) if rewards else 1.0
        #: Pseudo-variance added to paired differences, on the rewards' own scale.
        self.prior_var = 0.5 * (spread if spread > 0 else 1.0) ** 2

    # -- figures on a prefix -----------------------------------------------------------------

    def _mean(self, c: int, n: int) -> tuple[float, int, int]:
        """(mean over scored seeds, seeds scored, failures) of candidate c on prefix n."""
        total, scored, failed = 0.0, 0, 0
        for r in self.rows[c][:n]:
            if r is None:
                failed += 1
            elif r is not _MISSING:
                total += float(r)  # type: ignore[arg-type]
                scored += 1
        return (total / scored if scored else -math.inf), scored, failed

    def _ranked(self, alive: list[int], n: int) -> list[int]:
        """`alive` best first on prefix n: eligible before ineligible, then by mean, seeds
        scored and index."""
        rate = self.state.max_failure_rate

        def key(c: int) -> tuple[bool, int, float, int, int]:
            mean, scored, failed = self._mean(c, n)
            return rank_key(c, mean if scored else None, scored, failed, rate)

        return sorted(alive, key=key)

    def _z(self, leader: int, c: int, n: int) -> float:
        """Paired z-score of leader minus c on the prefix n (seeds both scored)."""
        diffs = [float(a) - float(b)  # type: ignore[arg-type]
                 for a, b in zip(self.rows[leader][:n], self.rows[c][:n], strict=True)
                 if a is not _MISSING and a is not None and b is not _MISSING and b is not None]
        if len(diffs) < RACING_MIN_SEEDS:
            return 0.0
        mean = sum(diffs) / len(diffs)
        var = (sum((d - mean) ** 2 for d in diffs) + self.prior_var) / len(diffs)
        return mean / math.sqrt(var / len(diffs))

    def _missing(self, alive: Sequence[int], n: int, start: int = 0) -> list[tuple[int, int]]:
        """Pairs of `alive` on order[start:n] not scored yet, seed-major."""
        return [(c, self.order[i]) for i in range(start, n) for c in alive
                if self.rows[c][i] is _MISSING]

    # -- the schedule ------------------------------------------------------------------------

    def next_batch(self) -> list[tuple[int, int]]:
        v = self.v
        alive = list(range(self.k))
        n = 0
        left = self.total  # the plan's own account: every pair of its region counts
        plan = _plan(len(alive), n, left, v)
        while True:
            m = len(alive)
            if m * (v - n) <= left:  # the finalists: everyone left goes to the full set
                batch = self._missing(alive, v)
                if batch:
                    return self._guard(batch, alive, n)
                return self._leftovers(alive)
            if plan is None:  # the budget cannot take one candidate to the full set
                return self._deepen(alive, n, left)
            survivors, cut = plan[0]
            if cut <= n:
                alive = self._ranked(alive, n)[:survivors]
                plan = _plan(len(alive), n, left, v)
                continue
            step = max(MIN_STEP_SEEDS, -(-self.state.max_concurrent // m))
            to = min(cut, n + step)
            batch = self._missing(alive, to, n)
            if batch:
                return self._guard(batch, alive, n)
            left -= m * (to - n)
            n = to
            if n >= RACING_MIN_SEEDS and m > 1:
                # race against the last candidate the planned cut would keep
                ranked = self._ranked(alive, n)
                line = ranked[min(survivors, m) - 1]
                alive = ranked[:survivors] + [c for c in ranked[survivors:]
                                              if self._z(line, c, n) <= RACING_Z]
                if len(alive) <= survivors:  # the cut is made: plan the rest from here
                    plan = _plan(len(alive), n, left, v)

    def _deepen(self, alive: list[int], n: int, left: int) -> list[tuple[int, int]]:
        """Too little budget for a full evaluation: halve down to one candidate, each round
        spending the same, and take it as deep as the budget goes."""
        while alive:
            m = len(alive)
            rounds = max(1, math.ceil(math.log2(m)) + 1) if m > 1 else 1
            per_round = left // rounds
            to = min(self.v, n + max(1, per_round // m))
            if m == 1:
                to = min(self.v, n + left)
            if to > n and m * (to - n) <= left:
                batch = self._missing(alive, to, n)
                if batch:
                    return batch[: self.budget]
                left -= m * (to - n)
                n = to
            if m == 1:
                return []
            alive = self._ranked(alive, n)[: max(1, math.ceil(m / 2))]
        return []

    def _guard(self, batch: list[tuple[int, int]], alive: list[int],
               n: int) -> list[tuple[int, int]]:
        """`batch`, if the real budget still covers completing the best of `alive` after it;
        otherwise the best of `alive` that the budget can still complete.

        The plan counts every pair it asks for, reused ones included, so this only bites
        when results outside the plan (earlier screening) were counted in the budget."""
        if len(batch) <= self.budget and self._fits_after(batch, alive, n):
            return batch
        chosen: list[tuple[int, int]] = []
        for c in self._ranked(alive, n):
            need = self._missing([c], self.v)
            if len(chosen) + len(need) > self.budget:
                break
            chosen += need
        if not chosen:
            return batch[: self.budget]
        position = {s: i for i, s in enumerate(self.order)}
        return sorted(chosen, key=lambda p: (position[p[1]], p[0]))

    def _fits_after(self, batch: list[tuple[int, int]], alive: list[int], n: int) -> bool:
        """Whether, after `batch`, the budget still covers completing the best of `alive`."""
        best = self._ranked(alive, n)[0]
        planned = set(batch)
        need = sum(1 for p in self._missing([best], self.v) if p not in planned)
        return len(batch) + need <= self.budget

    def _leftovers(self, finalists: list[int]) -> list[tuple[int, int]]:
        """After the plan: complete the most promising candidate left out, if affordable."""
        full = [c for c in range(self.k) if all(r is not _MISSING for r in self.rows[c])]
        if not full:
            return []
        leader = self._ranked(full, self.v)[0]
        best: tuple[float, int] | None = None
        for c in range(self.k):
            if c in full:
                continue
            need = self._missing([c], self.v)
            if not need or len(need) > self.budget:
                continue
            shared = sum(1 for r in self.rows[c] if r is not _MISSING)
            if shared == 0:
                gap = -math.inf
            else:
                gap = -self._z(leader, c, self._prefix(c))
            if best is None or (gap, -c) > (best[0], -best[1]):
                best = (gap, c)
        if best is None:
            return []
        return self._missing([best[1]], self.v)

    def _prefix(self, c: int) -> int:
        n = 0
        for r in self.rows[c]:
            if r is _MISSING:
                break
            n += 1
        return n


def _plan(m: int, n: int, left: int, v: int) -> list[tuple[int, int]] | None:
    """Successive halving of `m` candidates sharing prefix `n` with `left` rollouts: the
    rounds as (survivors, prefix at which they are chosen), ending with the finalists on the
    full set; None when not even one candidate can be taken to the full set."""
    if m * (v - n) <= left:
        return [(m, v)]
    options: list[tuple[int, list[tuple[int, int]]]] = []
    for finalists in range(1, m):
        sizes = [m]
        while sizes[-1] > finalists:
            sizes.append(max(finalists, min(sizes[-1] - 1, math.ceil(sizes[-1] / HALVING))))
        rounds = len(sizes) - 1  # elimination rounds before the finalists' round
        reserve = finalists * (v - n)
        weight = rounds - finalists * sum(1 / s for s in sizes[:-1])
        if weight <= 0 or left < reserve:
            continue
        per_round = (left - reserve) / weight
        cuts, at = [], float(n)
        for s in sizes[:-1]:
            at += per_round / s
            cuts.append(int(at))
        if cuts[-1] > v:
            continue
        options.append((finalists, [(sizes[i + 1], cuts[i]) for i in range(rounds)]
                        + [(finalists, v)]))
    if not options:
        return None
    target = FINALIST_SHARE * left / (v - n)
    return min(options, key=lambda o: (abs(o[0] - target), o[0]))[1]
