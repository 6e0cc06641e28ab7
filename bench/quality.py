"""The quality benchmark: held-out accuracy of our optimizer against DSPy MIPROv2's, on the
real local model (SmolLM2-135M-Instruct through `mipro.local_model`), no key needed.

    make bench-quality                                    # everything, BENCHMARKS.md updated
    .venv/bin/python -m bench.quality [--modes instruction-only,demos-only,joint]
        [--no-dspy] [--dspy-python .venv-dspy/bin/python] [--splits 40,60,200]
        [--metric-calls N] [--model-url URL] [--no-write] [--timeout SECONDS]

What it does, in one run:

1. Starts the real stack (gateway, orchestrator, proposer service), the example task app
   (`examples/support_intents`) and the local model, on free 127.0.0.1 ports.
2. For each mode (`mipro.proposer.mode` of the job), submits the demo's local-model job
   (`job_local_model.json`) on the fixed splits of `_quality_splits.py` through the REST API
   and waits for it. Every mode gets the same budget of metric calls (`--metric-calls`,
   by default the bootstrap seeds plus 5 passes over the validation seeds: what a demos-only
   job spends scoring the baseline and its 4 demo sets on every seed), as the job's
   `termination_config.max_rollouts` (that budget plus the reserved test rollouts), so a
   joint job races its (instruction, demo set) pairs within it instead of scoring them all.
   A mode the server refuses (400 naming the mode) is reported as
   unavailable, with no row. The task app's record gives each held-out seed's reward for the
   baseline and the winner, and the count of rewards the optimization used ("metric calls":
   bootstrap and validation rollouts).
3. DSPy MIPROv2 (its own virtualenv, `bench/_quality_dspy.py`) on the same model server,
   rows, program and metric: zero-shot with our instruction-only job's metric calls, and
   few-shot with our joint job's (our instruction-only job's when joint is unavailable).
4. Prints the table (accuracy with Wilson intervals, the paired gain with a normal interval,
   McNemar's exact p) and writes it into BENCHMARKS.md.

Every process is stopped by its pid at the end, also after an error or a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mipro.examples.support_intents import task_app

from orchestrator import _defaults as defaults

from ._quality_report import METHOD, Row, agreement, comparisons, table, write_section
from ._quality_splits import Splits, label_counts, rows
from ._quality_stack import (
    LOCAL_JOB,
    MODES,
    JobOutcome,
    ModeUnavailable,
    QualityError,
    QualityStack,
    run_job,
    start_quality_stack,
)

_REPO = Path(__file__).resolve().parent.parent
_DSPY_SCRIPT = Path(__file__).with_name("_quality_dspy.py")
#: DSPy's runs: name, demo limits (MIPROv2's defaults for few-shot), and which of our modes
#: sets its metric-call budget (the first one that ran).
DSPY_RUNS = (
    ("zero-shot", 0, 0, ("instruction-only",)),
    ("few-shot", 4, 4, ("joint", "instruction-only")),
)
#: Our mode each DSPy run is compared with.
COMPARED = {"zero-shot": "instruction-only", "few-shot": "joint"}


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _our_row(outcome: JobOutcome) -> Row:
    index = f"candidate {outcome.winner}" if outcome.winner else "the baseline"
    return Row("ours", outcome.mode, outcome.metric_calls, outcome.baseline_test,
               outcome.winner_test, outcome.seconds / 60,
               f"{index}: {outcome.instruction}",
               notes=[f"job {outcome.job_id}"])


def _dspy_row(run: dict[str, Any], baseline: dict[int, float]) -> Row:
    test = {int(seed): float(value) for seed, value in run["test"].items()}
    demos = f", {run['demos']} demos" if run["demos"] else ""
    baseline_won = run["instruction"] == task_app.BASELINE_INSTRUCTION and not run["demos"]
    which = "the baseline" if baseline_won else f"{run['instruction']}{demos}"
    return Row("DSPy MIPROv2", str(run["name"]), int(run["metric_calls"]), baseline, test,
               float(run["seconds"]) / 60, f"{which} ({run['num_trials']} trials)",
               test_failures=int(run["test_failures"]))


def dspy_spec(model_url: str, splits: Splits, budgets: dict[str, int], *,
              num_candidates: int, seed: int) -> dict[str, Any]:
    """What the DSPy side needs: the task app's instruction and tool, the job's policy
    settings, the rows of each split, and the runs with their metric-call budgets."""
    job = json.loads(LOCAL_JOB.read_text())["policy_optimization"]
    policy = job["policy"]
    runs = [{"name": name, "max_bootstrapped_demos": bootstrapped,
             "max_labeled_demos": labeled, "metric_calls": budgets[name]}
            for name, bootstrapped, labeled, _ in DSPY_RUNS if name in budgets]
    return {
        "model_url": model_url, "model": policy["model"],
        "instruction": task_app.BASELINE_INSTRUCTION, "tool": task_app.classify_tool(),
        "policy": {"temperature": policy["temperature"],
                   "max_tokens": policy["max_completion_tokens"]},
        # MIPROv2's proposer writes several fields per call; 96 tokens (our proposer's)
        # would cut its answers short.
        "proposer": {"max_tokens": 512},
        "train": rows(splits.bootstrap), "val": rows(splits.val), "test": rows(splits.test),
        "runs": runs,
        # Ours proposes `num_candidates` besides the baseline; DSPy's count includes it.
        "num_candidates": num_candidates + 1,
        "num_threads": job["mipro"]["max_concurrent"], "seed": seed,
        "minibatch_size": min(35, len(splits.val)), "call_timeout": 120,
    }


async def run_dspy(python: Path, spec: dict[str, Any], directory: Path,
                   timeout: float) -> dict[str, Any]:
    """Runs the DSPy side and returns its result (what it finished, after a timeout)."""
    spec_path, result_path = directory / "dspy_spec.json", directory / "dspy_result.json"
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "PROD_OPENAI_", "GROQ_", "ANTHROPIC_", "MIPRO_"))}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
                "DSPY_CACHEDIR": str(directory / "dspy_cache"), "PYTHONUNBUFFERED": "1"})
    with open(directory / "dspy.log", "ab") as log:  # noqa: ASYNC230 - a local log file
        process = await asyncio.create_subprocess_exec(
            str(python), str(_DSPY_SCRIPT), str(spec_path), str(result_path), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd=str(directory))
        try:
            code = await asyncio.wait_for(process.wait(), timeout=timeout)
        except TimeoutError:
            code = None
            _log(f"DSPy side: still running after {timeout:g} s; stopped (pid {process.pid})")
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), timeout=10)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGKILL)
                    await process.wait()
    if not result_path.exists():
        raise QualityError(f"the DSPy side wrote no result (exit {code}); see "
                           f"{directory / 'dspy.log'}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


async def _ours(stack: QualityStack, args: argparse.Namespace, splits: Splits,
                deadline: float) -> tuple[list[JobOutcome], dict[str, str]]:
    outcomes: list[JobOutcome] = []
    unavailable: dict[str, str] = {}
    for mode in args.modes:
        _log(f"ours, {mode}: job submitted")
        try:
            outcome = await run_job(stack, mode, splits, num_candidates=args.num_candidates,
                                    seed=args.seed, timeout=deadline - time.monotonic(),
                                    metric_calls=args.metric_calls)
        except ModeUnavailable as error:
            _log(f"ours, {mode}: mode unavailable on this server ({error}); no row")
            unavailable[mode] = f"unavailable: {error}"
            continue
        except QualityError as error:
            _log(f"ours, {mode}: failed ({error}); no row")
            unavailable[mode] = f"failed: {error}"
            continue
        outcomes.append(outcome)
        _log(f"ours, {mode}: done in {outcome.seconds / 60:.1f} min, "
             f"{outcome.metric_calls} metric calls, winner candidate {outcome.winner}")
    return outcomes, unavailable


def _budgets(outcomes: list[JobOutcome]) -> dict[str, int]:
    calls = {o.mode: o.metric_calls for o in outcomes}
    budgets = {}
    for name, _, _, modes in DSPY_RUNS:
        source = next((m for m in modes if m in calls), None)
        if source is not None:
            budgets[name] = calls[source]
    return budgets


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Runs everything; returns what `summarize` reads (also saved as results.json)."""
    splits = Splits.consecutive(*args.splits)
    directory: Path = args.work_dir
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before any task runs
    deadline = time.monotonic() + args.timeout
    _log(f"splits (bootstrap / val / test seeds): {splits.sizes()}; work dir {directory}")
    stack = await start_quality_stack(directory, model_url=args.model_url)
    results: dict[str, Any] = {"argv": args.argv, "splits": list(args.splits), "dspy": None,
                               "dspy_note": None, "measured_at": _now(),
                               "metric_calls": args.metric_calls}
    try:
        _log(f"stack up: gateway {stack.stack.gateway_url}, model {stack.model_url}")
        outcomes, results["unavailable"] = await _ours(stack, args, splits, deadline)
        results["ours"] = [asdict(o) for o in outcomes]
        results["dspy_budgets"] = budgets = _budgets(outcomes)
        python = Path(args.dspy_python)
        if not args.dspy or not budgets:
            pass
        elif not python.exists():  # noqa: ASYNC240 - one stat of a local file
            results["dspy_note"] = f"not run, {python} is missing (`make bench-quality` makes it)"
        else:
            runs = ", ".join(f"{k} at {v} metric calls" for k, v in budgets.items())
            _log(f"DSPy MIPROv2: {runs}")
            spec = dspy_spec(stack.model_url, splits, budgets,
                             num_candidates=args.num_candidates, seed=args.seed)
            try:
                results["dspy"] = await run_dspy(python, spec, directory,
                                                 max(60.0, deadline - time.monotonic()))
            except QualityError as error:
                results["dspy_note"] = f"failed, {error}"
    finally:
        await stack.stop()
        (directory / "results.json").write_text(json.dumps(results, default=str))
    return results


