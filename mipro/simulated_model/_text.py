"""Words as the simulated model sees them: tokens, light stemming, stopwords, token counts.

`features(text)` is the model's whole "reading" of a text: the stems of its content words plus
the known multi-word phrases (`top up`, `money back`, ...) found in it. Stemming is a few
suffix rules, enough that `arrive`, `arrived`, `arrival` and `arriving` meet. `approx_tokens`
is the deterministic stand-in for a tokenizer that the usage counts use.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

_WORD = re.compile(r"[a-z0-9]+")
_APOSTROPHES = re.compile(r"['\u2019`]")
_IZE = re.compile(r"iz(e|ed|es|ing|ation|ations)$")
_PIECE = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")

STOPWORDS: frozenset[str] = frozenset("""
a about above after again against all am an and any anyone anything are as at be because been
before being below between both but by can cant could couldnt did didnt do does doesnt doing
dont down during each few for from further had has have having he her here hers him his how
i id if im in into is isnt it its itll ive just me might more most must my myself no nor not
now of off on once only or other our ours out over own please pls same she should so some
someone something such than thank thanks that thats the their them then there theres these
they this those through to too u under until up very via was wasnt we were what whats when
where which while who whom why will with wont would you your youre yours yourself hi hello hey
ok okay also get got getting want wanted wants need needs like know tell help let lets
one still yet just really thing things way much many every ever never always already
think thought sure guess maybe quick quickly now today yesterday lol
mean means meaning label labels intent intents category categories class use used choose pick
select classify customer customers user users message messages ask asks asking question
questions reply answer output return only exactly best fits fit type text e g ie eg etc
""".split())


def normalize(word: str) -> str:
    """British spelling for `-ize` words, so `recognized` and `recognised` meet."""
    return _IZE.sub(r"is\1", word)


def stem(word: str) -> str:
    """A light suffix-stripping stem: `arrived`/`arrival`/`arrive` → `arriv`."""
    word = normalize(word)
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, replacement, min_len in (
        ("ies", "y", 5), ("ied", "y", 5), ("ing", "", 5), ("ed", "", 4), ("es", "", 5),
        ("al", "", 7), ("ly", "", 5), ("s", "", 4),
    ):
        if word.endswith(suffix) and len(word) >= min_len and not (
                suffix == "s" and word.endswith(("ss", "us", "is"))):
            word = word[: len(word) - len(suffix)] + replacement
            break
    if len(word) > 5 and word.endswith("y"):
        word = word[:-1]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        word = word[:-1]
    return word


def words(text: str) -> list[str]:
    """Lowercase words of `text`, apostrophes dropped (`don't` → `dont`)."""
    return _WORD.findall(_APOSTROPHES.sub("", text.lower()))


def stems(text: str) -> list[str]:
    """The stem of every word of `text`, stopwords included, in order."""
    return [stem(w) for w in words(text)]


def is_content(word: str) -> bool:
    """A word that carries meaning: not a stopword, not a number, at least 2 letters."""
    return word not in STOPWORDS and len(word) >= 2 and not word.isdigit()


def features(text: str, phrases: Iterable[tuple[str, ...]] = ()) -> set[str]:
    """Content-word stems of `text`, plus each of `phrases` (stem tuples) that occurs in it,
    written as its stems joined by spaces."""
    raw = words(text)
    stemmed = [stem(w) for w in raw]
    found = {s for w, s in zip(raw, stemmed, strict=True) if is_content(w)}
    joined = " " + " ".join(stemmed) + " "
    for phrase in phrases:
        key = " ".join(phrase)
        if f" {key} " in joined:
            found.add(key)
    return found


def approx_tokens(text: str) -> int:
    """A deterministic token count: one per 6 letters of a word (at least one), one per 3
    digits, one per punctuation mark."""
    total = 0
    for piece in _PIECE.findall(text):
        if piece.isalpha():
            total += math.ceil(len(piece) / 6)
        elif piece.isdigit():
            total += math.ceil(len(piece) / 3)
        else:
            total += 1
    return total
