"""The tips that make candidates differ, and which candidate gets which.

Each proposal call is written under one tip, as in DSPy MIPROv2: the six tips are DSPy's
set (none, creative, simple, description, high_stakes, persona) in our own words, so
candidates differ in style as well as in what the model happened to write. A request's seed
picks a permutation of the tips and candidates walk through it in order, so N candidates get
N different tips while N is at most the number of tips, and the same seed always gives the
same assignment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Tip:
    """A style hint for one proposal: a stable id (reported per candidate) and its text."""

    id: str
    text: str


TIPS: tuple[Tip, ...] = (
    Tip("none", "No particular style: write the instruction the way you think works best."),
    Tip("creative", "Feel free to be creative: the new instruction may differ a lot from the "
                    "current one."),
    Tip("simple", "Keep the instruction short and clear."),
    Tip("description", "Make the instruction informative and descriptive about the task."),
    Tip("high_stakes", "Frame the task as one with high stakes, where every mistake is costly."),
    Tip("persona", 'Give the model a persona suited to the task ("You are a ...").'),
)


def assign_tips(seed: int, count: int) -> list[Tip]:
    """The tips of candidates 0..count-1: a cycle through a `seed`-shuffled order of `TIPS`."""
    order = list(TIPS)
    random.Random(f"mipro-tips:{seed}").shuffle(order)
    return [order[index % len(order)] for index in range(count)]