def _outcome(saved: dict[str, Any]) -> JobOutcome:
    """A `JobOutcome` read back from results.json (JSON keys are strings)."""
    outcome = JobOutcome(**saved)
    outcome.baseline_test = {int(s): float(v) for s, v in saved["baseline_test"].items()}
    outcome.winner_test = {int(s): float(v) for s, v in saved["winner_test"].items()}
    return outcome


def summarize(results: dict[str, Any]) -> tuple[list[Row], list[str]]:
    """The table's rows and the notes under it, from a run's results."""
    outcomes = [_outcome(o) for o in results.get("ours", [])]
    rows_ = [_our_row(o) for o in outcomes]
    notes = [f"- ours, {o.mode}: the winner's instruction in full: {json.dumps(o.instruction)}"
             for o in outcomes if o.winner]
    for o in outcomes:
        winner = next((c for c in o.job.get("candidates", []) if c.get("index") == o.winner
                       and c.get("demo_seeds")), None)
        if o.winner and winner is not None:
            notes.append(f"- ours, {o.mode}: the winner's demo set: {winner['demo_set_id']}, "
                         f"the demos of bootstrap seeds {winner['demo_seeds']}")
    unavailable: dict[str, str] = results.get("unavailable", {})
    notes += [f"- ours, {mode}: {reason}" for mode, reason in unavailable.items()]
    notes += [f"- {note}" for note in results.get("notes", [])]
    if results.get("dspy_note"):
        notes.append(f"- DSPy: {results['dspy_note']}")
    dspy_result = results.get("dspy")
    if dspy_result is None:
        return rows_, notes
    baseline = {int(s): float(v) for s, v in dspy_result["baseline_test"].items()}
    for run in dspy_result["runs"]:
        if "error" in run:
            notes.append(f"- DSPy {run['name']}: failed, {run['error']}")
            continue
        rows_.append(_dspy_row(run, baseline))
        if run.get("candidates"):
            notes.append(f"- DSPy {run['name']}: its instruction candidates (0 is the "
                         f"baseline): {json.dumps(run['candidates'])[:1500]}")
        notes.append(f"- DSPy {run['name']}: {run['metric_calls']} metric calls "
                     f"({run['bootstrap_calls']} while bootstrapping demos) for a budget "
                     f"of {run['budget']}; {run['task_model_calls']} task-model and "
                     f"{run['prompt_model_calls']} prompt-model calls")
    finished = {run["name"] for run in dspy_result["runs"]}
    notes += [f"- DSPy {name}: did not finish within the run's time limit; no row"
              for name in results.get("dspy_budgets", {}) if name not in finished]
    ours_rows = [r for r in rows_ if r.optimizer == "ours"]
    if ours_rows:
        notes.append(f"- the two baselines (same prompt, same model) answered alike on "
                     f"{agreement(ours_rows[0].baseline, baseline)} held-out seeds")
    notes.append(f"- DSPy {dspy_result['dspy_version']}")
    return rows_, notes


