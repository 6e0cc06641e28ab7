"""The tips that make candidates differ, and which candidate gets which.

Each proposal call is written under one tip (as in DSPy MIPROv2). The texts are fixed: the
project's simulated model recognises them. A request's seed picks a permutation of the tips
and candidates walk through it in order, so N candidates get N different tips while N is at
most the number of tips, and the same seed always gives the same assignment.
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
    Tip("none", "No particular style."),
    Tip("be_concise", "Keep the instruction short and simple."),
    Tip("be_creative", "Don't be afraid to be creative when writing the instruction!"),
    Tip("describe_task", "Make sure the instruction describes the task and every label in detail."),
    Tip("high_stakes",
        "The instruction should stress that the task is high-stakes and mistakes are costly."),
    Tip("persona", "Include a persona that is an expert at this task in the instruction."),
)


def assign_tips(seed: int, count: int) -> list[Tip]:
    """The tips of candidates 0..count-1: a cycle through a `seed`-shuffled order of `TIPS`."""
    order = list(TIPS)
    random.Random(f"mipro-tips:{seed}").shuffle(order)
    return [order[index % len(order)] for index in range(count)]
