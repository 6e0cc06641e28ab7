"""The meta-prompt of one proposal call: the chat messages that ask for one new instruction.

One instruction per call keeps the request simple enough for small models. The user message
opens with one plain line saying what to write, naming every label when the task has a label
set, then has these sections, in this order, each opened by its exact header line:

    ## Task                  name, description, `Labels: a, b, c`, two observed inputs
    ## Dataset summary       only when the job has one: the proposer model's own notes on
                             the bootstrap inputs and outputs (`build_summary_messages`)
    ## Current instruction   the baseline instruction
    ## Scored examples       up to 6 traces, best and worst mixed: Input / Output / Score
    ## Earlier candidates    only when the request has some: `Score 0.67 on 3 seeds: ...`
    ## Tip                   the tip's text
    ## Write                 the request for one new instruction, text only (for
                             several per call: that many, as a JSON list)

`instruction_only` mode asks for an instruction alone: no few-shot demos are requested.
Long values are truncated, so one huge trace cannot crowd out the rest.

Small models: SmolLM2-135M-Instruct, the local demo model, mostly echoes these sections back
or rambles whatever the wording. The opening line and a system prompt that forbids headings
and examples helped it measurably (12 candidates per variant, two seeds, each scored on 60
validation messages of the example; baseline 0.200): candidates averaged 0.244 with 8 above
the baseline and 2 below, against 0.212 with 5 above and 7 below without them. A variant
spelling out the instruction's shape ("starts with what the model reads ... then lists the
labels") did worse (0.219). The sections stay: they are the grounding MIPRO's proposer
works from (the task, scored traces, earlier candidates with their scores, a tip).

The dataset summary is DSPy's data-aware grounding, in our words: once per job, one call
shows the proposer model the bootstrap inputs, outputs and scores and asks for a few
sentences of observations about the data; every proposal call of the job then shows them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._models import ProposeRequest, ScoredExample, ScoredInstruction
from ._tips import Tip

SYSTEM_PROMPT = (
    "You write instructions (system prompts) for a language model that performs a task. "
    "Reply with the instruction text only: no preamble, no quotes, no explanation, no "
    "headings, no examples."
)
#: The first line of the user message; the label names follow it when there are some.
OPENING = "Write a new instruction for the task below, in a few plain sentences."
WRITE_REQUEST = (
    "Write one new instruction for this task that will make the model score higher. "
    "Reply with the instruction only."
)
#: The request when a call asks for `count` (more than one) instructions.
WRITE_SEVERAL_REQUEST = (
    "Write {count} different new instructions for this task that will make the model score "
    "higher. Reply with a JSON list of the instructions only."
)
SECTION_HEADERS = (
    "## Task", "## Dataset summary", "## Current instruction", "## Scored examples",
    "## Earlier candidates", "## Tip", "## Write",
)
#: Scored examples shown at most.
MAX_EXAMPLES = 6
#: Observed inputs quoted in the task summary.
SUMMARY_INPUTS = 2
#: Earlier candidates listed at most (the best ones).
MAX_EARLIER = 8
#: Labels listed at most; the rest are counted.
MAX_LABELS = 40
#: Examples shown to the dataset-summary call at most.
SUMMARY_EXAMPLES = 10
#: The dataset summary's length in the meta-prompt, at most (characters).
MAX_SUMMARY_CHARS = 800

SUMMARY_SYSTEM_PROMPT = (
    "You study a dataset of a language model task and write short, factual observations "
    "about it. Reply with the observations only."
)
SUMMARY_REQUEST = (
    "Write two or three sentences about this data: what the inputs are like, what a correct "
    "output looks like, and what makes an input hard. Do not copy the examples."
)

_NAME_KEYS = ("name", "title")
_DESCRIPTION_KEYS = ("description",)
_LABEL_KEYS = ("labels", "label_set", "classes", "categories", "intents")


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with `...` when cut."""
    return text if len(text) <= limit else text[: max(limit - 3, 0)].rstrip() + "..."


