"""How the simulated model writes a new instruction when the proposer service asks for one.

The proposer's meta-prompt (see `proposer_service/_meta_prompt.py`) is a user message with
markdown sections opened by exact header lines: `## Task`, `## Current instruction`,
`## Scored examples`, optionally `## Earlier candidates`, `## Tip` and `## Write`. A request
with `## Task` and `## Write` gets ONE instruction in plain text:

- an opening sentence shaped by the tip (persona, high stakes, concise, creative, ...);
- the label list (from the `Labels:` line, else the snake_case tokens of the task, the
  current instruction and the outputs);
- plain-word explanations for a share of the labels: all of them under "describe the task",
  few or none under "keep it short", otherwise 30-100% drawn from an rng seeded by the
  request seed, temperature and prompt. The words come from the label's name, the thesaurus
  and the salient words of the examples that scored 1 with that label (grounding);
- with `## Earlier candidates`, it builds on the best-scoring one: what that one explained
  is kept word for word and more labels get explained, so later rounds tend to improve.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import _rng, _thesaurus
from ._instruction import read_instruction, snake_case_tokens
from ._text import STOPWORDS, features, stem, words

TIP_TEXTS: dict[str, str] = {
    "none": "No particular style.",
    "be_concise": "Keep the instruction short and simple.",
    "be_creative": "Don't be afraid to be creative when writing the instruction!",
    "describe_task": "Make sure the instruction describes the task and every label in detail.",
    "high_stakes": "The instruction should stress that the task is high-stakes and mistakes "
                   "are costly.",
    "persona": "Include a persona that is an expert at this task in the instruction.",
}

_HEADER = re.compile(r"^## (.+?)\s*$", re.M)
_EARLIER = re.compile(r"^Score\s+([0-9.]+)\s+on\s+(\d+)\s+seeds?:\s*(.+)$")
_FIELD = re.compile(r"^(Input|Output|Score):\s?(.*)$")


@dataclass(frozen=True)
class Example:
    """One scored example of the meta-prompt."""

    input: str
    output: str
    score: float


@dataclass(frozen=True)
class MetaPrompt:
    """The parts of a proposal request the simulated model uses."""

    description: str = ""
    labels: tuple[str, ...] = ()
    current: str = ""
    examples: tuple[Example, ...] = ()
    #: (score, instruction) of each earlier candidate.
    earlier: tuple[tuple[float, str], ...] = ()
    tip: str = "none"
    sections: dict[str, str] = field(default_factory=dict)


def split_sections(text: str) -> dict[str, str]:
    """`{"Task": body, ...}` for each `## Header` line of `text`."""
    matches = list(_HEADER.finditer(text))
    return {
        match.group(1).strip(): text[match.end():(matches[i + 1].start() if i + 1 < len(matches)
                                                  else len(text))].strip()
        for i, match in enumerate(matches)
    }


def is_proposal_request(text: str) -> bool:
    """Whether a user message is the proposer's meta-prompt."""
    sections = split_sections(text)
    return "Task" in sections and "Write" in sections


def _examples(body: str) -> list[Example]:
    examples = []
    for block in re.split(r"\n\s*\n", body):
        values: dict[str, str] = {}
        for line in block.splitlines():
            if match := _FIELD.match(line.strip()):
                values[match.group(1)] = match.group(2).strip()
        if "Input" in values and "Output" in values:
            try:
                score = float(values.get("Score", "0"))
            except ValueError:
                score = 0.0
            examples.append(Example(values["Input"], values["Output"], score))
    return examples


def output_label(output: str) -> str:
    """The label an output names: the string value of a one-field JSON object, else the text."""
    try:
        value = json.loads(output)
    except ValueError:
        return output.strip().strip("\"'")
    if isinstance(value, dict):
        strings = [v for v in value.values() if isinstance(v, str)]
        return strings[0].strip() if strings else ""
    return value.strip() if isinstance(value, str) else ""


def _tip_id(body: str) -> str:
    folded = " ".join(body.split()).casefold()
    for tip_id, text in TIP_TEXTS.items():
        if text.casefold() in folded:
            return tip_id
    return "none"


def parse_meta_prompt(text: str) -> MetaPrompt:
    """The parts of the proposer's meta-prompt `text`."""
    sections = split_sections(text)
    task = sections.get("Task", "")
    description = ""
    labels: list[str] = []
    for line in task.splitlines():
        if line.startswith("Description:"):
            description = line.removeprefix("Description:").strip()
        elif line.startswith("Labels:"):
            listed = line.removeprefix("Labels:")
            listed = re.sub(r"\(and \d+ more\)\s*$", "", listed)
            labels = [label.strip() for label in listed.split(",") if label.strip()]
    examples = _examples(sections.get("Scored examples", ""))
    current = sections.get("Current instruction", "")
    if not labels:
        outputs = " ".join(output_label(e.output) for e in examples)
        labels = snake_case_tokens(f"{task}\n{current}\n{outputs}")
    earlier = []
    for line in sections.get("Earlier candidates", "").splitlines():
        if match := _EARLIER.match(line.strip()):
            earlier.append((float(match.group(1)), match.group(3).strip()))
    return MetaPrompt(description=description, labels=tuple(labels), current=current,
                      examples=tuple(examples), earlier=tuple(earlier),
                      tip=_tip_id(sections.get("Tip", "")), sections=sections)


# --------------------------------------------------------------------------- writing

def _task_sentence(meta: MetaPrompt) -> str:
    if meta.description:
        sentence = meta.description.rstrip(". ")
        return sentence + "."
    if meta.labels:
        return "Classify each message into exactly one of the labels below."
    return "Produce the output the task asks for, in the same format as the examples."


