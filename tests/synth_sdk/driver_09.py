"""Runs synth-ai 0.9's offline-jobs client (`PolicyOptimizationOfflineJob`, `kind:
"mipro_offline"`) once and prints what it saw as one JSON line.

Run by `tests/test_synth_sdk_09.py` with the Python of a separate venv holding synth-ai 0.9,
so it imports nothing of ours: `python driver_09.py ARGS.json` where the file says
`backend_url`, `api_key`, `config` (the `{"prompt_learning": {...}}` dict), `pause` (whether
to pause and resume the job right after creating it) and `page` (the page size for
candidates and seed evaluations). Each call is the client's own: create, pause, status,
resume, `stream_until_complete` (its poller), events, the candidate and seed-eval pages, the
SSE stream read with the client's own SSE reader (its Rust core), the job list, and a
second job's cancel.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import synth_ai_py
from synth_ai.core.rust_core.urls import ensure_api_base
from synth_ai.sdk.optimization.internal.learning.prompt_learning_client import (
    PromptLearningClient,
)
from synth_ai.sdk.optimization.policy.v1 import PolicyOptimizationOfflineJob


def _pages(fetch: Any, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every item of a cursor-paged listing, and how many pages it took."""
    items: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        page = asyncio.run(fetch(limit=limit, cursor=cursor))
        items += page["items"]
        pages += 1
        cursor = page.get("next_cursor") or None
        if cursor is None:
            return items, pages


def _sse(backend_url: str, api_key: str, job_id: str) -> list[dict[str, Any]]:
    """The job's events from the SSE stream, read by the client's SSE reader to its end."""
    url = f"{ensure_api_base(backend_url)}/v1/offline/jobs/{job_id}/events/stream"
    stream = synth_ai_py.stream_sse_events(
        url, headers={"Accept": "text/event-stream", "authorization": f"Bearer {api_key}"},
        method="GET", json_payload=None, timeout=60)
    return [dict(event) for event in stream]


def run_policy_job(args: dict[str, Any]) -> dict[str, Any]:
    """0.9's `PolicyOptimizationJob` (its Rust core submits and streams): submit, pause,
    resume, `stream_until_complete`, results. Its Rust calls go to
    `SYNTH_RUST_BACKEND_URL_OVERRIDE`, set by the test to the gateway."""
    from synth_ai.sdk.optimization.policy import PolicyOptimizationJob

    job = PolicyOptimizationJob.from_dict(
        config_dict=args["config"], backend_url=args["backend_url"], api_key=args["api_key"],
        container_api_key=args["environment_key"],
        # Its own pre-submit check calls the task app with no key, which a task app that
        # checks its key on /health refuses; the backend's preflight checks it instead.
        skip_health_check=True)
    seen: dict[str, Any] = {"job_id": job.submit()}
    result = job.stream_until_complete(timeout=120.0)
    seen["result"] = {"status": str(getattr(result.status, "value", result.status)),
                      "best_reward": getattr(result, "best_reward", None),
                      "best_score": getattr(result, "best_score", None)}
    seen["status"] = job.get_status()
    seen["results"] = job.get_results()
    # Its streamer ends at a `job.paused` event, so pause and resume are run on a second job.
    other = PolicyOptimizationJob.from_dict(
        config_dict=args["pause_config"], backend_url=args["backend_url"], api_key=args["api_key"],
        container_api_key=args["environment_key"], skip_health_check=True)
    seen["other_id"] = other.submit()
    seen["paused"] = other.pause(reason="sdk test")
    seen["resumed"] = other.resume(reason="sdk test")
    seen["cancelled"] = other.cancel(reason="sdk test")
    return seen


def main(path: str) -> None:
    args = json.loads(Path(path).read_text())
    if args.get("client") == "policy_job":
        print(json.dumps(run_policy_job(args), default=str))
        return
    base, key = args["backend_url"], args["api_key"]
    job = PolicyOptimizationOfflineJob.create(
        kind="mipro_offline", system_name="mipro-sdk-test", config=args["config"],
        backend_url=base, api_key=key)
    seen: dict[str, Any] = {"job_id": job.job_id}
    if args.get("pause"):
        seen["paused"] = job.pause()
        seen["status_paused"] = job.status()
        seen["resumed"] = job.resume()
    final = job.stream_until_complete(timeout=120.0, interval=0.5)
    seen["final"] = final
    seen["status"] = job.status()
    seen["events"] = job.events(since_seq=0, limit=500)
    client = PromptLearningClient(base_url=base, api_key=key)
    limit = int(args.get("page", 2))
    seen["candidates"], seen["candidate_pages"] = _pages(
        lambda **kw: client.list_candidates(job.job_id, **kw), limit)
    seen["seed_evals"], seen["seed_eval_pages"] = _pages(
        lambda **kw: client.list_seed_evals(job.job_id, **kw), limit * 10)
    seen["val_evals"], _ = _pages(
        lambda **kw: client.list_seed_evals(job.job_id, split="val", success=True, **kw), 1000)
    seen["sse"] = _sse(base, key, job.job_id)
    other = PolicyOptimizationOfflineJob.create(
        kind="mipro_offline", system_name="mipro-sdk-test", config=args["config"],
        backend_url=base, api_key=key)
    seen["cancelled"] = other.cancel()
    seen["cancelled_status"] = other.status()
    listed = PolicyOptimizationOfflineJob.list(kind="mipro_offline", state="succeeded",
                                               limit=100, backend_url=base, api_key=key)
    seen["listed"] = [item["job_id"] for item in listed["items"]]
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
