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

*Not enough budget: budget-aware successive halving with paired elimination.* Seeds are put
in one order for every candidate (`seed_order`): those already scored for the most
candidates first (the proposal rounds screen on the first seeds of that order), the rest
shuffled by `SearchState.seed`. Every candidate is evaluated on a *prefix* of that order, so any two
candidates are compared on the seeds they share: a seed that is hard for everyone costs
every candidate alike and cancels out of the comparison.

1. *Plan.* From the candidates still in (`m`), the prefix they share (`n`) and the rollouts
   left (`r`), plan rounds of halving, each round spending the same number of rollouts. Two
   shapes are weighed:
   - *to the full set*: halving down to `f` finalists who go to every seed, their full
     pass reserved first; `f` is the feasible count closest to "the finalists use about
     half of what is left";
   - *plain*: successive elimination down to one candidate, each round spending
     1/ceil(log2 m) of what is left (Karnin et al.'s share) but keeping 1/`PLAIN_HALVING`
     (1.6) of the candidates, at least one fewer, rather than half: 8 go 5, 4, 3, 2, 1, so
     the best is rarely cut on the first few seeds. The last choice is taken as deep as the
     budget goes; when that is at least `FULL_PASS_SHARE` of the set anyway, it is made a
     little earlier so that the pick's full pass fits too.
   The plain schedule runs when its pick gets that full pass. Otherwise the plan goes to the
   full set when its first cut is no earlier than the plain one's and it either ends with
   two finalists or more there or makes its last choice on at least `FULL_PASS_SHARE` of the
   prefix the plain schedule would choose on. Otherwise the pick's full pass would cost the
   decision more than it is worth, and the plain schedule runs (the scoreboard then picks
   among the candidates attempted on the most seeds).
2. *Race.* Between the planned cuts the candidates are extended together, each step
   doubling the prefix (at least `MIN_STEP_SEEDS` seeds and `max_concurrent` rollouts).
   After a step, a candidate trailing the last one the planned cut would keep by more than
   `RACING_Z` standard errors of their paired difference leaves at once; when that brings
   the race down to the planned number, the cut is made there.
3. *Cut.* At the planned prefix the candidates are ranked by their mean on that prefix and
   only the planned number stays; a tie on the cut line is broken by a draw from
   `SearchState.seed`, not by index, so the baseline gets no edge it has not earned (it
   still wins a tie for the final pick: the scoreboard's rule). The rest is re-planned from
   there, so rollouts saved by racing go to the candidates still in.
4. *Leftovers.* When the plan is done and budget is left (results from earlier rounds were
   reused, or a candidate left the race early), the best candidate not fully evaluated,
   judged against the leader on their shared seeds, is completed, if the budget covers it.

The plan counts every pair of its own region, reused ones included; if results outside it
(screening of candidates the race drops) leave the real budget short, the best candidates
the real budget can still complete are completed instead. `screening_seeds` keeps the
screening to the seeds every candidate is scored on before the race's first decision, where
it costs the search nothing.

The whole schedule is replayed from the results at every call (a cut depends only on the
results on its prefix and on the budget planned so far, never on completion order), so a
batch is a pure function of the state and a resumed job plans the same batches. A pair
already in `results` is never asked for again, and the rollouts of all batches never add up
to more than `budget`.

The winner
----------
The search decides what to run; which candidate wins is the scoreboard's rule
(`_scoreboard.py`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from ._scoreboard import is_eligible

#: A rollout's reward, or None for a failed rollout (left out of means, never scored 0).
Result = float | None

#: Before a planned cut, a candidate trailing the last one the cut would keep by more than
#: this many standard errors of their paired difference leaves the race at once.
RACING_Z = 2.0
#: No racing decision is taken on fewer shared seeds than this.
RACING_MIN_SEEDS = 5
#: The finalists' share of the rollouts left when a plan to the full set is made.
FINALIST_SHARE = 0.5
#: A plan whose pick goes to the full set must make its last choice on at least this share
#: of the prefix the plain schedule would choose on; otherwise the plain schedule runs. The
#: plain schedule completes its pick when its last choice reaches this share of the set.
FULL_PASS_SHARE = 0.9
#: Each round of a plan to the full set keeps 1/HALVING of the candidates.
HALVING = 2.0
#: Each round of the plain schedule keeps 1/PLAIN_HALVING of the candidates (and at least one
#: fewer): gentler than halving, so the best is rarely cut on the first few seeds.
PLAIN_HALVING = 1.6
#: Each step of the race extends the candidates by at least this many seeds, and by at
#: least 1/STEP_SHARE of the prefix they share (1: the prefix doubles).
MIN_STEP_SEEDS = 3
STEP_SHARE = 1

_MISSING = object()

#: A plan: its rounds as (candidates kept, prefix they are chosen at). The last round's
#: prefix is the whole set when the plan goes there; a last round keeping every candidate
#: left only takes them deeper.
Plan = list[tuple[int, int]]


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
    """Orders the seeds not scored yet and breaks ties on a cut line."""
    max_concurrent: int = 8
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
    batch = _Race(state, seeds).next_batch()
    if not any((0, s) in state.results for s in seeds) and all(c != 0 for c, _ in batch):
        # The baseline is the job's reference (its score is reported; it wins a final tie):
        # a budget too small for every candidate still scores it, on the first seed.
        batch = [(0, seed_order(state)[0]), *batch][:state.budget]
    return batch


def screening_seeds(state: SearchState, screened: int,
                    minibatch_size: int) -> tuple[int, ...]:
    """The validation seeds a proposal round may screen `screened` candidates on (the
    baseline among them) at no cost to the search: the first of `seed_order`, at most
    `minibatch_size`, and no further than the first round of the search's plan for
    `state.num_candidates` candidates (nor than its first racing decision), where every
    candidate is evaluated anyway. None when even that round is too short to tell anything
    (fewer than `MIN_STEP_SEEDS`)."""
    order = seed_order(state)
    k, v = state.num_candidates, len(order)
    wanted = min(minibatch_size, v)
    if k <= 0 or screened <= 0 or wanted <= 0:
        return ()
    if state.budget is None:
        return order[:wanted]
    known = sum(1 for c in range(k) for s in order if (c, s) in state.results)
    total = known + state.budget
    if total >= k * v:
        return order[:wanted]
    plan = _plan(k, 0, total, v)
    first = plan[0][1] if plan and plan[0][0] < k else 0
    if first < MIN_STEP_SEEDS:
        return ()
    return order[:min(wanted, first, _first_race(k, first, state.max_concurrent))]


def _first_race(m: int, cut: int, max_concurrent: int) -> int:
    """The prefix of the race's first decision before a cut at `cut` (or `cut`): a candidate
    may leave there, so a screening beyond it could be wasted."""
    n = 0
    while n < cut:
        n = min(cut, n + max(MIN_STEP_SEEDS, n // STEP_SHARE, -(-max_concurrent // m)))
        if n >= RACING_MIN_SEEDS:
            return n
    return cut


def seed_order(state: SearchState) -> tuple[int, ...]:
    """The one order every candidate is evaluated in: the seeds scored for the most
    candidates first, the rest shuffled by `state.seed`."""
    seeds = _unique(state.val_seeds)
    coverage = {s: sum(1 for c in range(state.num_candidates) if (c, s) in state.results)
                for s in seeds}
    shuffled = list(seeds)
    random.Random(state.seed).shuffle(shuffled)
    rank = {s: i for i, s in enumerate(shuffled)}
    return tuple(sorted(seeds, key=lambda s: (-coverage[s], rank[s])))


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
        self.order = seed_order(state)
        #: Breaks ties on a cut line: a draw, so no index (the baseline's) is favoured.
        self.tiebreak = list(range(self.k))
        random.Random(f"tiebreak:{state.seed}").shuffle(self.tiebreak)
        #: rows[c][i]: candidate c's result on the i-th seed of the order, or _MISSING.
        self.rows = [[results.get((c, s), _MISSING) for s in self.order] for c in range(self.k)]
        #: Running sums along the order: of rewards, of seeds scored, of failures.
        self.sums = [[0.0, *accumulate(float(r) if isinstance(r, float | int) else 0.0
                                       for r in row)] for row in self.rows]
        self.scored = [[0, *accumulate(1 if isinstance(r, float | int) else 0 for r in row)]
                       for row in self.rows]
        self.failed = [[0, *accumulate(1 if r is None else 0 for r in row)]
                       for row in self.rows]
        known = sum(1 for row in self.rows for r in row if r is not _MISSING)
        #: The rollouts the whole search may use, those already scored included. It is the
        #: same at every call of one search, so every replayed decision is the same too.
        self.total = known + self.budget
        rewards = [float(r) for row in self.rows for r in row if isinstance(r, float | int)]
        spread = (max(rewards) - min(rewards)) if rewards else 1.0
        #: Pseudo-variance added to paired differences, on the rewards' own scale.
        self.prior_var = 0.5 * (spread if spread > 0 else 1.0) ** 2

    # -- figures on a prefix -----------------------------------------------------------------

    def _ranked(self, alive: list[int], n: int) -> list[int]:
        """`alive` best first on prefix n: eligible before ineligible, then by mean, seeds
        scored and the tie-break draw."""
        rate = self.state.max_failure_rate

        def key(c: int) -> tuple[bool, float, int, int]:
            scored, failed = self.scored[c][n], self.failed[c][n]
            mean = self.sums[c][n] / scored if scored else None
            eligible = is_eligible(mean, scored, failed, rate)
            return (not eligible, -(mean if mean is not None else -math.inf), -scored,
                    self.tiebreak[c])

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
                    return self._guard(batch, alive, n, left)
                return self._leftovers()
            if not plan:
                return []
            survivors, cut = plan[0]
            if cut <= n:
                alive = self._ranked(alive, n)[:survivors]
                if survivors == m:  # a last round that only went deeper: done
                    return []
                plan = _plan(len(alive), n, left, v)
                continue
            step = max(MIN_STEP_SEEDS, n // STEP_SHARE, -(-self.state.max_concurrent // m))
            to = min(cut, n + step)
            batch = self._missing(alive, to, n)
            if batch:
                return self._guard(batch, alive, n, left)
            left -= m * (to - n)
            n = to
            if n >= RACING_MIN_SEEDS and survivors < m and n < cut:
                # race against the last candidate the planned cut would keep
                ranked = self._ranked(alive, n)
                line = ranked[survivors - 1]
                alive = ranked[:survivors] + [c for c in ranked[survivors:]
                                              if self._z(line, c, n) <= RACING_Z]
                if len(alive) < m:  # saved rollouts: plan the rest from here
                    plan = _plan(len(alive), n, left, v)

    def _guard(self, batch: list[tuple[int, int]], alive: list[int], n: int,
               left: int) -> list[tuple[int, int]]:
        """`batch`, if the real budget covers what the plan may still spend (`left`, less
        the pairs of `alive` already scored beyond `n`); else `batch` if the budget still
        covers completing the best of `alive` after it; else the best of `alive` that the
        budget can still complete.

        The plan counts every pair it asks for, reused ones included, so the first test only
        fails when results outside the plan (earlier screening) were counted in the budget."""
        free = sum(self.scored[c][self.v] - self.scored[c][n]
                   + self.failed[c][self.v] - self.failed[c][n] for c in alive)
        if left - free <= self.budget:
            return batch
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
        """Whether, after `batch`, the budget still covers completing the best of `alive`,
        when it covered that before the batch."""
        best = self._ranked(alive, n)[0]
        need = self._missing([best], self.v)
        planned = set(batch)
        return len(batch) + sum(1 for p in need if p not in planned) <= self.budget

    def _leftovers(self) -> list[tuple[int, int]]:
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
            shared = self._prefix(c)
            gap = -self._z(leader, c, shared) if shared else -math.inf
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


def _plan(m: int, n: int, left: int, v: int) -> Plan:
    """The rounds for `m` candidates sharing prefix `n` with `left` rollouts (see the
    module's docstring); [] when nothing can be run."""
    if m * (v - n) <= left:
        return [(m, v)]
    plain = _plain_plan(m, n, left, v)
    full = _full_plan(m, n, left, v)
    if not plain or len(full) < 2:
        return full or plain
    if plain[-1] == (1, v):  # the plain schedule's pick gets its full pass too
        return plain
    if full[0][1] >= plain[0][1] and (full[-1][0] >= 2
                                      or full[-2][1] >= FULL_PASS_SHARE * plain[-1][1]):
        return full
    return plain


def _plain_plan(m: int, n: int, left: int, v: int) -> Plan:
    """Successive elimination down to one candidate, each round spending 1/ceil(log2 m) of
    what is left and keeping 1/PLAIN_HALVING of the candidates (at least one fewer), the last one
    going as deep as the budget allows. When that last choice would be made on at least
    `FULL_PASS_SHARE` of the set anyway, it is made a little earlier so that the pick's full
    pass fits too."""
    rounds: Plan = []
    while m > 1:
        count = math.ceil(math.log2(m))
        to = min(v, n + (left // count) // m)
        keep = max(1, min(m - 1, math.ceil(m / PLAIN_HALVING)))
        if keep == 1 and FULL_PASS_SHARE * v <= to < v:
            # the latest choice after which the pick's full pass still fits:
            # m (to - n) + (v - to) <= left
            to = max(n + 1, n + (left - (v - n)) // (m - 1))
        if to <= n:
            break
        left -= m * (to - n)
        n = to
        m = keep
        rounds.append((m, n))
    if m == 1 and left > 0 and n < v:
        rounds.append((1, min(v, n + left)))
    return rounds


def _full_plan(m: int, n: int, left: int, v: int) -> Plan:
    """Halving down to finalists who go to the full set, or [] when not even one can."""
    options: list[tuple[int, Plan]] = []
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
        return []
    target = FINALIST_SHARE * left / (v - n)
    return min(options, key=lambda o: (abs(o[0] - target), o[0]))[1]
