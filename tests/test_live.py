"""The CLI's live view as a user reads it, fed the events and the result of a recorded job.

The recording (`tests/recordings/simulated_job*`) is what the gateway streamed and returned for
`mipro demo --model simulated` with four held-out test seeds: the stream's NDJSON lines as
they came, and the GetJob JSON at the end.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mipro._live import LiveView, event_type, is_terminal_event, render_result

RECORDINGS = Path(__file__).parent / "recordings"
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

Event = dict[str, Any]


def _events() -> list[Event]:
    lines = (RECORDINGS / "simulated_job_events.ndjson").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _job() -> dict[str, Any]:
    job: dict[str, Any] = json.loads((RECORDINGS / "simulated_job.json").read_text())
    return job


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, highlight=False), out


def _watch(events: Iterable[Mapping[str, Any]], *, terminal: bool,
           settings: Mapping[str, Any] | None = None) -> tuple[LiveView, str]:
    console, out = _console(terminal)
    with LiveView(console, settings=settings) as view:
        for event in events:
            view.handle(event)
    return view, out.getvalue()


def _last_frame(output: str) -> list[str]:
    """The lines a terminal shows once the view has stopped: its last redraw."""
    frames = CONTROL.sub("", output.replace("\r", "")).split("\n")
    return [line.rstrip() for line in frames]


def _expected_counts(events: list[Event], job: Mapping[str, Any]) -> dict[str, str]:
    """What each phase's line must say, read from the recording itself: bootstrap seeds,
    proposal rounds, and the validation and test rollouts the job counted."""
    mipro = job["policy_optimization"]["mipro"]
    rounds = sum(1 for e in events if e["type"] == "proposals.received")
    test_planned = [e["data"]["planned"] for e in events if e["type"] == "test.progress"][-1]
    spent = job["rollouts_completed"] + job["rollouts_failed"]
    val = spent - len(mipro["bootstrap_train_seeds"]) - test_planned
    return {
        "preflight": "passed",
        "bootstrap": f"{len(mipro['bootstrap_train_seeds'])}/"
                     f"{len(mipro['bootstrap_train_seeds'])} rollouts",
        "propose": f"{rounds}/{mipro['num_iterations']} rounds",
        "evaluate": f"{val}/{val} rollouts",
        "test": f"{test_planned}/{test_planned} rollouts",
    }


def test_off_a_terminal_each_phase_is_a_plain_line_with_its_progress() -> None:
    events, job = _events(), _job()
    view, output = _watch(events, terminal=False, settings=job["policy_optimization"])
    assert view.finished and view.last_seq == events[-1]["seq"]
    assert "\x1b" not in output, "no control codes in a log"
    lines = output.splitlines()
    positions = []
    for phase, count in _expected_counts(events, job).items():
        matching = [i for i, line in enumerate(lines) if line.strip().startswith(f"{phase}:")]
        assert matching, f"no line for the {phase} phase in:\n{output}"
        assert count in lines[matching[-1]], lines[matching[-1]]
        positions.append(matching[0])
    assert positions == sorted(positions), "phases are reported in the order they ran"
    # The story, not every event: progress and per-candidate scores are folded into the
    # phase lines, while the new best and the end are shown.
    assert not any("val.progress" in line or "candidate.scored" in line for line in lines)
    assert len(lines) < len(events) / 2
    best = next(e for e in events if e["type"] == "best.updated")
    assert any("best.updated" in line and best["message"] in line for line in lines)
    assert "job.succeeded" in lines[-1]


def test_on_a_terminal_the_bars_show_every_phase_with_its_progress() -> None:
    events, job = _events(), _job()
    _, output = _watch(events, terminal=True, settings=job["policy_optimization"])
    assert "\x1b[" in output, "a terminal gets the animated view"
    frame = _last_frame(output)
    for phase, count in _expected_counts(events, job).items():
        rows = [line for line in frame if line.lstrip("✓ ").startswith(phase)]
        assert rows, f"no bar for {phase}"
        assert count in rows[-1] and "━" in rows[-1], rows[-1]
        assert rows[-1].startswith("✓"), f"{phase} ended: {rows[-1]}"
    best = next(e for e in reversed(events) if e["type"] == "best.updated")["data"]
    assert any(f"best so far: candidate {best['candidate']} at {best['mean_score']:.3f}" in line
               for line in frame)


def test_the_result_lists_the_scores_and_a_leaderboard_best_first() -> None:
    job = _job()
    console, out = _console(terminal=False)
    render_result(job, console)
    output = out.getvalue()
    assert "\x1b" not in output
    # The figures scripts and the README grep for.
    assert re.search(rf"baseline score: {job['baseline_score']:.3f} \(mean validation reward "
                     rf"on {len(job['policy_optimization']['mipro']['val_seeds'])} seeds\)",
                     output)
    assert f"best score:     {job['best_score']:.3f}" in output
    assert (f"held-out test score on {len(job['policy_optimization']['mipro']['test_seeds'])} "
            f"other seeds: best {job['best_test_score']:.3f}, "
            f"baseline {job['baseline_test_score']:.3f}") in output
    assert (f"rollouts: {job['rollouts_completed']} completed, {job['rollouts_failed']} failed; "
            f"tokens: policy {job['policy_tokens']}, proposer {job['proposer_tokens']}") in output
    assert "baseline instruction:\n  " + job["baseline_instruction"] in output
    assert "best instruction:\n  " + job["best_instruction"].splitlines()[0] in output

    table = output.split("leaderboard (mean validation reward, best first):\n", 1)[1]
    rows = [line.split() for line in table.splitlines() if re.match(r"\s*\d+\s+\d", line)]
    candidates = job["candidates"]
    assert [int(row[0]) for row in rows] == [c["index"] for c in candidates]
    scores = [float(row[1]) for row in rows]
    assert scores == sorted(scores, reverse=True), "best first"
    for row, candidate in zip(rows, candidates, strict=True):
        assert row[1:5] == [f"{candidate['mean_score']:.3f}", str(candidate["seeds_scored"]),
                            str(candidate["failures"]), candidate["tip"]]
        assert " ".join(row[5:]).rstrip("…") in " ".join(candidate["instruction"].split())


def test_a_failed_job_shows_its_failures_and_its_error() -> None:
    error = ("the baseline could not be scored on any bootstrap seed: http_500 x12; first: "
             "task app answered 500 [internal]")
    events: list[Event] = [
        {"seq": 1, "type": "job.started", "message": "job started", "data": {}},
        {"seq": 2, "type": "phase.started", "message": "preflight started",
         "data": {"phase": "preflight"}},
        {"seq": 3, "type": "preflight.passed", "message": "task app is healthy", "data": {}},
        {"seq": 4, "type": "phase.started", "message": "bootstrap started",
         "data": {"phase": "bootstrap"}},
    ]
    for n in range(12):
        events.append({"seq": 5 + n, "type": "rollout.failed",
                       "message": "rollout failed: http_500",
                       "data": {"phase": "bootstrap", "candidate": 0, "seed": n,
                                "failure_cause": "http_500"}})
    events.append({"seq": 17, "type": "job.failed", "message": f"job failed: {error}",
                   "data": {"status": "failed", "error": error}, "terminal": True})
    job = {"job_id": "pl_failed", "status": "failed", "termination_reason": "failed",
           "error": error, "rollouts_completed": 0, "rollouts_failed": 12,
           "failures_by_cause": {"http_500": 12}, "candidates": [],
           "policy_optimization": {"mipro": {"val_seeds": [1, 2, 3]}}}

    view, output = _watch(events, terminal=False)
    assert view.finished
    lines = output.splitlines()
    assert any(line.strip().startswith("bootstrap:") and "12 failed" in line
               and "job failed" in line for line in lines), output
    assert any(line.strip() == "preflight: passed, task app healthy" for line in lines)
    shown = [line for line in lines if "rollout.failed" in line]
    assert 1 <= len(shown) < 12, "a flood of failures is counted, not printed line by line"
    assert f"job.failed           job failed: {error}" in output, "markup-like text is kept"

    console, out = _console(terminal=False)
    render_result(job, console)
    result = out.getvalue()
    assert "job pl_failed: failed (failed)" in result
    assert f"error: {error}" in result
    assert "http_500 x12" in result
    assert "baseline score: n/a" in result and "no candidate was scored" in result

    _, animated = _watch(events, terminal=True)
    frame = _last_frame(animated)
    assert any("12 rollouts failed" in line for line in frame)
    assert any(line.startswith("✗ bootstrap") and "12 failed" in line for line in frame), frame
    assert any(line.startswith("✓ preflight") for line in frame)


MALFORMED: list[Event] = [
    {},
    {"seq": "not a number", "type": "val.progress"},
    {"seq": 1, "type": "something.new", "message": "a kind of event the view has not seen"},
    {"seq": 2, "type": "phase.started", "data": None},
    {"seq": 3, "type": "val.progress", "data": {"done": "x", "planned": None}},
    {"seq": 4, "type": "candidate.scored", "data": {"candidate": None}},
    {"seq": 5, "type": "best.updated", "data": {"candidate": 2}},
    {"seq": 6, "type": "proposals.received", "data": {"candidates": "not a list"}},
    {"seq": 7, "type": "rollout.failed"},
    {"seq": 8, "type": "test.completed", "data": {"best_test_score": "high"}},
]


@pytest.mark.parametrize("terminal", [False, True])
def test_unknown_events_and_missing_fields_are_shown_not_fatal(terminal: bool) -> None:
    view, output = _watch(MALFORMED, terminal=terminal)
    text = "\n".join(_last_frame(output)) if terminal else output
    assert "a kind of event the view has not seen" in text
    assert not view.finished
    console, out = _console(terminal)
    render_result({"status": "failed", "candidates": [{"instruction": None}]}, console)
    assert "best score:     n/a" in CONTROL.sub("", out.getvalue())


def test_a_resumed_stream_counts_nothing_twice() -> None:
    """A reconnect may deliver events again; the counts stay those of one pass."""
    events, job = _events(), _job()
    _, once = _watch(events, terminal=False, settings=job["policy_optimization"])
    replayed = events[:30] + events[20:]
    _, twice = _watch(replayed, terminal=False, settings=job["policy_optimization"])
    assert twice == once


def test_synth_event_names_are_understood() -> None:
    prefix = "learning.policy.mipro."
    events: list[Event] = [
        {"seq": 1, "type": prefix + "job.started", "message": "started"},
        {"seq": 2, "type": prefix + "candidate.new_best", "message": "new best",
         "data": {"candidate": 4, "mean_score": 0.5}},
        {"seq": 3, "type": prefix + "job.completed", "message": "done"},
    ]
    assert event_type(events[2]) == "job.succeeded" and is_terminal_event(events[2])
    assert not is_terminal_event(events[1])
    view, output = _watch(events, terminal=True)
    assert view.finished
    assert any("best so far: candidate 4 at 0.500" in line for line in _last_frame(output))
