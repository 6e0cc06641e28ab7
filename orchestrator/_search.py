"""Search over candidates: which (candidate, seed) rollouts to run next, and the winner.

This first version evaluates every candidate on every validation seed (seed-major) within the
budget; the adaptive, budget-aware search replaces it behind the same interface."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Result = float | None


@dataclass(frozen=True)
class SearchState:
    num_candidates: int
    val_seeds: tuple[int, ...]
    results: Mapping[tuple[int, int], Result]
    budget: int | None
    max_failure_rate: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class CandidateStanding:
    index: int
    mean: float | None
    seeds_scored: int
    failures: int
    fully_evaluated: bool


def next_batch(state: SearchState) -> list[tuple[int, int]]:
    missing = [(c, s) for s in state.val_seeds for c in range(state.num_candidates)
               if (c, s) not in state.results]
    return missing if state.budget is None else missing[: state.budget]


def leaderboard(state: SearchState) -> list[CandidateStanding]:
    out = []
    for c in range(state.num_candidates):
        rs = [state.results[(c, s)] for s in state.val_seeds if (c, s) in state.results]
        ok = [r for r in rs if r is not None]
        out.append(CandidateStanding(c, sum(ok) / len(ok) if ok else None, len(ok),
                                     len(rs) - len(ok), len(rs) == len(state.val_seeds)))
    return out


def choose_winner(state: SearchState) -> int | None:
    board = [s for s in leaderboard(state) if s.mean is not None
             and s.failures <= state.max_failure_rate * (s.failures + s.seeds_scored)]
    if not board:
        return None
    full = [s for s in board if s.fully_evaluated] or board
    return max(full, key=lambda s: (s.mean, s.seeds_scored, -s.index)).index
