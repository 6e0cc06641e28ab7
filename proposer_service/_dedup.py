"""Turning model replies into instructions, and the rules that drop duplicates.

`clean_reply` strips what models wrap around an instruction (reasoning blocks, markdown
fences, "Instruction:" prefixes, quotes) and collapses whitespace: runs of spaces become one,
lines are trimmed and blank lines squeezed to one, but line breaks stay, so an instruction
with a list of labels keeps its shape.

`dedupe` keeps proposals in candidate order and drops one when it is

- an exact duplicate of a kept proposal or of a known instruction (the baseline, earlier
  candidates) after `normalize`: case-folded, whitespace collapsed, outer punctuation removed;
- a near-duplicate of one: the Jaccard similarity of their word sets is at least
  `NEAR_DUPLICATE_JACCARD` (0.9, `ReplyRules.near_duplicate_jaccard`). Two 20-word
  instructions that differ in one word score 19/21 = 0.905 and count as the same; a reworded
  sentence does not.

`duplicate_reasons` says, per proposal, which of these it copies (the baseline, an earlier
candidate, another proposal), so the proposer can count each reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ._models import Proposal
from ._rules import REJECT_BASELINE, REJECT_DUPLICATE, REJECT_EARLIER, ReplyRules

#: Word-set Jaccard similarity at or above which two instructions count as the same.
NEAR_DUPLICATE_JACCARD = ReplyRules().near_duplicate_jaccard

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_FENCE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|$)", re.S)
_PREFIX = re.compile(
    r"^(?:#+\s*)?(?:\*\*|__)?\s*(?:here(?:\s+is|'s|\u2019s)\s+)?(?:(?:the|a|my)\s+)?(?:new\s+|improved\s+|"
    r"proposed\s+|revised\s+)?(?:instructions?|system\s+prompt|prompt)\s*(?:\*\*|__)?\s*:\s*"
    r"(?:\*\*|__)?\s*",
    re.I,
)
_QUOTES = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("`", "`"),
           ("**", "**"))
_BLANK_LINES = re.compile(r"\n{3,}")
_WORD = re.compile(r"[\w']+")
_OUTER_PUNCTUATION = " .!?;:,\"'`*\u201c\u201d\u2018\u2019"


def clean_reply(text: str) -> str:
    """The instruction in a model reply, whitespace collapsed; empty when there is none."""
    text = _THINK.sub("", text or "")
    fenced = _FENCE.search(text)
    if fenced and fenced.group(1).strip():
        text = fenced.group(1)
    text = _BLANK_LINES.sub("\n\n", "\n".join(" ".join(line.split())
                                               for line in text.splitlines())).strip()
    while True:
        before = text
        text = _PREFIX.sub("", text).strip()
        for opening, closing in _QUOTES:
            # Only a pair that wraps everything: `"a" or "b"` keeps its quotes.
            inner = text[len(opening):len(text) - len(closing)]
            if len(text) >= len(opening) + len(closing) and text.startswith(opening) \
                    and text.endswith(closing) and opening not in inner and closing not in inner:
                text = inner.strip()
        if text == before:
            return text


def normalize(text: str) -> str:
    """The comparison form of an instruction: case-folded, one-spaced, no outer punctuation."""
    return " ".join(text.casefold().split()).strip(_OUTER_PUNCTUATION)


def word_set(text: str) -> frozenset[str]:
    """The set of case-folded words of `text`."""
    return frozenset(_WORD.findall(text.casefold()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def duplicate_reasons(texts: Sequence[str], baseline: str, earlier: Iterable[str] = (),
                      threshold: float = NEAR_DUPLICATE_JACCARD) -> list[str | None]:
    """Per text, in order: the reason it copies the baseline, an earlier candidate or a text
    kept before it (`REJECT_BASELINE`, `REJECT_EARLIER`, `REJECT_DUPLICATE`), or None."""
    seen: list[tuple[str, frozenset[str], str]] = [
        (normalize(text), word_set(text), reason)
        for text, reason in [(baseline, REJECT_BASELINE),
                             *((e, REJECT_EARLIER) for e in earlier)] if text.strip()]
    reasons: list[str | None] = []
    for text in texts:
        key, words = normalize(text), word_set(text)
        reason = next((r for k, w, r in seen if key == k or jaccard(words, w) >= threshold),
                      None)
        if reason is None:
            seen.append((key, words, REJECT_DUPLICATE))
        reasons.append(reason)
    return reasons


def dedupe(proposals: Sequence[Proposal], known: Iterable[str] = ()
           ) -> tuple[list[Proposal], int]:
    """The proposals that differ from each other and from `known`, and how many were dropped."""
    reasons = duplicate_reasons([p.instruction for p in proposals], "", known)
    kept = [p for p, reason in zip(proposals, reasons, strict=True) if reason is None]
    return kept, len(proposals) - len(kept)
