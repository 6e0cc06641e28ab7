"""The quality benchmark's table: one row per optimizer and mode, held-out accuracy of the
baseline and the winner with 95 % intervals, the paired gain, and each of our gains against
DSPy's on the same seeds; and the BENCHMARKS.md section that holds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ._quality_stats import Interval, gain_difference, mcnemar_p, paired_gain, wilson

START = "<!-- bench-quality:start -->"
END = "<!-- bench-quality:end -->"
SECTION_TITLE = "## Quality on the real local model (issue #11)"

#: How the figures are made; written above every table.
METHOD = """\
`make bench-quality` (`bench/quality.py`; `ARGS="--modes instruction-only --no-dspy"` picks)
runs the example task app (`examples/support_intents`, 10 intents, the task app's own
`classify_intent` tool call and exact-match reward) on the real local model,
SmolLM2-135M-Instruct through `mipro.local_model` (llama.cpp, CPU, temperature 0), no key.

- **Ours**: one job per `mipro.proposer.mode`, through the gateway's REST API on the real
  stack: the demo's `job_local_model.json` (6 candidates in 2 rounds, the local model as
  policy and proposer, `max_concurrent` 2, `seed` 0) on the splits below. A mode the server
  refuses is listed as unavailable, with no row. Per-seed held-out rewards come from the
  task app's own record of each rollout and are checked against the job's
  `baseline_test_score` and `best_test_score`.
- **DSPy MIPROv2** (`dspy` 3.4.1 from PyPI in `.venv-dspy`, `bench/_quality_dspy.py`), on the
  same model server: the task app's program in DSPy (its system prompt as the signature's
  instructions, its user message, its tool with `tool_choice: "required"`, the label read
  from the tool call, the same reward as the metric), the same rows as trainset (bootstrap
  seeds), valset and test set; `auto=None`, 7 candidates (6 and the baseline, as ours),
  minibatches of 35, 2 threads; zero-shot (no demos) beside our instruction-only job and
  few-shot (MIPROv2's 4 bootstrapped + 4 labeled demos) beside our joint job. Its number of
  trials is chosen when its search starts, from the metric calls its bootstrapping left of
  our job's count, so both sides use about the same number of metric calls (both counted).
  litellm is told that the server enforces tool calls and JSON schemas (DSPy's `litellm`
  engine, `LITELLM_LOCAL_MODEL_COST_MAP=True`, nothing fetched), so DSPy's proposer gets
  structured output when its free text does not parse.
- **Figures**: held-out accuracy with 95 % Wilson intervals; the gain is paired (winner minus
  baseline on the same seeds) with a 95 % normal interval, and McNemar's exact p. A failed
  rollout or call is left out and counted, never scored 0. "Metric calls" are the rewards
  the optimization consumed (bootstrap and validation rollouts; DSPy: calls of its metric),
  not counting the held-out scoring. "Minutes" are wall clock: our whole job (held-out
  scoring included), DSPy's `compile` (held-out scoring not included)."""


@dataclass
class Row:
    """One optimizer run: what it consumed, and its baseline and winner on the test seeds."""

    optimizer: str
    mode: str
    metric_calls: int
    baseline: dict[int, float]
    winner: dict[int, float]
    minutes: float
    winner_text: str
    test_failures: int = 0
    notes: list[str] = field(default_factory=list)

    def accuracy(self, which: dict[int, float]) -> Interval:
        return wilson(sum(which.values()), len(which))

    def gain(self) -> Interval:
        return paired_gain(self.winner, self.baseline)


def _cell(text: str, width: int = 60) -> str:
    one_line = " ".join(text.split()).replace("|", "/")
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def table(rows: list[Row]) -> str:
    """The markdown table of `rows`."""
    lines = ["| optimizer | mode | metric calls | baseline test acc [95% CI] | winner test acc "
             "[95% CI] | paired gain [95% CI] | McNemar p | test seeds | minutes | winner |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        gain = row.gain()
        lines.append(
            f"| {row.optimizer} | {row.mode} | {row.metric_calls} | "
            f"{row.accuracy(row.baseline).text()} | {row.accuracy(row.winner).text()} | "
            f"{gain.text(signed=True)} | {mcnemar_p(row.winner, row.baseline):.3f} | "
            f"{gain.n}{f' ({row.test_failures} failed)' if row.test_failures else ''} | "
            f"{row.minutes:.1f} | {_cell(row.winner_text)} |")
    return "\n".join(lines)


def comparisons(pairs: list[tuple[Row, Row]]) -> list[str]:
    """For each (ours, DSPy's) pair: the goal's two checks, on the same seeds."""
    lines = []
    for ours, theirs in pairs:
        gain = ours.gain()
        difference = gain_difference(ours.winner, ours.baseline, theirs.winner, theirs.baseline)
        excludes = "excludes 0" if gain.low > 0 else "does not exclude 0"
        at_least = "yes" if gain.value >= theirs.gain().value else "no"
        lines.append(
            f"- ours {ours.mode} vs DSPy {theirs.mode}: our gain {gain.text(signed=True)} "
            f"{excludes}; ours minus DSPy's gain {difference.text(signed=True)} on "
            f"{difference.n} seeds; our gain >= DSPy's: {at_least}")
    return lines


def agreement(a: dict[int, float], b: dict[int, float]) -> str:
    """How often two baselines (same prompt, same model) answered alike."""
    seeds = sorted(set(a) & set(b))
    same = sum(1 for s in seeds if a[s] == b[s])
    return f"{same}/{len(seeds)}"


def write_section(path: Path, body: str) -> None:
    """Replaces the section between the markers in `path`, or appends it."""
    block = f"{START}\n{SECTION_TITLE}\n\n{body.rstrip()}\n{END}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
