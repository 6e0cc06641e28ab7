"""The statistics of the quality benchmark: accuracy with a Wilson interval, and the paired
gain of a winner over its baseline on the same held-out seeds, with a normal interval.

Every figure is over the seeds that were actually scored: a failed rollout is left out (and
counted by the caller), never taken as a 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

#: The two-sided 95 % quantile of the standard normal distribution.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % interval, and the number of observations."""

    value: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def text(self, signed: bool = False) -> str:
        """`0.245 [0.189, 0.308]`, or signed `+0.045 [+0.004, +0.086]`."""
        f = "{:+.3f}" if signed else "{:.3f}"
        return f"{f.format(self.value)} [{f.format(self.low)}, {f.format(self.high)}]"


def wilson(successes: float, n: int) -> Interval:
    """The accuracy `successes / n` with its 95 % Wilson score interval."""
    if n <= 0:
        raise ValueError("an accuracy needs at least one scored seed")
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n)


def mean_interval(values: list[float]) -> Interval:
    """The mean of `values` with its 95 % normal interval (sample standard deviation)."""
    n = len(values)
    if n < 2:
        raise ValueError("a paired interval needs at least two paired seeds")
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = Z95 * math.sqrt(variance / n)
    return Interval(mean, mean - half, mean + half, n)


def paired_seeds(*runs: Mapping[int, float]) -> list[int]:
    """The seeds every run scored, in order."""
    common = set(runs[0])
    for run in runs[1:]:
        common &= set(run)
    return sorted(common)


def paired_gain(winner: Mapping[int, float], baseline: Mapping[int, float]) -> Interval:
    """Mean of winner - baseline over the seeds both scored, with its 95 % interval."""
    seeds = paired_seeds(winner, baseline)
    return mean_interval([winner[s] - baseline[s] for s in seeds])


def gain_difference(a_winner: Mapping[int, float], a_baseline: Mapping[int, float],
                    b_winner: Mapping[int, float], b_baseline: Mapping[int, float]) -> Interval:
    """(gain of a) - (gain of b), paired over the seeds all four scored."""
    seeds = paired_seeds(a_winner, a_baseline, b_winner, b_baseline)
    return mean_interval([(a_winner[s] - a_baseline[s]) - (b_winner[s] - b_baseline[s])
                          for s in seeds])


def mcnemar_p(winner: Mapping[int, float], baseline: Mapping[int, float]) -> float:
    """The exact two-sided McNemar p-value of 0/1 outcomes on the seeds both scored."""
    seeds = paired_seeds(winner, baseline)
    better = sum(1 for s in seeds if winner[s] > baseline[s])
    worse = sum(1 for s in seeds if winner[s] < baseline[s])
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(better, worse) + 1)) / (1 << n)
    return min(1.0, 2 * tail)