def report(rows_: list[Row], notes: list[str], args: argparse.Namespace) -> str:
    splits = Splits.consecutive(*args.splits)
    pairs = [(o, d) for d in rows_ if d.optimizer != "ours"
             for o in rows_ if o.optimizer == "ours" and o.mode == COMPARED.get(d.mode)]
    lines = [
        METHOD,
        "",
        f"Measured {args.measured_at} with "
        f"`python -m bench.quality {' '.join(args.argv)}`".rstrip() + ".",
        "",
        f"Splits (seeds; seed s is dataset line s % 300): bootstrap {splits.bootstrap[0]}-"
        f"{splits.bootstrap[-1]}, validation {splits.val[0]}-{splits.val[-1]}, held-out test "
        f"{splits.test[0]}-{splits.test[-1]} ({len(splits.test)} rows: "
        f"{label_counts(splits.test)}).",
        "",
        f"Each of our jobs had a budget of {args.metric_calls} metric calls (bootstrap and "
        f"validation rollouts; `termination_config.max_rollouts` {args.metric_calls} plus "
        f"the {2 * len(splits.test)} test rollouts it reserves); DSPy's runs get the metric "
        f"calls ours used.",
        "",
        table(rows_) if rows_ else "(no optimizer produced a row)",
        "",
        *comparisons(pairs),
        *notes,
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.quality",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--modes", default="instruction-only,demos-only,joint",
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--no-dspy", dest="dspy", action="store_false",
                        help="skip DSPy's side")
    parser.add_argument("--dspy-python", default=str(_REPO / ".venv-dspy" / "bin" / "python"))
    parser.add_argument("--splits", default="40,60,200",
                        help="bootstrap,val,test seed counts (consecutive from seed 0)")
    parser.add_argument("--num-candidates", type=int, default=6)
    parser.add_argument("--metric-calls", type=int, default=None,
                        help="bootstrap and validation rollouts each of our jobs may use "
                             "(default: bootstrap + (1 + max_demo_sets) x validation seeds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-url", default=None,
                        help="an OpenAI-compatible server to use instead of starting the "
                             "local model")
    parser.add_argument("--timeout", type=float, default=5400.0,
                        help="seconds the whole run may take (default 5400)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--benchmarks", type=Path, default=_REPO / "BENCHMARKS.md")
    parser.add_argument("--no-write", dest="write", action="store_false",
                        help="print the table only")
    parser.add_argument("--report-from", type=Path, default=None, metavar="WORK_DIR",
                        help="run nothing: the table of a finished run's results.json")
    args = parser.parse_args(argv)
    args.argv = argv
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    try:
        args.splits = tuple(int(n) for n in args.splits.split(","))
        Splits.consecutive(*args.splits)
    except (TypeError, ValueError):
        parser.error("--splits: three positive integers, bootstrap,val,test")
    # Absolute, not resolved: the DSPy side runs in the work dir (`make bench-quality` passes
    # a relative path), and resolving the venv's python symlink would leave the venv.
    args.dspy_python = str(Path(args.dspy_python).absolute())
    if args.metric_calls is None:
        bootstrap, val, _ = args.splits
        args.metric_calls = bootstrap + (1 + defaults.MAX_DEMO_SETS.default) * val
    if args.metric_calls < 1:
        parser.error("--metric-calls: a positive integer")
    if args.work_dir is None:
        args.work_dir = _REPO / ".mipro" / "bench-quality" / time.strftime("%Y%m%d-%H%M%S")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report_from is not None:
        results = json.loads((args.report_from / "results.json").read_text())
        args.argv = results.get("argv", args.argv)
        args.splits = tuple(results.get("splits", args.splits))
        args.measured_at = results.get("measured_at", "at an unrecorded time")
        args.metric_calls = results.get("metric_calls", args.metric_calls)
    else:
        args.measured_at = _now()
        results = asyncio.run(benchmark(args))
    rows_, notes = summarize(results)
    text = report(rows_, notes, args)
    print("\n" + text)
    if args.write:
        write_section(args.benchmarks, text)
        _log(f"written to {args.benchmarks}")
    return 0 if rows_ else 1


if __name__ == "__main__":
    sys.exit(main())
