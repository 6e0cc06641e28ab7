"""How the simulated model picks a label: a transparent bag-of-words "understanding".

For each candidate label the model gathers *evidence*, a weighted set of word features:

- the words of the label's name (`card_arrival` → card, arrival), always;
- the words the system instruction uses to explain the label (see `_instruction.py`);
- the thesaurus neighbours (`_thesaurus.py`) of both, but only for labels the instruction
  mentions or explains: the model pays attention to what the prompt talks about.

A label's score is the overlap between the user message's features and its evidence, each
feature divided by the number of labels it is evidence for (words every label shares decide
nothing), plus deterministic noise seeded by the request seed and the messages. The noise is
largest when the instruction names none of the labels, and temperature adds sampling noise
on top. The highest score wins, so explaining labels in plain words raises accuracy and a
vague instruction leaves the model guessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import _rng, _thesaurus
from ._instruction import LabelNote, read_instruction, snake_case_tokens
from ._text import features, is_content, words

#: Weight of a word of the label's own name.
W_NAME = 1.0
#: Weight of a word the instruction uses to explain the label.
W_EXPLANATION = 1.0
#: Weight of a thesaurus neighbour of an explained label's name or explanation words ...
W_THESAURUS = 0.6
#: ... and of a label the instruction only names.
W_THESAURUS_NAMED = 0.3
#: Fixed model noise (standard deviation) when the instruction names none of the labels, ...
SIGMA_VAGUE = 0.9
#: ... when it names every label but explains none, ...
SIGMA_NAMED = 0.45
#: ... and when it explains every label; in between it is interpolated.
SIGMA_EXPLAINED = 0.2
#: Extra sampling noise per unit of temperature.
SIGMA_PER_TEMPERATURE = 0.3


@dataclass(frozen=True)
class Decision:
    """The chosen label and every label's score (overlap + noise)."""

    label: str
    scores: Mapping[str, float]


def _label_features(label: str) -> set[str]:
    return features(label.replace("_", " ").replace("-", " "), _thesaurus.phrases())


def _expand(weights: dict[str, float], found: set[str], weight: float) -> None:
    for feature in found:
        weights[feature] = max(weights.get(feature, 0.0), weight)


def evidence(label: str, note: LabelNote) -> dict[str, float]:
    """The weighted features that speak for `label`, given what the instruction says."""
    weights: dict[str, float] = {}
    name = _label_features(label)
    explained = features(note.explanation, _thesaurus.phrases()) if note.explained else set()
    if note.mentioned or note.explained:
        wide = W_THESAURUS if note.explained else W_THESAURUS_NAMED
        for feature in name | explained:
            _expand(weights, set(_thesaurus.neighbours(feature)), wide)
    _expand(weights, explained, W_EXPLANATION)
    _expand(weights, name, W_NAME)
    return weights


def classify(instruction: str, message: str, labels: Sequence[str], *,
             noise_key: Sequence[object], temperature: float) -> Decision:
    """The label the model gives `message` under `instruction`.

    `noise_key` (the request seed and messages) seeds the noise; the same key always gives
    the same decision.
    """
    if not labels:
        raise ValueError("classify() needs at least one label")
    notes = read_instruction(instruction, labels)
    evidences = {label: evidence(label, notes[label]) for label in labels}
    spread: dict[str, int] = {}
    for weights in evidences.values():
        for feature in weights:
            spread[feature] = spread.get(feature, 0) + 1
    seen = features(message, _thesaurus.phrases())
    named = sum(1 for note in notes.values() if note.mentioned) / len(labels)
    explained = sum(1 for note in notes.values() if note.explained) / len(labels)
    sigma = (SIGMA_VAGUE - (SIGMA_VAGUE - SIGMA_NAMED) * named
             - (SIGMA_NAMED - SIGMA_EXPLAINED) * explained)
    scores: dict[str, float] = {}
    for label in labels:
        weights = evidences[label]
        overlap = sum(weights[f] / spread[f] for f in seen & weights.keys())
        noise = sigma * _rng.normal("model-noise", *noise_key, label)
        if temperature > 0:
            noise += temperature * SIGMA_PER_TEMPERATURE * _rng.normal(
                "sampling-noise", *noise_key, label)
        scores[label] = overlap + noise
    best = max(labels, key=lambda label: scores[label])
    return Decision(best, scores)


def free_text_answer(instruction: str, message: str, *, noise_key: Sequence[object],
                     temperature: float) -> str:
    """An answer for a string parameter without an enum: one of the snake_case labels the
    instruction names, else a content word of the message."""
    labels = snake_case_tokens(instruction)
    if labels:
        return classify(instruction, message, labels, noise_key=noise_key,
                        temperature=temperature).label
    content = [w for w in words(message) if is_content(w)] or words(message)
    if not content:
        return "unknown"
    return content[_rng.derive_seed("free-text", *noise_key) % len(content)]
