"""The quality benchmark's wiring (`bench/quality.py`), never its quality.

The harness runs as `make bench-quality` runs it, on a real stack, but against the
deterministic fake model (whose scores mean nothing) and with tiny splits; the DSPy side is
replaced by a stand-in script that answers from the spec it is given. What is checked is
what a reader of the table relies on: the metric calls counted are the bootstrap and
validation rewards the task app really computed, the accuracies are those of the recorded
held-out rewards, DSPy is given our metric-call count and the same rows, a mode the server
refuses gets no row, and BENCHMARKS.md keeps one section however often it is written.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest
from mipro.examples.support_intents.task_app import BASELINE_INSTRUCTION, DEFAULT_DATASET

from bench._quality_report import END, START, write_section
from bench._quality_stats import gain_difference, mcnemar_p, paired_gain, wilson
from bench.quality import parse_args
from mipro._settings import Settings
from mipro._stack import Stack, free_port, stack_env

from ._launch import start_fake_model

REPO = Path(__file__).resolve().parent.parent

#: Stands in for `.venv-dspy/bin/python bench/_quality_dspy.py SPEC RESULT`: keeps the spec,
#: and answers each held-out row by the parity of its text's length (noise, on purpose).
FAKE_DSPY = '''
import json, sys
spec_path, result_path = sys.argv[-2:]
spec = json.load(open(spec_path))
json.dump(spec, open(spec_path + ".seen", "w"))
test = {str(r["seed"]): float(len(r["text"]) % 2) for r in spec["test"]}
base = {str(r["seed"]): float(len(r["text"]) % 3 == 0) for r in spec["test"]}
runs = [{"name": r["name"], "budget": r["metric_calls"], "metric_calls": r["metric_calls"],
         "bootstrap_calls": 1, "num_trials": 2, "task_model_calls": r["metric_calls"],
         "prompt_model_calls": 3, "instruction": "stand-in", "demos": 0, "val_score": 0.5,
         "seconds": 1.0, "test": test, "test_failures": 0} for r in spec["runs"]]
json.dump({"dspy_version": "stand-in", "baseline_test": base, "baseline_test_failures": 0,
           "runs": runs}, open(result_path, "w"))
'''


def test_wilson_interval_matches_the_textbook_value() -> None:
    interval = wilson(20, 100)
    assert interval.value == pytest.approx(0.2)
    assert (interval.low, interval.high) == (pytest.approx(0.1333, abs=1e-4),
                                             pytest.approx(0.2888, abs=1e-4))


def test_paired_gain_uses_only_seeds_both_scored() -> None:
    baseline = {1: 0.0, 2: 0.0, 3: 1.0, 4: 0.0}
    winner = {1: 1.0, 2: 1.0, 3: 1.0, 5: 1.0}   # seed 4 failed for the winner, 5 for the base
    gain = paired_gain(winner, baseline)
    assert gain.n == 3 and gain.value == pytest.approx(2 / 3)
    assert gain.low < gain.value < gain.high
    assert mcnemar_p(winner, baseline) == pytest.approx(0.5)  # 2 better, 0 worse: 2 * 1/4
    same = gain_difference(winner, baseline, winner, baseline)
    assert same.value == 0.0 and same.low == same.high == 0.0


def test_a_relative_dspy_python_still_names_the_venv_from_the_work_dir() -> None:
    args = parse_args(["--dspy-python", ".venv-dspy/bin/python"])
    assert args.dspy_python == str(Path.cwd() / ".venv-dspy" / "bin" / "python")


def test_the_section_is_replaced_not_appended(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Other\n\ntext\n")
    write_section(path, "first")
    write_section(path, "second")
    text = path.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    assert "second" in text and "first" not in text and "## Other\n\ntext" in text


def _cell(table_row: str, column: int) -> str:
    return table_row.strip("|").split("|")[column].strip()


async def test_the_harness_counts_what_the_task_app_scored(tmp_path: Path) -> None:
    settings = Settings.from_env({"MIPRO_DATA_DIR": str(tmp_path / "model")})
    models = Stack(settings, stack_env(settings), log_dir=tmp_path / "model-logs")
    try:
        model_url = await start_fake_model(models, free_port())
        fake_dspy = tmp_path / "fake_dspy.py"
        fake_dspy.write_text(FAKE_DSPY)
        launcher = tmp_path / "python"
        launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {fake_dspy} \"$@\"\n")
        launcher.chmod(0o755)
        benchmarks, work = tmp_path / "BENCHMARKS.md", tmp_path / "work"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.quality", "--model-url", model_url,
            "--splits", "3,4,5", "--modes", "instruction-only,joint", "--num-candidates", "2",
            "--dspy-python", str(launcher), "--benchmarks", str(benchmarks),
            "--work-dir", str(work), "--timeout", "200", cwd=str(REPO),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    finally:
        await models.stop()
    text = output.decode()
    assert process.returncode == 0, text

    records = [json.loads(line) for line in (work / "task_app_rollouts.jsonl").read_text()
               .splitlines()]
    instruction_job = json.loads((work / "results.json").read_text())["ours"][0]["job_id"]
    mine = [r for r in records if str(r["run_id"]).startswith(instruction_job + "_")]
    scored = [r for r in mine if r["status"] == 200]
    optimization = [r for r in scored if re.search(r"_[bv]\d+s\d+$", r["run_id"])]
    baseline_test = [r for r in scored if re.search(r"_t00s\d+$", r["run_id"])]
    assert len(baseline_test) == 5

    section = benchmarks.read_text()
    assert section.count(START) == 1
    ours = next(line for line in section.splitlines()
                if line.startswith("| ours | instruction-only |"))
    assert int(_cell(ours, 2)) == len(optimization)
    mean = sum(r["reward"] for r in baseline_test) / 5
    assert _cell(ours, 3).startswith(f"{mean:.3f} ")
    assert "| ours | joint |" in section or "ours, joint: unavailable" in section
    # Every mode optimizes on the same budget: bootstrap + 5 validation passes by default.
    results = json.loads((work / "results.json").read_text())
    assert results["metric_calls"] == 3 + 5 * 4
    assert [o["mode"] for o in results["ours"]] == ["instruction-only", "joint"]
    assert all(0 < o["metric_calls"] <= 23 for o in results["ours"])
    assert "a budget of 23 metric calls" in section

    spec = json.loads((work / "dspy_spec.json.seen").read_text())
    assert spec["instruction"] == BASELINE_INSTRUCTION
    assert {r["name"]: r["metric_calls"] for r in spec["runs"]}["zero-shot"] == len(optimization)
    assert [r["seed"] for r in spec["test"]] == [7, 8, 9, 10, 11]
    lines = DEFAULT_DATASET.read_text().splitlines()
    assert spec["test"][0]["text"] == json.loads(lines[7])["text"]
    zero_shot = next(line for line in section.splitlines()
                     if line.startswith("| DSPy MIPROv2 | zero-shot |"))
    expected = sum(len(r["text"]) % 2 for r in spec["test"]) / 5
    assert _cell(zero_shot, 4).startswith(f"{expected:.3f} ")
