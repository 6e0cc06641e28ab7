"""The fixed seeds of the quality benchmark and the dataset rows they stand for.

The example task app maps seed `s` to line `s % 300` of its dataset (lines shuffled once
with `random.Random(7)`, 30 per intent), so contiguous seed ranges are random samples of
the rows. The three splits never overlap:

    bootstrap (train)  seeds   0-39    40 rows: the baseline's traces, and DSPy's trainset
    validation         seeds  40-99    60 rows: the candidates are scored here
    test (held out)    seeds 100-299  200 rows: baseline and winner, scored once each
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mipro.examples.support_intents.task_app import DEFAULT_DATASET, load_dataset


@dataclass(frozen=True)
class Splits:
    """Seeds of each split (disjoint), and the dataset they index."""

    bootstrap: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @classmethod
    def consecutive(cls, bootstrap: int, val: int, test: int) -> Splits:
        """`bootstrap` seeds from 0, then `val`, then `test`, each following the last."""
        if min(bootstrap, val, test) < 1:
            raise ValueError("every split needs at least one seed")
        return cls(tuple(range(bootstrap)), tuple(range(bootstrap, bootstrap + val)),
                   tuple(range(bootstrap + val, bootstrap + val + test)))

    def sizes(self) -> str:
        return f"{len(self.bootstrap)} / {len(self.val)} / {len(self.test)}"


DEFAULT_SPLITS = Splits.consecutive(40, 60, 200)


def rows(seeds: tuple[int, ...], dataset: Path = DEFAULT_DATASET) -> list[dict[str, object]]:
    """`{"seed", "text", "label"}` for each seed, as the task app picks them."""
    records = load_dataset(dataset)
    if len(set(s % len(records) for s in seeds)) != len(seeds):
        raise ValueError(f"{len(seeds)} seeds name fewer distinct rows of {dataset}")
    return [{"seed": s, **records[s % len(records)]} for s in seeds]


def label_counts(seeds: tuple[int, ...], dataset: Path = DEFAULT_DATASET) -> str:
    """`card_arrival 21, ...`: how the split's rows spread over the intents."""
    counts = Counter(str(row["label"]) for row in rows(seeds, dataset))
    return ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))

