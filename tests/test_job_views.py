"""The basic view of a job does not grow with the job; the full view is the job as before."""

from __future__ import annotations

from bench.getjob_size import json_bytes, large_job
from mipro.v1 import jobs_pb2
from orchestrator._convert import job_to_proto, job_view


def _sizes(candidates: int, val_seeds: int) -> tuple[int, int]:
    job = large_job(candidates, val_seeds, bootstrap_seeds=16, test_seeds=0,
                    instruction_chars=500)
    full = job_to_proto(job)
    basic = job_view(job_to_proto(job), jobs_pb2.JOB_VIEW_BASIC)
    assert job_view(job_to_proto(job), jobs_pb2.JOB_VIEW_FULL) == full
    assert job_view(job_to_proto(job), jobs_pb2.JOB_VIEW_UNSPECIFIED) == full
    assert basic.candidate_count == len(full.candidates) == candidates
    return json_bytes(full), json_bytes(basic)


def test_basic_view_size_is_independent_of_candidates_and_seeds() -> None:
    small_full, small_basic = _sizes(2, 10)
    large_full, large_basic = _sizes(64, 10_000)
    assert large_full > 100_000 > 10 * small_full
    # Only the digits of counts differ between the two basic answers.
    assert abs(large_basic - small_basic) < 64
    assert large_basic < 5_000
