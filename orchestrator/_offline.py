"""synth-ai 0.9's offline jobs (`/api/v1/offline/jobs`, `kind: "mipro_offline"`) over ours.

A create in Synth's offline form is our `CreateJobRequest` in Synth's SDK form (its `config`
is 0.7's `config_body`), so it is validated by the same code and an error names the field
under `config`. The reads convert our records into Synth's shapes: a job with `state`,
`best_reward` and `best_candidate` but no lists (its size does not grow with the job), and
pages of candidates and seed evaluations (`items`, `next_cursor`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from google.protobuf.json_format import MessageToDict

from mipro.v1 import jobs_pb2

from ._convert import to_timestamp
from ._errors import InvalidArgument
from ._models import CandidateRecord, JobRecord, JobSpec, RolloutResult
from ._scoreboard import Phase
from ._store import RolloutFilter
from ._validation import validate_create_request

KIND = "mipro_offline"
TECHNIQUE = "discrete_optimization"
#: The `state` values a PATCH may set, and what each does.
STATES = ("paused", "running", "cancelled")
#: Our rollout phases under Synth's split names.
_SPLITS = {Phase.BOOTSTRAP.value: "train", Phase.VAL.value: "val", Phase.TEST.value: "test"}


def spec_of(request: jobs_pb2.CreateOfflineJobRequest,
            env: Mapping[str, str] | None = None) -> JobSpec:
    """The validated spec of an offline create; `InvalidArgument` names the field. `env`
    resolves providers (default: os.environ)."""
    if request.kind != KIND:
        raise InvalidArgument("kind", f'must be "{KIND}" (the only kind served here), '
                                      f"got {request.kind!r}")
    if request.technique not in ("", TECHNIQUE):
        raise InvalidArgument("technique", f'must be "{TECHNIQUE}", got {request.technique!r}')
    if request.config_mode.upper() not in ("", "DEFAULT", "FULL"):
        raise InvalidArgument("config_mode", f'must be "DEFAULT" or "FULL", got '
                                             f"{request.config_mode!r}")
    if request.container_worker_token:
        raise InvalidArgument("container_worker_token", "is not supported (there is no "
                              "SynthTunnel here): give the container's own URL")
    if request.HasField("auto_start") and not request.auto_start:
        raise InvalidArgument("auto_start", "must be true: jobs always start when created")
    config = MessageToDict(request.config) if request.HasField("config") else {}
    if config and "prompt_learning" not in config:
        config = {"prompt_learning": config}
    ours = jobs_pb2.CreateJobRequest(algorithm="mipro")
    if config:
        ours.config_body.update(config)
    else:
        raise InvalidArgument("config", "is required: {\"prompt_learning\": {...}}")
    try:
        return validate_create_request(ours, env)
    except InvalidArgument as error:
        field = error.field
        if field.startswith("config_body"):
            field = "config" + field.removeprefix("config_body")
        raise InvalidArgument(field, error.description) from None


def offline_job(job: JobRecord) -> jobs_pb2.OfflineJob:
    """The job in Synth's offline shape."""
    message = jobs_pb2.OfflineJob(
        job_id=job.job_id, kind=KIND, technique=TECHNIQUE, status=job.status.value,
        state=job.status.value, best_candidate=job.best_instruction,
        best_prompt=job.best_instruction, phase=job.phase,
        candidate_count=len(job.candidates), rollouts_completed=job.rollouts_completed,
        rollouts_failed=job.rollouts_failed,
        iteration=max((c.round for c in job.candidates), default=0), error=job.error,
        termination_reason=job.termination_reason, created_at=to_timestamp(job.created_at),
        finished_at=to_timestamp(job.finished_at))
    if job.best_score is not None:
        message.best_reward = message.best_score = job.best_score
    if job.baseline_score is not None:
        message.baseline_reward = job.baseline_score
    return message


def candidate_id(job_id: str, index: int) -> str:
    return f"{job_id}_c{index}"


def candidate_status(candidate: CandidateRecord) -> str:
    if candidate.excluded_reason:
        return "excluded"
    return "evaluated" if candidate.seeds_scored else "pending"


def offline_candidate(job_id: str, candidate: CandidateRecord) -> jobs_pb2.OfflineCandidate:
    message = jobs_pb2.OfflineCandidate(
        candidate_id=candidate_id(job_id, candidate.index), index=candidate.index,
        candidate_content=candidate.instruction, prompt_text=candidate.instruction,
        status=candidate_status(candidate), seeds_scored=candidate.seeds_scored,
        failures=candidate.failures, round=candidate.round, tip=candidate.tip,
        optimization_mode="offline", excluded_reason=candidate.excluded_reason)
    if candidate.mean_score is not None:
        message.reward = message.score = candidate.mean_score
    return message


def candidate_filter(request: jobs_pb2.ListOfflineCandidatesRequest,
                     ) -> Callable[[CandidateRecord], bool]:
    """Which candidates the request's filters keep; an unknown filter value keeps none."""
    matches = request.algorithm in ("", "mipro") and request.mode in ("", "offline")
    return lambda c: matches and request.status in ("", candidate_status(c))


def seed_eval(job_id: str, result: RolloutResult) -> jobs_pb2.SeedEval:
    message = jobs_pb2.SeedEval(
        rollout_id=result.rollout_id, candidate_id=candidate_id(job_id, result.candidate_index),
        seed=result.seed, split=_SPLITS.get(result.phase, result.phase), success=result.ok,
        failure_cause=result.failure_cause, candidate_index=result.candidate_index)
    if result.reward is not None:
        message.reward = result.reward
    return message


def seed_eval_filter(job_id: str, request: jobs_pb2.ListSeedEvalsRequest) -> RolloutFilter:
    """Which stored rollouts the request's filters keep."""
    phases = {split: phase for phase, split in _SPLITS.items()}
    if request.split and request.split not in phases:
        raise InvalidArgument("split", f"must be one of {', '.join(phases)}, got "
                                       f"{request.split!r}")
    candidate: int | None = None
    if request.candidate_id:
        index = request.candidate_id.removeprefix(f"{job_id}_c")
        candidate = int(index) if index.isdigit() else -1  # another job's: none match
    return RolloutFilter(
        phase=phases.get(request.split), candidate=candidate,
        seed=request.seed if request.HasField("seed") else None,
        ok=request.success if request.HasField("success") else None)