def _domain(meta: MetaPrompt) -> str:
    text = f"{meta.description} {meta.sections.get('Task', '')}".casefold()
    for word, domain in (("bank", "banking"), ("support", "customer support"),
                         ("review", "product review"), ("email", "email")):
        if word in text:
            return domain
    return "classification"


def _opening(meta: MetaPrompt, rand: random.Random) -> str:
    task = _task_sentence(meta)
    domain = _domain(meta)
    variants: dict[str, list[str]] = {
        "none": [task, f"{task} Read the message and choose the label that fits it best."],
        "be_concise": ["Pick the one label that fits the message.",
                       "Classify the message. One label only.", task],
        "be_creative": [
            f"Think like a detective: every message hides a clue to what the person really "
            f"wants. {task}",
            f"Imagine sorting letters at a busy front desk, where each one belongs in exactly "
            f"one tray. {task}",
        ],
        "describe_task": [
            f"{task} Read the whole message, work out what the person needs, and choose the "
            f"single label whose description matches it best.",
            f"Your task: {task} Each label is described below; compare the message with every "
            f"description before you answer.",
        ],
        "high_stakes": [
            f"This is a high-stakes task: a wrong label sends the request to the wrong team, "
            f"and mistakes are costly. {task}",
            f"Mistakes here are costly and hard to undo, so be careful and precise. {task}",
        ],
        "persona": [
            f"You are an expert {domain} analyst who has sorted thousands of messages like "
            f"these. {task}",
            f"As a seasoned {domain} specialist, you know exactly what each request means. "
            f"{task}",
        ],
    }
    return rand.choice(variants.get(meta.tip, variants["none"]))


def _grounding(meta: MetaPrompt, label: str, labels: Sequence[str]) -> list[str]:
    """Salient words of the examples that scored 1 with `label`."""
    other_names = {stem(w) for other in labels if other != label
                   for w in words(other.replace("_", " "))}
    found: list[str] = []
    for example in meta.examples:
        if example.score < 0.999 or output_label(example.output) != label:
            continue
        for word in words(example.input):
            if (word not in STOPWORDS and len(word) >= 3 and word.isalpha()
                    and stem(word) not in other_names and word not in found):
                found.append(word)
    return found


def _explain(meta: MetaPrompt, label: str, rand: random.Random) -> str:
    """A few plain words about `label`."""
    name = label.replace("_", " ").replace("-", " ")
    # What the model knows about each word of the name, taken in turn so no word dominates.
    groups = []
    for feature in sorted(features(name, _thesaurus.phrases())):
        group = sorted(_thesaurus.surface(n) for n in _thesaurus.neighbours(feature))
        rand.shuffle(group)
        groups.append(group)
    related = [word for round_ in itertools.zip_longest(*groups) for word in round_ if word]
    grounded = _grounding(meta, label, meta.labels)
    size = {"be_concise": 2, "describe_task": rand.randint(5, 7)}.get(meta.tip,
                                                                      rand.randint(3, 5))
    picked: list[str] = []
    for word in grounded[:2] + related + grounded[2:] + words(name):
        if word not in picked and word not in words(name) and len(picked) < size:
            picked.append(word)
    if not picked:
        picked = words(name)
    listed = picked[0] if len(picked) == 1 else ", ".join(picked[:-1]) + " or " + picked[-1]
    template = rand.choice([
        "the message is about {}", "for messages about {}", "when the person mentions {}",
        "{}", "anything to do with {}",
    ])
    return template.format(listed)


def _explained_share(meta: MetaPrompt, rand: random.Random) -> float:
    if meta.tip == "describe_task":
        return 1.0
    if meta.tip == "be_concise":
        return rand.choice([0.0, 0.1, 0.2])
    return rand.uniform(0.3, 1.0)


def _clean_kept(explanation: str) -> str:
    return explanation.removesuffix("...").strip(" .;,-")


def write_instruction(meta: MetaPrompt, *, key: Sequence[object]) -> str:
    """One new instruction for `meta`; `key` (seed, temperature, prompt) seeds every choice."""
    rand = _rng.rng("proposal", *key)
    opening = _opening(meta, rand)
    labels = list(meta.labels)
    if not labels:
        closing = rand.choice(["Be precise.", "Answer in the expected format only.",
                               "Think about what a perfect answer looks like."])
        return f"{opening} {closing}"
    kept: dict[str, str] = {}
    if meta.earlier:
        best = max(meta.earlier, key=lambda pair: pair[0])[1]
        for label, note in read_instruction(best, labels).items():
            if note.explained and _clean_kept(note.explanation):
                kept[label] = _clean_kept(note.explanation)
    rest = [label for label in labels if label not in kept]
    share = _explained_share(meta, rand)
    count = round(share * len(rest))
    if kept and rest:
        count = max(count, 1)  # build on the best candidate: explain at least one more
    chosen = set(rand.sample(rest, min(count, len(rest))))
    lines = [opening, "Labels:"]
    for label in labels:
        if label in kept:
            lines.append(f"- {label}: {kept[label]}.")
        elif label in chosen:
            lines.append(f"- {label}: {_explain(meta, label, rand)}.")
        else:
            lines.append(f"- {label}")
    # End the list with a full stop, so the closing sentence explains no label.
    lines[-1] = lines[-1] if lines[-1].endswith(".") else lines[-1] + "."
    lines.append(rand.choice([
        "Answer with exactly one label.", "Choose one label only.",
        "If several seem to fit, pick the one that matches the main request.",
    ]))
    return "\n".join(lines)
