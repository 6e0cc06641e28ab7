"""Reading a proposer model's reply: the instructions in it, and why one is not an instruction.

`parse_reply(text)` takes whatever came back and returns the instruction texts in it, in order:

- JSON, bare or in a fenced block: an object's `instructions` (a list) or `instruction` (a
  string), or a few other names models use (`prompt`, `system_prompt`, `new_instruction`,
  `proposed_instruction`, `candidates`); a list of strings or of such objects; a string. A
  JSON list yields each of its instructions as a separate candidate.
- JSON cut short by the token cap (`{"instructions": ["Classify the`): the complete string
  values it holds, else the one that was cut.
- Anything else is one instruction: a first line that only announces it ("Sure! Here's a
  new instruction:") is dropped, and `clean_reply` strips reasoning blocks, fences,
  "Instruction:" prefixes, quotes and a `> ` quoted block.

`trim_echo(text, rules)` keeps the instruction a reply wrote before echoing the meta-prompt's
sections. `rejection(text, rules, echoes)` is the reason a parsed text is not an instruction,
or None;
the reasons and thresholds are in `_rules.py`. Duplicates are `_dedup.py`'s business.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._dedup import clean_reply
from ._rules import (
    REJECT_CHATTER,
    REJECT_ECHO,
    REJECT_EMPTY,
    REJECT_QUESTION,
    REJECT_TOO_LONG,
    REJECT_TOO_SHORT,
    ReplyRules,
)

#: Object keys that hold instructions, in the order they are looked for.
INSTRUCTION_KEYS = ("instructions", "instruction", "proposed_instructions",
                    "proposed_instruction", "new_instructions", "new_instruction",
                    "system_prompt", "prompt", "candidates", "summary", "text", "content")

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_FENCED = re.compile(r"```[^\n`]*\n?(.*?)(?:```|$)", re.S)
#: A first line that only announces what follows ("Sure! Here's a new instruction:").
_ANNOUNCEMENT = re.compile(
    r"^\W*(?:(?:sure|certainly|of course|okay|ok|absolutely|great)\W+)?(?:here(?:'s|\u2019s| is"
    r"| are)|below is|this is)\b[^\n]*:\s*\n", re.I)
_JSON_START = re.compile(r'^[\[{]\s*(?:["\[{]|\]|\}|$)')
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)("?)\s*(:?)', re.S)
_WORD = re.compile(r"[\w']+")
#: Meta-prompt headings (with or without `#`) and the phrases only the meta-prompt uses.
_HEADING = re.compile(
    r"^\s*(?:#{1,6}\s*(?:task|current instruction|scored examples|earlier candidates|tip|"
    r"write|dataset summary)\b|(?:\*\*)?(?:scored examples|earlier candidates|current "
    r"instruction|dataset summary)(?:\*\*)?\s*:?\s*$)", re.I | re.M)
_SCORE_LINE = re.compile(r"^\s*(?:score:?\s*\d|score \d(?:\.\d+)? on \d+ seeds)", re.I | re.M)
_IO_LINES = (re.compile(r"^\s*input:", re.I | re.M), re.compile(r"^\s*output:", re.I | re.M))
_QUESTION_PHRASES = re.compile(
    r"\b(?:what|which) (?:kind of |type of )?task\b[^.!?]*\?|"
    r"\b(?:can|could|would) you (?:please )?(?:describe|provide|share|tell me|clarify|give "
    r"me|specify|explain)\b[^.!]*\?|\bhow (?:can|may) i (?:help|assist)\b", re.I)
_CHATTER_START = re.compile(
    r"^\W*(?:(?:sure|certainly|of course|absolutely|okay|ok|great|hello|hi|hey)\b[\s,!.]|"
    r"(?:i'm|i am|i'd|i would|i'll|i will|i can|i have|i've)\b(?! (?:want|need|would like) "
    r"you to)|as an ai\b|as a language model\b|my name is\b)", re.I)
_CHATTER_ANYWHERE = re.compile(
    r"\b(?:i'm|i am) (?:ready|happy|glad|here) to help\b|\bhappy to help\b|"
    r"\bi hope this helps\b|\blet me know if\b", re.I)


def _from_json(value: Any) -> list[str] | None:
    """The instruction texts in a decoded JSON value; None when it holds no instruction."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        found = [text for item in value for text in (_from_json(item) or [])]
        return found if found or not value else None
    if isinstance(value, dict):
        for key in INSTRUCTION_KEYS:
            if key in value:
                return _from_json(value[key]) or []
        texts = [v for v in value.values() if isinstance(v, str)]
        return texts[:1] if len(texts) == 1 else []
    return None


