"""Are a job's proposals repeatable on the real local model? Runs the same job several times on
one stack (SmolLM2-135M-Instruct through `mipro.local_model`, both policy and proposer) and
prints, per run, the wall time, the time spent proposing and the candidates; then whether
every run proposed the same candidates.

    .venv/bin/python -m bench.proposer_repeatable [--runs 2] [--val-seeds 20] [--fresh-model]

The job is the demo's (`examples/support_intents/job_local_model.json`) with fewer
validation seeds and no test seeds, so a run takes a minute or two on 2 cores. The runs go
one after the other on the same model server, so a later run finds the earlier runs' prompts
in the server's prompt cache: what a repeated `make demo` against a long-running server does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from mipro._settings import Settings
from mipro._stack import Stack, free_port, free_ports_env, stack_env

JOB_FILE = Path(__file__).resolve().parent.parent / "examples" / "support_intents" / \
    "job_local_model.json"
JOBS = "/api/policy-optimization/online/jobs"


def _job(task_app_url: str, val_seeds: int) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(JOB_FILE.read_text())
    mipro = job["policy_optimization"]["mipro"]
    job["policy_optimization"]["task_app_url"] = task_app_url
    mipro["val_seeds"] = mipro["val_seeds"][:val_seeds]
    mipro["minibatch_size"] = min(10, val_seeds)
    mipro.pop("test_seeds", None)
    return job


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


async def _run(client: httpx.AsyncClient, job: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    created = await client.post(JOBS, json=job)
    created.raise_for_status()
    job_id = created.json()["job_id"]
    while True:
        record = (await client.get(f"{JOBS}/{job_id}")).json()
        if record["status"] in ("succeeded", "failed", "cancelled"):
            break
        await asyncio.sleep(1.0)
    events = (await client.get(f"{JOBS}/{job_id}/events",
                               params={"since_seq": 0, "limit": 5000})).json()["events"]
    proposing = 0.0
    opened = ""
    for event in events:
        if event["type"] == "phase.started" and event["data"].get("phase") == "propose":
            opened = event["created_at"]
        elif event["type"] == "proposals.received" and opened:
            proposing += _seconds(opened, event["created_at"])
            opened = ""
    rejected: dict[str, int] = {}
    for event in events:
        if event["type"] == "proposals.received":
            for reason, count in (event["data"].get("rejected") or {}).items():
                rejected[reason] = rejected.get(reason, 0) + count
    return {"status": record["status"], "error": record.get("error", ""),
            "seconds": time.monotonic() - started, "proposing_seconds": proposing,
            "candidates": [c["instruction"] for c in sorted(record["candidates"],
                                                            key=lambda c: c["index"])],
            "best_score": record.get("best_score"), "rejected": rejected,
            "proposer_tokens": record.get("proposer_tokens")}


async def main(runs: int, val_seeds: int, fresh_model: bool) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mipro-repeatable-"))
    api_key = "mk_bench_" + secrets.token_hex(8)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("MIPRO_", "OPENAI_", "PROD_OPENAI_", "GROQ_"))}
    env = {**base_env, "MIPRO_HOST": "127.0.0.1", **free_ports_env(),
           "MIPRO_DATA_DIR": str(tmp / "data"), "MIPRO_API_KEYS": api_key,
           "MIPRO_LOG_FORMAT": "json", "MIPRO_TASK_APP_ALLOW": "loopback",
           "MIPRO_PROPOSER_STRUCTURED_OUTPUT": "false"}
    settings = Settings.from_env(env)
    stack = Stack(settings, stack_env(settings, env), log_dir=tmp / "logs")
    environment_key = "env_bench_" + secrets.token_hex(8)
    results = []
    try:
        model_port = free_port()
        model_url = await stack.start_local_model(model_port)
        stack.env["MIPRO_PROVIDER_LOCAL_BASE_URL"] = model_url
        task_app_url = await stack.start_task_app(free_port(), environment_key)
        await stack.start_core()
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60.0,
                                     headers={"Authorization": f"Bearer {api_key}"}) as client:
            (await client.post("/api/v1/env-keys", json={
                "name": "ENVIRONMENT_API_KEY", "value": environment_key})).raise_for_status()
            for number in range(1, runs + 1):
                if fresh_model and number > 1:
                    await stack.process("local-model").stop(10.0)
                    await stack.start_local_model(model_port)
                result = await _run(client, _job(task_app_url, val_seeds))
                results.append(result)
                print(f"run {number}: {result['status']} in {result['seconds']:.1f} s "
                      f"(proposing {result['proposing_seconds']:.1f} s), best "
                      f"{result['best_score']}, proposer tokens {result['proposer_tokens']}, "
                      f"rejected {result['rejected']} {result['error']}", flush=True)
                for index, text in enumerate(result["candidates"]):
                    print(f"  [{index}] {' '.join(text.split())[:150]}", flush=True)
    finally:
        await asyncio.shield(stack.stop())
    same = all(r["candidates"] == results[0]["candidates"] for r in results)
    print(f"identical candidates in all {len(results)} runs: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--val-seeds", type=int, default=20)
    parser.add_argument("--fresh-model", action="store_true",
                        help="restart the model server before each run")
    arguments = parser.parse_args()
    raise SystemExit(asyncio.run(main(arguments.runs, arguments.val_seeds,
                                      arguments.fresh_model)))
