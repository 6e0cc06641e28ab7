"""How big a GetJob answer is for a large job: the full view (what GetJob returned before the
basic view existed, and still returns when `view` is unset) against the basic view, a
`ListCandidates` page and synth-ai 0.9's offline job.

    python -m bench.getjob_size                          # 64 candidates x 10k seeds
    python -m bench.getjob_size --candidates 64 --val-seeds 10000 --instruction-chars 500

The job record is built in process (a job of this shape runs 640k rollouts) and rendered by
the orchestrator's own converters; the JSON is printed with the gateway transcoder's print
options (`preserve_proto_field_name`, primitives always printed, no whitespace), so it is the
REST body byte for byte up to key order. Prints a Markdown table of bytes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from mipro.v1 import jobs_pb2
from orchestrator._convert import candidate_to_proto, job_to_proto, job_view
from orchestrator._models import (
    CandidateRecord,
    JobRecord,
    JobSpec,
    JobStatus,
    PolicySpec,
    ProposerSpec,
)
from orchestrator._offline import offline_job


def large_job(candidates: int, val_seeds: int, bootstrap_seeds: int, test_seeds: int,
              instruction_chars: int) -> JobRecord:
    """A finished job of the given shape, every candidate scored on every seed."""
    spec = JobSpec(
        task_app_url="https://task-app.example.com",
        policy=PolicySpec(model="gpt-4o-mini", provider="openai", temperature=0.0,
                          max_completion_tokens=256),
        proposer=ProposerSpec(model="gpt-4o-mini", provider="openai"),
        bootstrap_train_seeds=tuple(range(bootstrap_seeds)),
        val_seeds=tuple(range(100_000, 100_000 + val_seeds)),
        test_seeds=tuple(range(200_000, 200_000 + test_seeds)),
        num_candidates=candidates - 1, max_concurrent=64)
    text = ("Classify the customer's message into exactly one intent; answer with the label "
            "only. ") * (instruction_chars // 86 + 1)
    records = [CandidateRecord(index=i, instruction=text[:instruction_chars],
                               tip="baseline" if i == 0 else "be concise and name the label",
                               mean_score=0.5 + i / (4 * candidates), seeds_scored=val_seeds,
                               round=0 if i == 0 else 1 + i % 2, fully_evaluated=True,
                               policy_tokens=val_seeds * 180, cost_usd=1.23)
               for i in range(candidates)]
    now = datetime.now(UTC)
    return JobRecord(
        job_id="pl_0123456789abcdef", owner="tenant", spec=spec, status=JobStatus.SUCCEEDED,
        created_at=now, started_at=now, finished_at=now, phase="done",
        best_score=records[-1].mean_score, best_instruction=records[-1].instruction,
        baseline_score=records[0].mean_score, baseline_instruction=records[0].instruction,
        rollouts_completed=bootstrap_seeds + candidates * val_seeds, policy_tokens=2**31 - 1,
        termination_reason="completed", candidates=records,
        history=[(n * 1000, 0.5 + n / 100, n % candidates) for n in range(20)])


def json_bytes(message: Message) -> int:
    """The REST body's size: the transcoder's print options."""
    return len(MessageToJson(message, preserving_proto_field_name=True,
                             always_print_fields_with_no_presence=True, indent=None,
                             ensure_ascii=False).encode())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--val-seeds", type=int, default=10_000)
    parser.add_argument("--bootstrap-seeds", type=int, default=16)
    parser.add_argument("--test-seeds", type=int, default=0)
    parser.add_argument("--instruction-chars", type=int, default=500)
    args = parser.parse_args(argv)
    job = large_job(args.candidates, args.val_seeds, args.bootstrap_seeds, args.test_seeds,
                    args.instruction_chars)
    full = job_to_proto(job)
    basic = job_view(job_to_proto(job), jobs_pb2.JOB_VIEW_BASIC)
    page = jobs_pb2.ListCandidatesResponse(
        candidates=[candidate_to_proto(c) for c in job.candidates[:20]],
        next_page_token="x" * 40, total_size=len(job.candidates))
    rows = [
        ("GetJob, full view (unset `view`: the answer before this change)", full),
        ("GetJob, `view=JOB_VIEW_BASIC`", basic),
        ("ListCandidates, one page of 20", page),
        ("GET /api/v1/offline/jobs/{id} (synth-ai 0.9)", offline_job(job)),
    ]
    print(f"Job: {args.candidates} candidates, {args.val_seeds} validation seeds, "
          f"{args.bootstrap_seeds} bootstrap seeds, {args.test_seeds} test seeds, "
          f"{args.instruction_chars}-character instructions.\n")
    print("| answer | JSON bytes (REST) | protobuf bytes (gRPC) |")
    print("|---|---:|---:|")
    for label, message in rows:
        print(f"| {label} | {json_bytes(message):,} | {message.ByteSize():,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