def one_line(text: str, limit: int) -> str:
    """`text` with whitespace collapsed to single spaces, truncated to `limit`."""
    return truncate(" ".join(text.split()), limit)


def _scopes(info: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The task info and the objects nested one level in it (e.g. `{"taskset": {...}}`)."""
    return [info, *(value for value in info.values() if isinstance(value, Mapping))]


def _first_text(scopes: Sequence[Mapping[str, Any]], keys: Iterable[str]) -> str:
    for scope in scopes:
        for key in keys:
            value = scope.get(key)
            if isinstance(value, str) and value.strip():
                return value
    return ""


def _labels_from_info(scopes: Sequence[Mapping[str, Any]]) -> list[str]:
    for scope in scopes:
        for key in _LABEL_KEYS:
            value = scope.get(key)
            if isinstance(value, Mapping):
                value = list(value)
            if isinstance(value, list) and value and all(
                    isinstance(v, str | int) and not isinstance(v, bool) for v in value):
                return list(dict.fromkeys(str(v) for v in value))
    return []


def _labels_from_outputs(examples: Sequence[ScoredExample]) -> list[str]:
    """Labels when every output is a one-field JSON object with a short string value."""
    field: str | None = None
    labels: list[str] = []
    for example in examples:
        try:
            value = json.loads(example.output)
        except ValueError:
            return []
        if not isinstance(value, dict) or len(value) != 1:
            return []
        (key, label), = value.items()
        if not isinstance(label, str) or not label.strip() or len(label) > 60:
            return []
        if field is not None and key != field:
            return []
        field = key
        labels.append(label.strip())
    return list(dict.fromkeys(labels))


def label_set(task_info_json: str, examples: Sequence[ScoredExample]) -> list[str]:
    """The task's labels from `/task_info`, else from the observed outputs; [] if neither."""
    scopes = _scopes(_parse_info(task_info_json))
    return _labels_from_info(scopes) or _labels_from_outputs(examples)


def _parse_info(task_info_json: str) -> dict[str, Any]:
    if not task_info_json.strip():
        return {}
    try:
        info = json.loads(task_info_json)
    except ValueError:
        return {"description": task_info_json}
    return info if isinstance(info, dict) else {}


def task_summary(task_info_json: str, examples: Sequence[ScoredExample]) -> str:
    """A compact summary of the task from its info and the observed inputs."""
    info = _parse_info(task_info_json)
    scopes = _scopes(info)
    lines = []
    if name := _first_text(scopes, _NAME_KEYS):
        lines.append(f"Name: {one_line(name, 100)}")
    if description := _first_text(scopes, _DESCRIPTION_KEYS):
        lines.append(f"Description: {one_line(description, 500)}")
    if labels := label_set(task_info_json, examples):
        shown = [one_line(label, 60) for label in labels[:MAX_LABELS]]
        more = f" (and {len(labels) - MAX_LABELS} more)" if len(labels) > MAX_LABELS else ""
        lines.append("Labels: " + ", ".join(shown) + more)
    inputs = list(dict.fromkeys(e.input for e in examples if e.input.strip()))[:SUMMARY_INPUTS]
    if inputs:
        lines.append("Observed inputs:")
        lines.extend(f"- {one_line(text, 160)}" for text in inputs)
    return "\n".join(lines) or "No description of the task was given."


def select_examples(examples: Sequence[ScoredExample],
                    limit: int = MAX_EXAMPLES) -> list[ScoredExample]:
    """Up to `limit` distinct examples, taken alternately from the best and the worst, best
    first; ties keep the request's order."""
    distinct = list(dict.fromkeys((e.input, e.output, e.reward) for e in examples))
    ranked = sorted(range(len(distinct)), key=lambda i: (-distinct[i][2], i))
    picked: list[int] = []
    low, high = 0, len(ranked) - 1
    while low <= high and len(picked) < limit:
        if len(picked) % 2 == 0:
            picked.append(ranked[low])
            low += 1
        else:
            picked.append(ranked[high])
            high -= 1
    rank = {index: position for position, index in enumerate(ranked)}
    picked.sort(key=rank.__getitem__)
    return [ScoredExample(*distinct[i]) for i in picked]


def format_score(value: float) -> str:
    return f"{value:.2f}"


def _examples_section(examples: Sequence[ScoredExample]) -> str:
    chosen = select_examples(examples)
    if not chosen:
        return "No scored examples are available."
    return "\n\n".join(
        f"Input: {one_line(e.input, 300)}\nOutput: {one_line(e.output, 200)}\n"
        f"Score: {format_score(e.reward)}"
        for e in chosen)


def _earlier_section(previous: Sequence[ScoredInstruction]) -> str:
    ranked = sorted(previous, key=lambda c: (-c.score, -c.seeds_scored))[:MAX_EARLIER]
    return "\n".join(
        f"Score {format_score(c.score)} on {c.seeds_scored} seeds: {one_line(c.instruction, 300)}"
        for c in ranked)


def opening_line(request: ProposeRequest) -> str:
    """The line before the sections: what to write, concretely, and every label by name."""
    labels = label_set(request.task_info_json, request.examples)[:MAX_LABELS]
    named = f" Name every label: {', '.join(one_line(label, 60) for label in labels)}." \
        if labels else ""
    return OPENING + named


def build_user_prompt(request: ProposeRequest, tip: Tip, *, count: int = 1,
                      dataset_summary: str = "") -> str:
    """The user message of one proposal call, written under `tip`, asking for `count`
    instructions, grounded in `dataset_summary` when there is one."""
    baseline = truncate(request.baseline_instruction.strip(), 2000) or "(none)"
    sections = [("## Task", task_summary(request.task_info_json, request.examples))]
    if dataset_summary.strip():
        sections.append(("## Dataset summary", one_line(dataset_summary, MAX_SUMMARY_CHARS)))
    sections += [
        ("## Current instruction", baseline),
        ("## Scored examples", _examples_section(request.examples)),
    ]
    if request.previous_candidates:
        sections.append(("## Earlier candidates", _earlier_section(request.previous_candidates)))
    write = WRITE_REQUEST if count == 1 else WRITE_SEVERAL_REQUEST.format(count=count)
    sections += [("## Tip", tip.text), ("## Write", write)]
    return "\n\n".join([opening_line(request),
                        *(f"{header}\n{body}" for header, body in sections)])


def build_messages(request: ProposeRequest, tip: Tip, *, count: int = 1,
                   dataset_summary: str = "") -> list[dict[str, str]]:
    """The chat messages (system, user) of one proposal call."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": build_user_prompt(request, tip, count=count,
                                                      dataset_summary=dataset_summary)},
    ]


def build_summary_messages(request: ProposeRequest) -> list[dict[str, str]]:
    """The chat messages of the job's one dataset-summary call: the task and up to
    `SUMMARY_EXAMPLES` bootstrap traces (best and worst mixed)."""
    chosen = select_examples(request.examples, SUMMARY_EXAMPLES)
    examples = "\n\n".join(
        f"Input: {one_line(e.input, 300)}\nOutput: {one_line(e.output, 200)}\n"
        f"Score: {format_score(e.reward)}" for e in chosen)
    user = "\n\n".join([
        f"## Task\n{task_summary(request.task_info_json, request.examples)}",
        f"## Examples\n{examples}", f"## Write\n{SUMMARY_REQUEST}"])
    return [{"role": "system", "content": SUMMARY_SYSTEM_PROMPT},
            {"role": "user", "content": user}]


def fixed_texts(tips: Iterable[Tip]) -> list[str]:
    """The meta-prompt's own sentences (system prompt, opening, requests, tips), which a
    reply must not copy."""
    return [SYSTEM_PROMPT, OPENING, WRITE_REQUEST, SUMMARY_SYSTEM_PROMPT, SUMMARY_REQUEST,
            *(tip.text for tip in tips)]