def _salvage(text: str) -> list[str]:
    """The string values of JSON cut short: every complete one, else the last, cut one."""
    complete, cut = [], ""
    for match in _STRING.finditer(text):
        body, closed, colon = match.groups()
        if colon:
            continue  # an object key
        try:
            decoded = json.loads(f'"{body}"') if closed else json.loads(f'"{body.rstrip(chr(92))}"')
        except ValueError:
            continue
        if closed:
            complete.append(decoded)
        else:
            cut = decoded
    return complete or ([cut] if cut.strip() else [])


def _json_texts(text: str) -> list[str] | None:
    """The instructions when `text` (or its fenced block) is JSON, whole or cut short."""
    candidates = [text.strip()]
    fenced = _FENCED.search(text)
    if fenced:
        candidates.append(fenced.group(1).strip())
    for candidate in candidates:
        if not _JSON_START.match(candidate):
            continue
        try:
            found = _from_json(json.loads(candidate))
        except ValueError:
            return _salvage(candidate)
        if found is not None:
            return found
    return None


def _unquote_block(text: str) -> str:
    """A markdown quoted block (every line `>`-prefixed) without its markers."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and all(line.lstrip().startswith(">") for line in lines):
        return "\n".join(line.lstrip()[1:].lstrip() for line in text.strip().splitlines())
    return text


def parse_reply(text: str) -> list[str]:
    """The instruction texts in one model reply, in order, each cleaned; [] for none."""
    text = _THINK.sub("", text or "").strip()
    found = _json_texts(text)
    texts = found if found is not None else [_ANNOUNCEMENT.sub("", text, count=1)]
    cleaned = (clean_reply(_unquote_block(clean_reply(t))) for t in texts)
    return [t for t in cleaned if t]


def _squash(text: str) -> str:
    return " ".join(text.casefold().split())


@dataclass(frozen=True)
class Echoes:
    """Texts of the meta-prompt a reply must not copy: fixed sentences and example inputs."""

    texts: tuple[str, ...]

    @classmethod
    def of(cls, sentences: Iterable[str], inputs: Iterable[str], rules: ReplyRules) -> Echoes:
        pieces = [s for s in sentences if len(s.strip()) >= rules.echo_quote_chars]
        pieces += [i for i in inputs if len(i.strip()) >= rules.echo_quote_chars]
        return cls(tuple(dict.fromkeys(_squash(p) for p in pieces)))

    def copied_in(self, text: str) -> bool:
        squashed = _squash(text)
        return any(piece in squashed for piece in self.texts)


def trim_echo(text: str, rules: ReplyRules) -> str:
    """`text` cut before the first meta-prompt heading or scored-example line, when what comes
    before it is long enough to be an instruction (a reply that writes an instruction and
    then echoes the prompt's sections); else `text` unchanged."""
    starts = [m.start() for pattern in (_HEADING, _SCORE_LINE, *_IO_LINES)
              if (m := pattern.search(text))]
    if not starts or min(starts) == 0:
        return text
    head = text[: min(starts)].strip()
    return head if len(_WORD.findall(head)) >= rules.min_words else text


def rejection(text: str, rules: ReplyRules, echoes: Echoes = Echoes(())) -> str | None:
    """Why `text` is not an instruction (a `REJECT_*` reason), or None when it is one."""
    if not text.strip():
        return REJECT_EMPTY
    if _HEADING.search(text) or _SCORE_LINE.search(text) or all(
            pattern.search(text) for pattern in _IO_LINES) or echoes.copied_in(text):
        return REJECT_ECHO
    if text.rstrip(" \"'*)\u201d").endswith("?") or _QUESTION_PHRASES.search(text):
        return REJECT_QUESTION
    if _CHATTER_START.search(text) or _CHATTER_ANYWHERE.search(text):
        return REJECT_CHATTER
    if len(_WORD.findall(text)) < rules.min_words:
        return REJECT_TOO_SHORT
    if len(text) > rules.max_chars:
        return REJECT_TOO_LONG
    return None


def sentences_of(texts: Sequence[str]) -> list[str]:
    """The sentences of fixed prompt texts, for `Echoes.of`."""
    return [part.strip() for text in texts for part in re.split(r"(?<=[.!?])\s+", text)
            if part.strip()]
