"""Converts domain records to the v1 protos, in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from mipro.v1 import jobs_pb2

from ._models import CandidateRecord, JobEvent, JobRecord, JobSpec
from ._scoreboard import rank_key
from ._synth import synth_type


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def spec_to_proto(spec: JobSpec) -> jobs_pb2.PolicyOptimization:
    """The spec as submitted, with defaults filled in."""
    policy = jobs_pb2.PolicyModel(model=spec.policy.model, provider=spec.policy.provider)
    if spec.policy.temperature is not None:
        policy.temperature = spec.policy.temperature
    if spec.policy.max_completion_tokens is not None:
        policy.max_completion_tokens = spec.policy.max_completion_tokens
    mipro = jobs_pb2.MiproConfig(
        mode=spec.mode,
        bootstrap_train_seeds=spec.bootstrap_train_seeds,
        val_seeds=spec.val_seeds,
        test_seeds=spec.test_seeds,
        proposer=jobs_pb2.ProposerConfig(
            mode=spec.proposer.mode, model=spec.proposer.model, provider=spec.proposer.provider,
            temperature=spec.proposer.temperature, max_tokens=spec.proposer.max_tokens),
        num_candidates=spec.num_candidates,
        max_concurrent=spec.max_concurrent,
        seed=spec.seed,
        env_name=spec.env_name,
        rollout_timeout_seconds=spec.rollout_timeout_seconds,
        num_iterations=spec.num_iterations,
        minibatch_size=spec.minibatch_size,
        few_shot_score_threshold=spec.few_shot_score_threshold,
        max_demo_set_size=spec.max_demo_set_size,
        max_demo_sets=spec.max_demo_sets,
        min_bootstrap_demos=spec.min_bootstrap_demos,
    )
    modules: dict[str, jobs_pb2.MiproModule] = {}
    for stage in spec.stages:
        module = modules.get(stage.module_id)
        if module is None:
            module = modules[stage.module_id] = mipro.modules.add(module_id=stage.module_id)
        module.stages.add(stage_id=stage.stage_id,
                          max_instruction_slots=stage.max_instruction_slots,
                          max_demo_slots=stage.max_demo_slots)
    if spec.env_config:
        mipro.env_config.CopyFrom(_struct(spec.env_config))
    if spec.max_rollouts is not None:
        mipro.termination_config.max_rollouts = spec.max_rollouts
    if spec.max_time_seconds is not None:
        mipro.termination_config.max_time_seconds = spec.max_time_seconds
    if spec.max_cost_usd is not None:
        mipro.termination_config.max_cost_usd = spec.max_cost_usd
    if spec.max_tokens is not None:
        mipro.termination_config.max_tokens = spec.max_tokens
    return jobs_pb2.PolicyOptimization(
        algorithm=spec.algorithm, task_app_url=spec.task_app_url, policy=policy, mipro=mipro,
        env_key_name=spec.env_key_name)


def job_to_proto(job: JobRecord) -> jobs_pb2.Job:
    """The job as the API shows it; candidates best first (the scoreboard's ranking)."""
    message = jobs_pb2.Job(
        job_id=job.job_id,
        status=job.status.value,
        phase=job.phase,
        policy_optimization=spec_to_proto(job.spec),
        created_at=to_timestamp(job.created_at),
        started_at=to_timestamp(job.started_at),
        finished_at=to_timestamp(job.finished_at),
        best_instruction=job.best_instruction,
        baseline_instruction=job.baseline_instruction,
        rollouts_completed=job.rollouts_completed,
        rollouts_failed=job.rollouts_failed,
        policy_tokens=min(job.policy_tokens, 2**31 - 1),
        proposer_tokens=min(job.proposer_tokens, 2**31 - 1),
        cost_usd=job.cost_usd,
        error=job.error,
        termination_reason=job.termination_reason,
        failures_by_cause=job.failures_by_cause,
        history=[jobs_pb2.HistoryPoint(rollouts=r, best_score=s, candidate=c)
                 for r, s, c in job.history],
        resumes=job.resumes,
        best_prompt=job.best_instruction,
        iteration=max((c.round for c in job.candidates), default=0),
        candidate_count=len(job.candidates),
    )
    for name in ("best_score", "baseline_score", "baseline_test_score", "best_test_score"):
        value = getattr(job, name)
        if value is not None:
            setattr(message, name, value)
    ranked = sorted(job.candidates, key=lambda c: rank_key(
        c.index, c.mean_score, c.seeds_scored, c.failures))
    message.candidates.extend(candidate_to_proto(candidate) for candidate in ranked)
    return message


def candidate_to_proto(candidate: CandidateRecord) -> jobs_pb2.Candidate:
    """A candidate with its standing."""
    entry = jobs_pb2.Candidate(
        index=candidate.index, instruction=candidate.instruction, tip=candidate.tip,
        seeds_scored=candidate.seeds_scored, failures=candidate.failures,
        round=candidate.round, fully_evaluated=candidate.fully_evaluated,
        policy_tokens=min(candidate.policy_tokens, 2**31 - 1), cost_usd=candidate.cost_usd,
        excluded_reason=candidate.excluded_reason, demo_set_id=candidate.demo_set,
        demo_seeds=candidate.demo_seeds,
        stage_prompts=[jobs_pb2.StagePrompt(stage_id=k, instruction=v)
                       for k, v in candidate.stage_instructions.items()])
    if candidate.mean_score is not None:
        entry.mean_score = candidate.mean_score
    return entry


def job_view(message: jobs_pb2.Job, view: int) -> jobs_pb2.Job:
    """`message` in `view` (AIP-157): the basic view drops the seed lists and the candidates,
    whose size grows with the job; `candidate_count` stays, for `ListCandidates`."""
    if view == jobs_pb2.JOB_VIEW_BASIC:
        mipro = message.policy_optimization.mipro
        for seeds in (mipro.bootstrap_train_seeds, mipro.val_seeds, mipro.test_seeds):
            del seeds[:]
        del message.candidates[:]
    return message


def event_to_proto(event: JobEvent) -> jobs_pb2.JobEvent:
    """An event as the API shows it."""
    return jobs_pb2.JobEvent(
        seq=event.seq, type=event.type, message=event.message, data=_struct(event.data),
        created_at=to_timestamp(event.created_at), terminal=event.terminal,
        synth_type=synth_type(event.type))
