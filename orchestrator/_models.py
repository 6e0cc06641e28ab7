"""Domain types of the orchestrator: a job's validated spec, its record, rollouts and events.

These are plain dataclasses, free of gRPC and SQL: `_convert.py` turns them into protos and
the store implementations into rows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import _defaults as defaults


class JobStatus(enum.StrEnum):
    """A job's lifecycle state, spelled as the REST API spells it."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Stopped by a pause; resumed from the store, nothing stored repeated.
    PAUSED = "paused"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class PolicySpec:
    """The policy model that the interceptor forwards the task app's calls to."""

    model: str
    provider: str
    temperature: float | None = None
    max_completion_tokens: int | None = None


@dataclass(frozen=True)
class ProposerSpec:
    """The proposer model."""

    model: str
    provider: str
    mode: str = defaults.PROPOSER_MODE
    temperature: float = defaults.PROPOSER_TEMPERATURE.default
    max_tokens: int = defaults.PROPOSER_MAX_TOKENS.default


@dataclass(frozen=True)
class StageSpec:
    """A stage of a multi-stage task app (Synth's `modules[].stages[]`)."""

    stage_id: str
    module_id: str = ""
    #: 0 keeps the stage's own instruction; otherwise candidates replace it.
    max_instruction_slots: int = defaults.MAX_INSTRUCTION_SLOTS.default
    #: Demos per demo set in this stage, at most (0: none).
    max_demo_slots: int = defaults.MAX_DEMO_SLOTS.default


@dataclass(frozen=True)
class JobSpec:
    """A validated job configuration with every default filled in."""

    task_app_url: str
    policy: PolicySpec
    proposer: ProposerSpec
    bootstrap_train_seeds: tuple[int, ...]
    val_seeds: tuple[int, ...]
    test_seeds: tuple[int, ...] = ()
    algorithm: str = "mipro"
    mode: str = "offline"
    num_candidates: int = defaults.NUM_CANDIDATES.default
    max_concurrent: int = defaults.MAX_CONCURRENT.default
    seed: int = defaults.SEED.default
    env_name: str = ""
    env_config: dict[str, Any] = field(default_factory=dict)
    rollout_timeout_seconds: float = defaults.ROLLOUT_TIMEOUT_SECONDS.default
    num_iterations: int = defaults.NUM_ITERATIONS.default
    minibatch_size: int = defaults.MINIBATCH_SIZE.default
    max_rollouts: int | None = None
    max_time_seconds: float | None = None
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    #: The registered environment key the job sends to its task app (by name, never the value).
    env_key_name: str = "ENVIRONMENT_API_KEY"
    few_shot_score_threshold: float = defaults.FEW_SHOT_SCORE_THRESHOLD.default
    max_demo_set_size: int = defaults.MAX_DEMO_SET_SIZE.default
    max_demo_sets: int = defaults.MAX_DEMO_SETS.default
    min_bootstrap_demos: int = defaults.MIN_BOOTSTRAP_DEMOS.default
    #: Declared stages (`modules[].stages[]`), in order; () when none are declared.
    stages: tuple[StageSpec, ...] = ()


@dataclass
class CandidateRecord:
    """A candidate instruction; index 0 is the baseline (the task app's own instruction)."""

    index: int
    instruction: str
    tip: str
    mean_score: float | None = None
    seeds_scored: int = 0
    failures: int = 0
    round: int = 0
    fully_evaluated: bool = False
    policy_tokens: int = 0
    cost_usd: float = 0.0
    excluded_reason: str = ""
    #: Its demo set: "" without demos (instruction_only), "d0" the empty set, "d1"...
    demo_set: str = ""
    #: The bootstrap seeds its demos come from, in order.
    demo_seeds: list[int] = field(default_factory=list)
    #: Stage key -> instruction, for a multi-stage task app ({} when single-stage).
    stage_instructions: dict[str, str] = field(default_factory=dict)


@dataclass
class JobRecord:
    """A job as stored: its spec, state and results so far."""

    job_id: str
    owner: str
    spec: JobSpec
    status: JobStatus
    created_at: datetime
    request_id: str = ""
    phase: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    best_score: float | None = None
    best_instruction: str = ""
    baseline_score: float | None = None
    baseline_instruction: str = ""
    rollouts_completed: int = 0
    rollouts_failed: int = 0
    policy_tokens: int = 0
    proposer_tokens: int = 0
    proposer_cost_usd: float = 0.0
    cost_usd: float = 0.0
    error: str = ""
    termination_reason: str = ""
    baseline_test_score: float | None = None
    best_test_score: float | None = None
    failures_by_cause: dict[str, int] = field(default_factory=dict)
    candidates: list[CandidateRecord] = field(default_factory=list)
    #: (rollouts, best score, candidate) each time the best changed.
    history: list[tuple[int, float, int]] = field(default_factory=list)
    resumes: int = 0
    #: The proposer's summary of the bootstrap data, written once per job (first round).
    dataset_summary: str = ""


def rollout_id(job_id: str, phase: str, candidate: int, seed: int) -> str:
    """The id of the rollout measuring (phase, candidate, seed): the same after a resume, so
    a repeated rollout is recognisable, and unique within the job."""
    return f"{job_id}_{phase[0]}{candidate:02d}s{seed}"


@dataclass(frozen=True)
class RolloutResult:
    """One finished rollout: a reward, or a failure with its cause (never a silent 0)."""

    rollout_id: str
    candidate_index: int
    seed: int
    phase: str
    reward: float | None
    failure_cause: str = ""
    failure_detail: str = ""
    tokens: int = 0
    trace: dict[str, Any] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def key(self) -> tuple[str, int, int]:
        """What the rollout measured: (phase, candidate, seed); unique within a job."""
        return (self.phase, self.candidate_index, self.seed)

    @property
    def ok(self) -> bool:
        return self.reward is not None


@dataclass(frozen=True)
class JobEvent:
    """Something that happened in a job, numbered from 1 without gaps."""

    seq: int
    type: str
    message: str
    data: dict[str, Any]
    created_at: datetime
    terminal: bool = False


class TenantStatus(enum.StrEnum):
    """Whether a tenant's keys are accepted."""

    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True)
class Tenant:
    """Who owns jobs and environment keys; `tenant_id` is the `owner` of its jobs."""

    tenant_id: str
    name: str
    status: TenantStatus
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyRecord:
    """A stored API key: the secret itself is never stored, only its peppered HMAC."""

    key_id: str
    tenant_id: str
    name: str
    prefix: str
    secret_hash: str = field(repr=False)
    created_at: datetime
    revoked_at: datetime | None = None
