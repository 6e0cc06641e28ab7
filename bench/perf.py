"""How much the backend costs per rollout, on the real stack (issue 8's benchmark).

    python -m bench.perf                      # the full run of BENCHMARKS.md (~30 min)
    python -m bench.perf --quick              # a smoke run with small jobs (1-2 min)
    python -m bench.perf --only cpu,wall      # some scenarios only
    python -m bench.perf --only jobs20 --one-gateway          # model calls via the API's gateway
    python -m bench.perf --only jobs20 --model-calls-direct   # model calls via no gateway

Each scenario starts a fresh stack (`bench._perf_stack`): the real Envoy gateway and inference
gateway (the task apps' model calls), orchestrator (which hosts the interceptor) and proposer
service, plus a zero-latency fake task app and a
zero-think fake model as separate processes. Jobs are submitted through the public REST API
with 10 candidates (the baseline and 9 proposed), 5 bootstrap seeds and no budget, so a job
with V validation seeds runs 5 + 10 V rollouts, at most 64 at once. The scenarios:

* ``cpu``: orchestrator CPU seconds per rollout (utime + stime of all its threads, from
  submitting the job until it is seen finished), at about 1k, 10k and 50k rollouts; also the
  other processes' CPU per rollout and the orchestrator's resident memory before and after.
  Each size runs three times (``--cpu-runs``), the sizes taking turns, each job the first of
  a fresh stack; the figure is the median. Target: at most 1 ms per rollout, flat in N.
* ``getjob``: GetJob p50/p99 through the gateway, by one client making sequential calls
  (100 ms apart, bounded in number), while one 10k-rollout job runs. Target: p99 < 50 ms.
* ``jobs20``: the same while 20 jobs of about 5000 rollouts (long enough for ~1000 calls),
  submitted at once, run together (`MIPRO_MAX_RUNNING_JOBS=32`); also the orchestrator's
  resident memory per running job.
  Calls the gateway refuses (503 when its health check of the orchestrator times out) are
  counted, not timed.
* ``wall``: job wall time / ideal, ideal = rollouts x L / C, with the task app answering
  after L = 50 ms and C = 64, and the CPU share of every process. Goal: 1.15.

Every job has a deadline (a timeout per scenario, `--timeout` overrides them); a job still
running then is measured as far as it got, reported as timed out, and cancelled. Every process
is stopped by its pid when its scenario ends, on an error or on Ctrl-C too. Tables are printed
as Markdown on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from . import _proc
from ._perf_stack import (
    ApiError,
    BenchError,
    BenchStack,
    job_request,
    planned_rollouts,
    start_bench_stack,
    transient_error,
)

SCENARIOS = ("cpu", "getjob", "jobs20", "wall")
NUM_CANDIDATES = 9  # plus the baseline: 10 candidates
MAX_CONCURRENT = 64
WALL_LATENCY_MS = 50.0
GETJOB_PAUSE_SECONDS = 0.1
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_MB = 1024 * 1024
_REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    """Job sizes and bounds of one run (full or quick)."""

    cpu_val_seeds: tuple[int, ...]
    cpu_deadlines: tuple[float, ...]
    cpu_runs: int
    """How many times each `cpu` size runs, each on a fresh stack (the figure is their
    median: one job's CPU per rollout varies by ±15 % from run to run on this machine)."""
    getjob_val_seeds: int
    getjob_samples: int
    jobs20_val_seeds: int
    wall_val_seeds: int
    deadline: float


FULL = Sizes(cpu_val_seeds=(100, 1000, 5000), cpu_deadlines=(300.0, 900.0, 600.0),
             cpu_runs=3, getjob_val_seeds=1000, getjob_samples=3000, jobs20_val_seeds=500,
             wall_val_seeds=1000, deadline=900.0)
QUICK = Sizes(cpu_val_seeds=(10, 30, 60), cpu_deadlines=(120.0, 120.0, 120.0),
              cpu_runs=1, getjob_val_seeds=50, getjob_samples=300, jobs20_val_seeds=5,
              wall_val_seeds=50, deadline=120.0)
#: Added to a job's deadline to bound starting and stopping a scenario's stack.
_SCENARIO_SLACK_SECONDS = 180.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds of every measured process, the machine and this process, at one moment."""

    at: float
    cpu: dict[str, float]
    orchestrator_main_thread: float
    machine: _proc.MachineCpu
    driver: float


def snapshot(pids: dict[str, int]) -> Snapshot:
    return Snapshot(
        at=time.monotonic(),
        cpu={name: _proc.cpu_seconds(pid, name) for name, pid in pids.items()},
        orchestrator_main_thread=_proc.main_thread_cpu_seconds(pids["orchestrator"],
                                                               "orchestrator"),
        machine=_proc.machine_cpu(),
        driver=time.process_time(),
    )


@dataclass(frozen=True)
class Usage:
    """CPU seconds spent between two snapshots."""

    seconds: float
    cpu: dict[str, float]
    orchestrator_main_thread: float
    machine_busy: float
    driver: float

    @property
    def ours(self) -> float:
        return sum(self.cpu.values()) + self.driver

    @property
    def others(self) -> float:
        """CPU the machine spent on processes this benchmark did not start."""
        return max(0.0, self.machine_busy - self.ours)


def usage(before: Snapshot, after: Snapshot) -> Usage:
    return Usage(
        seconds=after.at - before.at,
        cpu={name: after.cpu[name] - before.cpu[name] for name in before.cpu},
        orchestrator_main_thread=after.orchestrator_main_thread
        - before.orchestrator_main_thread,
        machine_busy=after.machine.busy - before.machine.busy,
        driver=after.driver - before.driver,
    )


def rollouts_of(job: dict[str, Any]) -> int:
    return int(job.get("rollouts_completed") or 0) + int(job.get("rollouts_failed") or 0)


def _check_not_failed(job: dict[str, Any]) -> None:
    if job.get("status") == "failed":
        raise BenchError(f"job {job.get('job_id')} failed: {job.get('error')}")


async def wait_for_job(bench: BenchStack, job_id: str, *, deadline: float, poll: float,
                       on_poll: Callable[[], None] = lambda: None
                       ) -> tuple[dict[str, Any], bool]:
    """The job once it is terminal (True), or as it is at `deadline` (False). Overload
    errors of GetJob are retried until the deadline."""
    job: dict[str, Any] | None = None
    while True:
        try:
            job = await bench.get_job(job_id)
        except (ApiError, httpx.TimeoutException) as error:
            if transient_error(error) is None or time.monotonic() >= deadline:
                raise
            log(f"GetJob {job_id}: {error}; retrying")
            await asyncio.sleep(poll)
            continue
        on_poll()
        if job["status"] in TERMINAL:
            _check_not_failed(job)
            return job, True
        if time.monotonic() >= deadline:
            return job, False
        await asyncio.sleep(poll)


@dataclass
class Latencies:
    """Sequential GetJob calls: the latency of those that found their job running, and the
    calls that failed by overload, counted by kind."""

    seconds: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    rollouts_at_end: int = 0
    ended_by: str = ""

    @property
    def calls(self) -> int:
        return len(self.seconds) + sum(self.errors.values())

    def percentile(self, q: float) -> float:
        if not self.seconds:
            return math.nan
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000


async def sample_get_job(bench: BenchStack, job_ids: Sequence[str], *, max_samples: int,
                         deadline: float, on_sample: Callable[[], None] = lambda: None
                         ) -> Latencies:
    """GetJob on `job_ids` in turn, one call at a time, until `max_samples` calls were made,
    the deadline passes, or a job is seen finished (then fewer jobs run). A call failing by
    overload (see `transient_error`) is counted as such, and sampling goes on."""
    result = Latencies()
    last: dict[str, int] = {}
    turn = 0
    while True:
        if result.calls >= max_samples:
            result.ended_by = "samples"
            break
        if time.monotonic() >= deadline:
            result.ended_by = "deadline"
            break
        job_id = job_ids[turn % len(job_ids)]
        turn += 1
        started = time.perf_counter()
        try:
            job = await bench.get_job(job_id)
        except (ApiError, httpx.TimeoutException) as error:
            kind = transient_error(error)
            if kind is None:
                raise
            result.errors[kind] = result.errors.get(kind, 0) + 1
            await asyncio.sleep(GETJOB_PAUSE_SECONDS)
            continue
        elapsed = time.perf_counter() - started
        on_sample()
        last[job_id] = rollouts_of(job)
        if job["status"] in TERMINAL:
            _check_not_failed(job)
            result.ended_by = "a job finished"
            break
        if job["status"] == "running":
            result.seconds.append(elapsed)
        await asyncio.sleep(GETJOB_PAUSE_SECONDS)
    result.rollouts_at_end = sum(last.values())
    return result


class RssPeak:
    """The largest resident set size of one process seen by `sample()`."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.idle = _proc.rss_bytes(pid, "orchestrator")
        self.peak = self.idle

    def sample(self) -> None:
        self.peak = max(self.peak, _proc.rss_bytes(self._pid, "orchestrator"))


# -- scenarios -------------------------------------------------------------------------------


@dataclass
class CpuRow:
    run: int
    planned: int
    rollouts: int
    finished: bool
    failed_rollouts: int
    wall_seconds: float
    cpu_seconds: dict[str, float]
    orchestrator_main_thread_seconds: float
    rss_idle_mb: float
    rss_end_mb: float

    @property
    def per_rollout_ms(self) -> dict[str, float]:
        n = max(1, self.rollouts)
        return {name: 1000 * seconds / n for name, seconds in self.cpu_seconds.items()}



@dataclass
class GetJobRow:
    label: str
    jobs: int
    rollouts_per_job: int
    samples: int
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ended_by: str
    rollouts_at_end: int
    rss_idle_mb: float = 0.0
    rss_peak_mb: float = 0.0


@dataclass
class WallRow:
    rollouts: int
    latency_ms: float
    concurrency: int
    ideal_seconds: float
    wall_seconds: float
    finished: bool
    usage_seconds: float
    cpu_seconds: dict[str, float]
    orchestrator_main_thread_seconds: float
    driver_seconds: float
    others_seconds: float
    machine_busy_seconds: float
    cores: int

    @property
    def ratio(self) -> float:
        return self.wall_seconds / self.ideal_seconds if self.ideal_seconds else math.nan


@dataclass
class Results:
    cpu: list[CpuRow] = field(default_factory=list)
    getjob: list[GetJobRow] = field(default_factory=list)
    wall: WallRow | None = None


class Runner:
    """Runs scenarios, each on a fresh stack under `root`, and keeps their results."""

    def __init__(self, root: Path, sizes: Sizes, timeout: float | None, *,
                 model_calls_direct: bool = False, one_gateway: bool = False) -> None:
        self.root = root
        self.sizes = sizes
        self.timeout = timeout
        #: The task app's model calls straight to the interceptor, not through the gateway.
        self.model_calls_direct = model_calls_direct
        #: The task app's model calls through the API's gateway (no inference gateway).
        self.one_gateway = one_gateway
        self.results = Results()

    def _deadline(self, default: float) -> float:
        return self.timeout if self.timeout is not None else default

    async def _on_stack(self, name: str, body: Callable[[BenchStack], Awaitable[None]], *,
                        deadline: float, latency_ms: float = 0.0,
                        max_running_jobs: int = 4) -> None:
        log(f"{name}: starting the stack")
        async with asyncio.timeout(deadline + _SCENARIO_SLACK_SECONDS):
            bench = await start_bench_stack(self.root / name, latency_ms=latency_ms,
                                            max_running_jobs=max_running_jobs,
                                            model_calls_direct=self.model_calls_direct,
                                            one_gateway=self.one_gateway)
            try:
                await body(bench)
            except Exception:
                log(f"{name}: failed; last log lines of its processes:\n{bench.log_tails()}")
                raise
            finally:
                await bench.stop()  # a second signal is ignored, so this runs to its end
        log(f"{name}: done, every process stopped")

    async def cpu(self) -> None:
        # The sizes take turns (1k, 10k, 50k, then again), so a slow spell of the machine
        # weighs on every size alike rather than on one.
        for run, (val_seeds, default) in itertools.product(
                range(1, self.sizes.cpu_runs + 1),
                zip(self.sizes.cpu_val_seeds, self.sizes.cpu_deadlines, strict=True)):
            deadline = self._deadline(default)

            async def body(bench: BenchStack, val_seeds: int = val_seeds,
                           deadline: float = deadline, run: int = run) -> None:
                job = job_request(bench.task_app_url, num_candidates=NUM_CANDIDATES,
                                  val_seeds=val_seeds, max_concurrent=MAX_CONCURRENT)
                pids = bench.pids()
                orchestrator = pids["orchestrator"]
                rss_idle = _proc.rss_bytes(orchestrator, "orchestrator")
                before = snapshot(pids)
                job_id = await bench.submit(job)
                log(f"cpu: job {job_id}, {planned_rollouts(job)} rollouts planned")
                final, finished = await wait_for_job(
                    bench, job_id, deadline=time.monotonic() + deadline, poll=1.0)
                spent = usage(before, snapshot(pids))
                rss_end = _proc.rss_bytes(orchestrator, "orchestrator")
                if not finished:
                    log(f"cpu: deadline of {deadline:g} s reached at {rollouts_of(final)} "
                        "rollouts; cancelling")
                    await bench.cancel(job_id)
                row = CpuRow(run=run, planned=planned_rollouts(job),
                             rollouts=rollouts_of(final),
                             finished=finished,
                             failed_rollouts=int(final.get("rollouts_failed") or 0),
                             wall_seconds=spent.seconds, cpu_seconds=spent.cpu,
                             orchestrator_main_thread_seconds=spent.orchestrator_main_thread,
                             rss_idle_mb=rss_idle / _MB, rss_end_mb=rss_end / _MB)
                self.results.cpu.append(row)
                log(f"cpu: {row.rollouts} rollouts in {row.wall_seconds:.1f} s, orchestrator "
                    f"{row.per_rollout_ms['orchestrator']:.2f} ms/rollout")

            await self._on_stack(f"cpu-{val_seeds}-run{run}", body, deadline=deadline)

    async def getjob(self) -> None:
        deadline = self._deadline(self.sizes.deadline)

        async def body(bench: BenchStack) -> None:
            job = job_request(bench.task_app_url, num_candidates=NUM_CANDIDATES,
                              val_seeds=self.sizes.getjob_val_seeds,
                              max_concurrent=MAX_CONCURRENT)
            job_id = await bench.submit(job)
            log(f"getjob: job {job_id}, {planned_rollouts(job)} rollouts planned; sampling")
            found = await sample_get_job(bench, [job_id],
                                         max_samples=self.sizes.getjob_samples,
                                         deadline=time.monotonic() + deadline)
            self.results.getjob.append(_getjob_row("one job running", 1, planned_rollouts(job),
                                                   found))
            log(f"getjob: {len(found.seconds)} answered, {found.errors or 'none'} failed, "
                f"p99 {found.percentile(0.99):.1f} ms")
            if found.ended_by != "a job finished":
                await bench.cancel(job_id)

        await self._on_stack("getjob", body, deadline=deadline)

    async def jobs20(self) -> None:
        deadline = self._deadline(self.sizes.deadline)
        jobs = 20

        async def body(bench: BenchStack) -> None:
            job = job_request(bench.task_app_url, num_candidates=NUM_CANDIDATES,
                              val_seeds=self.sizes.jobs20_val_seeds,
                              max_concurrent=MAX_CONCURRENT)
            rss = RssPeak(bench.pids()["orchestrator"])
            # All at once: submitted one by one, the first jobs would be running (and, on a
            # slow engine, even finished) before the last one is created.
            job_ids = list(await asyncio.gather(*(bench.submit(job) for _ in range(jobs))))
            log(f"jobs20: {jobs} jobs of {planned_rollouts(job)} rollouts submitted "
                f"({bench.refused_submits} submit calls refused by overload); sampling")
            found = await sample_get_job(bench, job_ids, max_samples=self.sizes.getjob_samples,
                                         deadline=time.monotonic() + deadline,
                                         on_sample=rss.sample)
            row = _getjob_row(f"{jobs} jobs running", jobs, planned_rollouts(job), found)
            row.rss_idle_mb, row.rss_peak_mb = rss.idle / _MB, rss.peak / _MB
            if bench.refused_submits:
                row.errors["refused submit"] = bench.refused_submits
            self.results.getjob.append(row)
            log(f"jobs20: {len(found.seconds)} answered, {found.errors or 'none'} failed, "
                f"p99 {found.percentile(0.99):.1f} ms; stopping the stack ends the other jobs")

        await self._on_stack("jobs20", body, deadline=deadline, max_running_jobs=32)

    async def wall(self) -> None:
        deadline = self._deadline(self.sizes.deadline)

        async def body(bench: BenchStack) -> None:
            job = job_request(bench.task_app_url, num_candidates=NUM_CANDIDATES,
                              val_seeds=self.sizes.wall_val_seeds, max_concurrent=MAX_CONCURRENT)
            pids = bench.pids()
            before = snapshot(pids)
            job_id = await bench.submit(job)
            log(f"wall: job {job_id}, {planned_rollouts(job)} rollouts planned, "
                f"L = {WALL_LATENCY_MS:g} ms, C = {MAX_CONCURRENT}")
            final, finished = await wait_for_job(
                bench, job_id, deadline=time.monotonic() + deadline, poll=0.5)
            spent = usage(before, snapshot(pids))
            if not finished:
                await bench.cancel(job_id)
            rollouts = rollouts_of(final)
            started = datetime.fromisoformat(final["started_at"])
            ended = (datetime.fromisoformat(final["finished_at"]) if finished
                     and final.get("finished_at") else None)
            wall = (ended - started).total_seconds() if ended else spent.seconds
            row = WallRow(
                rollouts=rollouts, latency_ms=WALL_LATENCY_MS, concurrency=MAX_CONCURRENT,
                ideal_seconds=rollouts * WALL_LATENCY_MS / 1000 / MAX_CONCURRENT,
                wall_seconds=wall, finished=finished, usage_seconds=spent.seconds,
                cpu_seconds=spent.cpu,
                orchestrator_main_thread_seconds=spent.orchestrator_main_thread,
                driver_seconds=spent.driver, others_seconds=spent.others,
                machine_busy_seconds=spent.machine_busy, cores=_proc.cores())
            self.results.wall = row
            log(f"wall: {rollouts} rollouts in {wall:.1f} s, ideal {row.ideal_seconds:.1f} s, "
                f"ratio {row.ratio:.2f}")

        await self._on_stack("wall", body, deadline=deadline, latency_ms=WALL_LATENCY_MS)


def _getjob_row(label: str, jobs: int, rollouts_per_job: int, found: Latencies) -> GetJobRow:
    return GetJobRow(label=label, jobs=jobs, rollouts_per_job=rollouts_per_job,
                     samples=len(found.seconds), errors=dict(found.errors),
                     p50_ms=found.percentile(0.50),
                     p90_ms=found.percentile(0.90), p99_ms=found.percentile(0.99),
                     max_ms=max(found.seconds, default=math.nan) * 1000,
                     ended_by=found.ended_by, rollouts_at_end=found.rollouts_at_end)


# -- the report ------------------------------------------------------------------------------

#: The measured processes; the inference gateway is absent with `--one-gateway`.
_ROLES = ("orchestrator", "gateway", "inference_gateway", "proposer", "task_app", "model")


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(results: Results) -> str:
    parts: list[str] = []
    if results.cpu:
        rows = []
        for r in sorted(results.cpu, key=lambda r: (r.planned, r.run)):
            ms = r.per_rollout_ms
            main = 1000 * r.orchestrator_main_thread_seconds / max(1, r.rollouts)
            rows.append([
                f"{r.planned}", f"{r.run}",
                f"{r.rollouts}" + ("" if r.finished else " (timed out)"),
                f"{r.failed_rollouts}", _f(r.wall_seconds, 1),
                _f(r.rollouts / r.wall_seconds if r.wall_seconds else math.nan, 0),
                f"**{_f(ms['orchestrator'])}**", _f(main), _f(ms["gateway"]),
                _f(ms.get("inference_gateway", math.nan)),
                _f(ms["proposer"], 3), _f(ms["task_app"]), _f(ms["model"]),
                f"{_f(r.rss_idle_mb, 0)} → {_f(r.rss_end_mb, 0)}"])
        parts.append("### Orchestrator CPU per rollout (target: ≤ 1 ms, flat in N)\n\n" + _table(
            ["rollouts planned", "run", "done", "failed", "wall s", "rollouts/s",
             "orchestrator CPU ms/rollout", "its main thread", "gateway", "inference gateway",
             "proposer",
             "task app", "model", "orchestrator RSS MB, idle → end"], rows))
        parts.append(_render_cpu_medians(results.cpu))
    if results.getjob:
        rows = [[g.label, f"{g.rollouts_per_job}", f"{g.samples}",
                 ", ".join(f"{n} × {kind}" for kind, n in sorted(g.errors.items())) or "0",
                 _f(g.p50_ms, 1), _f(g.p90_ms, 1), f"**{_f(g.p99_ms, 1)}**", _f(g.max_ms, 1),
                 g.ended_by, f"{g.rollouts_at_end}"] for g in results.getjob]
        parts.append("### GetJob through the gateway (target: p99 < 50 ms)\n\n" + _table(
            ["while", "rollouts per job", "answered calls", "failed calls", "p50 ms", "p90 ms",
             "p99 ms", "max ms", "sampling ended by", "rollouts done, as last seen (all jobs)"],
            rows)
            + "\n\nPercentiles are over the answered calls; a failed call (the gateway's 503 "
            "when its health check of the orchestrator timed out, 504, or no answer within "
            "30 s) is counted, not timed.")
    memory = _memory_rows(results)
    if memory:
        parts.append("### Orchestrator resident memory (VmRSS)\n\n"
                     + _table(["figure", "MB"], memory))
    if results.wall is not None:
        parts.append(_render_wall(results.wall))
    return "\n\n".join(parts) + "\n"


def _by_size(rows: Sequence[CpuRow]) -> dict[int, list[CpuRow]]:
    """The `cpu` rows grouped by planned rollouts, smallest size first."""
    sizes: dict[int, list[CpuRow]] = {}
    for row in sorted(rows, key=lambda r: (r.planned, r.run)):
        sizes.setdefault(row.planned, []).append(row)
    return sizes


def _render_cpu_medians(rows: Sequence[CpuRow]) -> str:
    """The figure of each size: the median over its runs, with the lowest and highest."""
    table: list[list[str]] = []
    medians: list[tuple[int, float]] = []
    for planned, runs in _by_size(rows).items():
        ms = [r.per_rollout_ms["orchestrator"] for r in runs if r.rollouts]
        if not ms:
            continue
        median = statistics.median(ms)
        medians.append((planned, median))
        table.append([f"{planned}", f"{len(ms)}", f"**{_f(median)}**",
                      f"{_f(min(ms))} – {_f(max(ms))}"])
    text = ("Each size's figure is the median of its runs, each the first job of a fresh "
            "stack; the sizes took turns.\n\n" + _table(
                ["rollouts planned", "runs", "orchestrator CPU ms/rollout, median",
                 "lowest – highest"], table))
    if len(medians) > 1:
        (small, low), (large, high) = medians[0], medians[-1]
        text += (f"\n\nMedian orchestrator CPU per rollout at {large} rollouts / at {small}: "
                 f"**{high / low:.2f}x** (flat would be 1).")
    return text


def _memory_rows(results: Results) -> list[list[str]]:
    rows: list[list[str]] = []
    if results.cpu:
        first = min(results.cpu, key=lambda r: r.run)
        rows.append(["idle, fresh stack (before the first job)", _f(first.rss_idle_mb, 1)])
        # A slope between two jobs of one run, so a job's one-time growth (imports, caches)
        # cancels out; the median over the runs.
        slopes: list[float] = []
        small = large = first
        for run in sorted({r.run for r in results.cpu}):
            rows_of_run = [r for r in results.cpu if r.run == run]
            small = min(rows_of_run, key=lambda r: r.rollouts)
            large = max(rows_of_run, key=lambda r: r.rollouts)
            if large.rollouts > small.rollouts:
                slopes.append(((large.rss_end_mb - large.rss_idle_mb)
                               - (small.rss_end_mb - small.rss_idle_mb))
                              * 10_000 / (large.rollouts - small.rollouts))
        if slopes:
            rows.append([f"per 10k stored rollouts (growth of RSS over a job: {large.rollouts}-"
                         f"rollout job minus {small.rollouts}-rollout job, per 10k; median of "
                         f"{len(slopes)} run{'s' if len(slopes) > 1 else ''})",
                         _f(statistics.median(slopes), 1)])
    for g in results.getjob:
        if g.jobs > 1 and g.rss_peak_mb:
            rows.append([f"per running job ({g.jobs} jobs of {g.rollouts_per_job} rollouts: "
                         f"(peak {_f(g.rss_peak_mb, 0)} − idle {_f(g.rss_idle_mb, 0)}) / "
                         f"{g.jobs})", _f((g.rss_peak_mb - g.rss_idle_mb) / g.jobs, 1)])
    return rows


def _render_wall(w: WallRow) -> str:
    span = w.usage_seconds or math.nan
    rows = []
    for role in _ROLES:
        cpu = w.cpu_seconds.get(role, math.nan)
        rows.append([role.replace("_", " "), _f(cpu, 1), _f(cpu / span),
                     _f(1000 * cpu / max(1, w.rollouts), 2)])
    rows.append(["  orchestrator's main thread", _f(w.orchestrator_main_thread_seconds, 1),
                 _f(w.orchestrator_main_thread_seconds / span), "-"])
    rows.append(["this benchmark's client", _f(w.driver_seconds, 1), _f(w.driver_seconds / span),
                 "-"])
    rows.append(["other processes on the machine", _f(w.others_seconds, 1),
                 _f(w.others_seconds / span), "-"])
    rows.append(["machine total", _f(w.machine_busy_seconds, 1),
                 _f(w.machine_busy_seconds / span) + f" of {w.cores}", "-"])
    backend = sum(w.cpu_seconds.get(r, 0.0)
                  for r in ("orchestrator", "gateway", "inference_gateway", "proposer"))
    fakes = w.cpu_seconds["task_app"] + w.cpu_seconds["model"]
    # The fastest the job could have run if only the backend's own CPU limited it: the
    # orchestrator's event loop is one thread, and the backend as a whole has `cores` cores.
    bound = max(w.ideal_seconds, w.orchestrator_main_thread_seconds, backend / w.cores)
    gap = w.wall_seconds - w.ideal_seconds
    unexplained = max(0.0, w.wall_seconds - bound)
    head = _table(
        ["rollouts", "L ms", "C", "ideal s", "wall s", "wall / ideal (goal 1.15)"],
        [[f"{w.rollouts}" + ("" if w.finished else " (timed out)"), _f(w.latency_ms, 0),
          f"{w.concurrency}", _f(w.ideal_seconds, 1), _f(w.wall_seconds, 1),
          f"**{_f(w.ratio)}**"]])
    shares = _table(["process", "CPU s", "cores (CPU s / elapsed)", "CPU ms per rollout"], rows)
    # Each CPU second of the fakes delays the backend by at most one second, and only the
    # part of the wall time the backend's own CPU does not explain can be theirs.
    theirs = min(unexplained, fakes)

    def share(seconds: float) -> str:
        return _f(100 * seconds / gap if gap > 0 else math.nan, 0)

    lines = [
        f"- The gap, wall − ideal: {_f(gap, 1)} s.",
        f"- The backend's own CPU bounds the wall time from below at {_f(bound, 1)} s "
        f"(ratio {_f(bound / w.ideal_seconds if w.ideal_seconds else math.nan)}): the "
        f"orchestrator's event loop thread used {_f(w.orchestrator_main_thread_seconds, 1)} s, "
        f"and orchestrator + gateway + proposer {_f(backend, 1)} CPU s on {w.cores} cores.",
        f"- {_f(unexplained, 1)} s of the gap ({share(unexplained)} %) is beyond what the "
        f"backend's own CPU explains: CPU taken by the task app and the model "
        f"({_f(fakes, 1)} s, {_f(fakes / span)} cores), by other processes on the machine "
        f"({_f(w.others_seconds, 1)} s, {_f(w.others_seconds / span)} cores), or waiting.",
        f"- So at most {_f(theirs, 1)} s of the gap ({share(theirs)} %) is the task app's and "
        f"the model's CPU.",
    ]
    return ("### Job wall time / ideal, L = 50 ms, C = 64\n\n" + head + "\n\n" + shares
            + "\n\n" + "\n".join(lines))


def machine_line() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    load = os.getloadavg()
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return (f"commit {commit or 'unknown'}; {_proc.cores()} cores ({_proc.cpu_model()}), "
            f"{_proc.memory_gib():.0f} GiB; Python {platform.python_version()}; fake servers "
            f"on {loop}; load average at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


# -- the command -----------------------------------------------------------------------------


def _parse_only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--only takes a comma-separated list of {', '.join(SCENARIOS)}; got {text!r}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small jobs, a smoke run of about a minute or two")
    parser.add_argument("--only", type=_parse_only, default=list(SCENARIOS),
                        metavar="SCENARIO[,SCENARIO]",
                        help=f"run only these scenarios ({', '.join(SCENARIOS)})")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="the deadline of every job, instead of each scenario's default")
    parser.add_argument("--cpu-runs", type=int, default=None, metavar="N",
                        help=f"run each size of the cpu scenario N times, each on a fresh "
                             f"stack, and report the median (default {FULL.cpu_runs}, "
                             f"--quick {QUICK.cpu_runs})")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the raw results to PATH")
    calls = parser.add_mutually_exclusive_group()
    calls.add_argument("--model-calls-direct", action="store_true",
                       help="the task app's model calls go straight to the interceptor's "
                            "port instead of through the inference gateway (to tell the "
                            "gateways' share of a figure; not the default topology)")
    calls.add_argument("--one-gateway", action="store_true",
                       help="no inference gateway: the task app's model calls go through "
                            "the API's gateway (MIPRO_INFERENCE_GATEWAY=false)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scenarios' data and logs (always kept on a failure)")
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    if args.cpu_runs is not None and args.cpu_runs < 1:
        parser.error(f"--cpu-runs must be at least 1, got {args.cpu_runs}")
    return args


def _raise_open_files_limit() -> None:
    """Every job may hold 64 rollouts open, each a few sockets: lift the soft limit to the
    hard one; the stack's processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    stopping = False

    def on_signal() -> None:
        # The first signal cancels the run, whose cleanup then stops every process; later
        # ones must not interrupt that cleanup.
        nonlocal stopping
        if stopping:
            log("still stopping the processes this run started")
            return
        stopping = True
        main_task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        loop.add_signal_handler(signum, on_signal)
    root = Path(tempfile.mkdtemp(prefix="mipro-bench-perf-"))
    sizes = QUICK if args.quick else FULL
    if args.cpu_runs is not None:
        sizes = dataclasses.replace(sizes, cpu_runs=args.cpu_runs)
    runner = Runner(root, sizes, args.timeout,
                    model_calls_direct=args.model_calls_direct, one_gateway=args.one_gateway)
    topology = ("Model calls: straight to the interceptor's port, not through a gateway "
                "(--model-calls-direct)" if args.model_calls_direct else
                "Model calls: through the API's gateway, no inference gateway (--one-gateway)"
                if args.one_gateway else "")
    log(f"scenarios {', '.join(args.only)}{' (quick)' if args.quick else ''}; data and logs "
        f"in {root}{'; ' + topology if topology else ''}")
    header = machine_line()
    ok = False
    try:
        for name in SCENARIOS:
            if name in args.only:
                await getattr(runner, name)()
        ok = True
    finally:
        report = render(runner.results)
        machine = f"Machine: {header}" + (f"\n{topology}" if topology else "")
        print(f"{machine}\n\n{report}", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(asdict(runner.results), indent=2) + "\n")
        if ok and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"data and logs kept in {root}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _raise_open_files_limit()
    try:
        return asyncio.run(_run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; every process this run started has been stopped")
        return 130
    except (BenchError, _proc.ProcessGone, TimeoutError) as error:
        log(f"benchmark failed: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
