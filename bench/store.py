"""What one job-store operation costs on SQLite and on Postgres (issue 12's job store).

    python -m bench.store                           # both backends, a temporary Postgres
    python -m bench.store --postgres-url URL        # an existing (empty, upgraded) database
    python -m bench.store --ops 500                 # fewer operations per row

For each backend and each number of concurrent callers (1 and 16, one store object: the
orchestrator's own pattern, one connection for SQLite, a pool for Postgres), it times the
operations a running job makes per rollout: `record_rollout` (one row), `append_event`
(the job's next number), `save_job` (the summary) and `get_job`, and prints per-operation
latency (p50, p99), throughput and this process's CPU time per operation (the
orchestrator's side; the Postgres server's own CPU is not in it) as a Markdown table on
stdout. Without `--postgres-url`
it starts Postgres as the tests do (`tests/_stores.py`: Debian's binaries in a temp
directory, durability off), so its figures are of a local server without fsync and without
a network hop; a real deployment adds its round trip to each operation.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mipro._settings import Settings
from orchestrator._models import (
    JobRecord,
    JobSpec,
    JobStatus,
    PolicySpec,
    ProposerSpec,
    RolloutResult,
)
from orchestrator._store import JobStore
from orchestrator._store_factory import make_store, upgrade_schema

SPEC = JobSpec(task_app_url="http://127.0.0.1:1", policy=PolicySpec("m", "openai", 0.0, 64),
               proposer=ProposerSpec("m", "openai"), bootstrap_train_seeds=(0, 1, 2, 3, 4),
               val_seeds=tuple(range(100, 150)))
TRACE = {"messages": [{"role": "user", "content": "x" * 400}], "answer": "billing"}


async def _timed(ops: int, concurrency: int,
                 op: Callable[[int], Awaitable[Any]]) -> tuple[float, float, float, float]:
    """(p50 ms, p99 ms, operations per second, this process's CPU µs per operation) of `ops`
    calls of `op`, `concurrency` at once."""
    latencies: list[float] = []
    counter = iter(range(ops))

    async def caller() -> None:
        for i in counter:
            started = time.perf_counter()
            await op(i)
            latencies.append((time.perf_counter() - started) * 1000)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49], cuts[98], ops / elapsed, cpu / ops * 1e6


async def _round(name: str, store: JobStore, ops: int, concurrency: int) -> list[str]:
    """One row per operation for one store object and one number of callers."""
    job_id = f"pl_bench_{concurrency}"
    job = JobRecord(job_id=job_id, owner="own_bench", spec=SPEC, status=JobStatus.RUNNING,
                    created_at=datetime.now(UTC))
    await store.create_job(job)

    def rollout(i: int) -> Awaitable[None]:
        return store.record_rollout(job_id, RolloutResult(
            f"{job_id}_v0s{i}", 0, i, "val", 0.5, trace=TRACE, prompt_tokens=120,
            completion_tokens=8))

    def event(i: int) -> Awaitable[Any]:
        return store.append_event(job_id, "val.progress", f"val rollouts {i}",
                                  {"done": i, "planned": ops}, terminal=False)

    def save(i: int) -> Awaitable[None]:
        job.rollouts_completed = i
        return store.save_job(job)

    def get(i: int) -> Awaitable[Any]:
        return store.get_job(job_id)

    await _timed(20 * concurrency, concurrency, get)  # warm-up: a pool grows to `concurrency`
    rows = []
    for label, op in (("record_rollout", rollout), ("append_event", event),
                      ("save_job", save), ("get_job", get)):
        p50, p99, rate, cpu = await _timed(ops, concurrency, op)
        rows.append(f"| {name} | {concurrency} | {label} | {p50:.2f} | {p99:.2f} | {rate:,.0f} "
                    f"| {cpu:.0f} |")
    events = await store.list_events(job_id, since_seq=0, limit=ops + 1)
    assert [e.seq for e in events] == list(range(1, ops + 1)), "event numbers have gaps"
    return rows


async def _measure(name: str, url: str, ops: int) -> list[str]:
    settings = Settings.from_env({"MIPRO_DATABASE_URL": url})
    await upgrade_schema(settings)
    rows = []
    for concurrency in (1, 16):
        store = make_store(settings)
        await store.open()
        try:
            rows += await _round(name, store, ops, concurrency)
        finally:
            await store.close()
    return rows


async def _main(args: argparse.Namespace) -> int:
    server: Any = None
    url = args.postgres_url
    if not url:
        stores = importlib.import_module("tests._stores")
        bindir = stores.find_bindir()
        if bindir is None:
            print("Postgres is not installed: `make setup-postgres`, or pass --postgres-url",
                  file=sys.stderr)
            return 1
        print("starting a temporary Postgres (tests/_stores.py)", file=sys.stderr)
        server = stores.start_postgres(bindir)
        url = server.new_schema()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = await _measure("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", args.ops)
            rows += await _measure("Postgres", url, args.ops)
    finally:
        if server is not None:
            server.stop()
    print("| store | callers | operation | p50 ms | p99 ms | ops/s | client CPU µs/op |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    parser.add_argument("--postgres-url", default="",
                        help="an empty Postgres database (it is upgraded); default: start one")
    parser.add_argument("--ops", type=int, default=2000, help="operations per row")
    raise SystemExit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
