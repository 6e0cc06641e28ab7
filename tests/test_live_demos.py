"""The CLI's result of a job in a demo mode: the mode it ran in and each candidate's demo
set."""

from __future__ import annotations

import io

from rich.console import Console

from mipro._live import render_result


def test_the_result_shows_the_mode_and_each_candidates_demo_set() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False, color_system=None)
    render_result({"status": "succeeded", "policy_optimization": {"mipro": {
        "proposer": {"mode": "instruction_and_demos"}}},
        "candidates": [{"index": 2, "instruction": "Be exact.", "demo_set_id": "d3"},
                       {"index": 0, "instruction": "Base.", "demo_set_id": "d0"}]}, console)
    text = out.getvalue()
    assert "mode: instruction_and_demos" in text
    assert "demos" in text and "d3" in text and "d0" in text
    out.truncate(0)
    render_result({"status": "succeeded", "candidates": [{"index": 0, "instruction": "B."}]},
                  console)
    assert "mode: instruction_only" in out.getvalue() and "demos" not in out.getvalue()
