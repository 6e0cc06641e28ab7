"""Reading an instruction the way the simulated model does: which labels it mentions, and
what it says about each.

A label is *mentioned* when its exact name appears (`card_arrival`, optionally quoted). Its
*explanation* is the text after a mention up to the next label mention, line end or sentence
end, so all of these explain `card_arrival`:

    card_arrival: when a new card will arrive
    - card_arrival (the customer is waiting for a card)
    "card_arrival" means the card has not been delivered yet

When nothing follows a mention and it is the only label in its sentence, the text before it
in that sentence counts instead (`If the card has not come, answer card_arrival.`). A bare
list (`Labels: a, b, c.`) explains nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ._text import is_content, words

_SNAKE = re.compile(r"(?<![A-Za-z0-9_])[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?![A-Za-z0-9_])")
_BOUNDARY = re.compile(r"\n|[.!?](?=\s|$)")
_TRIM = " \t:;,-=\u2013\u2014>()[]\"'`*"


@dataclass(frozen=True)
class LabelNote:
    """What an instruction says about one label."""

    mentioned: bool = False
    #: The explaining text (empty when the label is not explained).
    explanation: str = ""

    @property
    def explained(self) -> bool:
        return bool(self.explanation)


def snake_case_tokens(text: str) -> list[str]:
    """The distinct snake_case tokens of `text` (`card_arrival`, ...), in order."""
    return list(dict.fromkeys(_SNAKE.findall(text)))


def _mention_pattern(label: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9_]){re.escape(label)}(?![A-Za-z0-9_])", re.I)


def _has_content(text: str) -> bool:
    return any(is_content(w) for w in words(text))


def read_instruction(instruction: str, labels: Sequence[str]) -> dict[str, LabelNote]:
    """What `instruction` says about each of `labels`."""
    mentions = sorted(
        (match.start(), match.end(), label)
        for label in labels if label
        for match in _mention_pattern(label).finditer(instruction))
    # Drop mentions inside a longer, overlapping one (`top_up` inside `top_up_failed`).
    kept: list[tuple[int, int, str]] = []
    for start, end, label in sorted(mentions, key=lambda m: (m[0], -(m[1] - m[0]))):
        if not kept or start >= kept[-1][1]:
            kept.append((start, end, label))
    boundaries = [m.start() for m in _BOUNDARY.finditer(instruction)] + [len(instruction)]
    texts: dict[str, list[str]] = {label: [] for label in labels}
    for index, (start, end, label) in enumerate(kept):
        next_mention = kept[index + 1][0] if index + 1 < len(kept) else len(instruction)
        sentence_end = next(b for b in boundaries if b >= end)
        after = instruction[end:min(next_mention, sentence_end)].strip(_TRIM)
        if _has_content(after):
            texts[label].append(after)
            continue
        sentence_start = max((b + 1 for b in boundaries if b < start), default=0)
        previous_end = kept[index - 1][1] if index else 0
        alone = previous_end <= sentence_start and next_mention > sentence_end
        before = instruction[sentence_start:start].strip(_TRIM)
        if alone and _has_content(before):
            texts[label].append(before)
    seen = {label for _, _, label in kept}
    return {label: LabelNote(label in seen, " ".join(texts[label])) for label in labels}
