import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_VIEW_UNSPECIFIED: _ClassVar[JobView]
    JOB_VIEW_BASIC: _ClassVar[JobView]
    JOB_VIEW_FULL: _ClassVar[JobView]
JOB_VIEW_UNSPECIFIED: JobView
JOB_VIEW_BASIC: JobView
JOB_VIEW_FULL: JobView

class CreateJobRequest(_message.Message):
    __slots__ = ("policy_optimization", "request_id", "algorithm", "config_body", "overrides", "metadata", "auto_start")
    POLICY_OPTIMIZATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_BODY_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    AUTO_START_FIELD_NUMBER: _ClassVar[int]
    policy_optimization: PolicyOptimization
    request_id: str
    algorithm: str
    config_body: _struct_pb2.Struct
    overrides: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    auto_start: bool
    def __init__(self, policy_optimization: _Optional[_Union[PolicyOptimization, _Mapping]] = ..., request_id: _Optional[str] = ..., algorithm: _Optional[str] = ..., config_body: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., overrides: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., auto_start: _Optional[bool] = ...) -> None: ...

class CreateJobResponse(_message.Message):
    __slots__ = ("job_id", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class PolicyOptimization(_message.Message):
    __slots__ = ("algorithm", "task_app_url", "policy", "mipro", "env_key_name")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    TASK_APP_URL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MIPRO_FIELD_NUMBER: _ClassVar[int]
    ENV_KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    task_app_url: str
    policy: PolicyModel
    mipro: MiproConfig
    env_key_name: str
    def __init__(self, algorithm: _Optional[str] = ..., task_app_url: _Optional[str] = ..., policy: _Optional[_Union[PolicyModel, _Mapping]] = ..., mipro: _Optional[_Union[MiproConfig, _Mapping]] = ..., env_key_name: _Optional[str] = ...) -> None: ...

class PolicyModel(_message.Message):
    __slots__ = ("model", "provider", "temperature", "max_completion_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    temperature: float
    max_completion_tokens: int
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., temperature: _Optional[float] = ..., max_completion_tokens: _Optional[int] = ...) -> None: ...

class MiproConfig(_message.Message):
    __slots__ = ("mode", "bootstrap_train_seeds", "val_seeds", "proposer", "num_candidates", "max_concurrent", "test_seeds", "seed", "env_name", "env_config", "rollout_timeout_seconds", "termination_config", "num_iterations", "minibatch_size", "few_shot_score_threshold", "max_demo_set_size", "max_demo_sets", "min_bootstrap_demos", "modules")
    MODE_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_TRAIN_SEEDS_FIELD_NUMBER: _ClassVar[int]
    VAL_SEEDS_FIELD_NUMBER: _ClassVar[int]
    PROPOSER_FIELD_NUMBER: _ClassVar[int]
    NUM_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    TEST_SEEDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ENV_NAME_FIELD_NUMBER: _ClassVar[int]
    ENV_CONFIG_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_CONFIG_FIELD_NUMBER: _ClassVar[int]
    NUM_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MINIBATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    FEW_SHOT_SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_DEMO_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_DEMO_SETS_FIELD_NUMBER: _ClassVar[int]
    MIN_BOOTSTRAP_DEMOS_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    mode: str
    bootstrap_train_seeds: _containers.RepeatedScalarFieldContainer[int]
    val_seeds: _containers.RepeatedScalarFieldContainer[int]
    proposer: ProposerConfig
    num_candidates: int
    max_concurrent: int
    test_seeds: _containers.RepeatedScalarFieldContainer[int]
    seed: int
    env_name: str
    env_config: _struct_pb2.Struct
    rollout_timeout_seconds: float
    termination_config: TerminationConfig
    num_iterations: int
    minibatch_size: int
    few_shot_score_threshold: float
    max_demo_set_size: int
    max_demo_sets: int
    min_bootstrap_demos: int
    modules: _containers.RepeatedCompositeFieldContainer[MiproModule]
    def __init__(self, mode: _Optional[str] = ..., bootstrap_train_seeds: _Optional[_Iterable[int]] = ..., val_seeds: _Optional[_Iterable[int]] = ..., proposer: _Optional[_Union[ProposerConfig, _Mapping]] = ..., num_candidates: _Optional[int] = ..., max_concurrent: _Optional[int] = ..., test_seeds: _Optional[_Iterable[int]] = ..., seed: _Optional[int] = ..., env_name: _Optional[str] = ..., env_config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., rollout_timeout_seconds: _Optional[float] = ..., termination_config: _Optional[_Union[TerminationConfig, _Mapping]] = ..., num_iterations: _Optional[int] = ..., minibatch_size: _Optional[int] = ..., few_shot_score_threshold: _Optional[float] = ..., max_demo_set_size: _Optional[int] = ..., max_demo_sets: _Optional[int] = ..., min_bootstrap_demos: _Optional[int] = ..., modules: _Optional[_Iterable[_Union[MiproModule, _Mapping]]] = ...) -> None: ...

class MiproModule(_message.Message):
    __slots__ = ("module_id", "stages", "description")
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    module_id: str
    stages: _containers.RepeatedCompositeFieldContainer[MiproStage]
    description: str
    def __init__(self, module_id: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[MiproStage, _Mapping]]] = ..., description: _Optional[str] = ...) -> None: ...

class MiproStage(_message.Message):
    __slots__ = ("stage_id", "max_instruction_slots", "max_demo_slots", "description")
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTRUCTION_SLOTS_FIELD_NUMBER: _ClassVar[int]
    MAX_DEMO_SLOTS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    stage_id: str
    max_instruction_slots: int
    max_demo_slots: int
    description: str
    def __init__(self, stage_id: _Optional[str] = ..., max_instruction_slots: _Optional[int] = ..., max_demo_slots: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...

class ProposerConfig(_message.Message):
    __slots__ = ("mode", "model", "provider", "temperature", "max_tokens")
    MODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    mode: str
    model: str
    provider: str
    temperature: float
    max_tokens: int
    def __init__(self, mode: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class TerminationConfig(_message.Message):
    __slots__ = ("max_rollouts", "max_time_seconds", "max_cost_usd", "max_tokens")
    MAX_ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    max_rollouts: int
    max_time_seconds: float
    max_cost_usd: float
    max_tokens: int
    def __init__(self, max_rollouts: _Optional[int] = ..., max_time_seconds: _Optional[float] = ..., max_cost_usd: _Optional[float] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "view")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    view: JobView
    def __init__(self, job_id: _Optional[str] = ..., view: _Optional[_Union[JobView, str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "status", "phase", "policy_optimization", "created_at", "started_at", "finished_at", "best_score", "best_instruction", "baseline_score", "baseline_instruction", "rollouts_completed", "rollouts_failed", "policy_tokens", "proposer_tokens", "cost_usd", "candidates", "error", "termination_reason", "baseline_test_score", "best_test_score", "failures_by_cause", "history", "resumes", "best_prompt", "iteration", "candidate_count")
    class FailuresByCauseEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    POLICY_OPTIMIZATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    BEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    BEST_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    BASELINE_SCORE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    POLICY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROPOSER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    BASELINE_TEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    BEST_TEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    FAILURES_BY_CAUSE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    RESUMES_FIELD_NUMBER: _ClassVar[int]
    BEST_PROMPT_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    phase: str
    policy_optimization: PolicyOptimization
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    best_score: float
    best_instruction: str
    baseline_score: float
    baseline_instruction: str
    rollouts_completed: int
    rollouts_failed: int
    policy_tokens: int
    proposer_tokens: int
    cost_usd: float
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    error: str
    termination_reason: str
    baseline_test_score: float
    best_test_score: float
    failures_by_cause: _containers.ScalarMap[str, int]
    history: _containers.RepeatedCompositeFieldContainer[HistoryPoint]
    resumes: int
    best_prompt: str
    iteration: int
    candidate_count: int
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[str] = ..., phase: _Optional[str] = ..., policy_optimization: _Optional[_Union[PolicyOptimization, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., best_score: _Optional[float] = ..., best_instruction: _Optional[str] = ..., baseline_score: _Optional[float] = ..., baseline_instruction: _Optional[str] = ..., rollouts_completed: _Optional[int] = ..., rollouts_failed: _Optional[int] = ..., policy_tokens: _Optional[int] = ..., proposer_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., error: _Optional[str] = ..., termination_reason: _Optional[str] = ..., baseline_test_score: _Optional[float] = ..., best_test_score: _Optional[float] = ..., failures_by_cause: _Optional[_Mapping[str, int]] = ..., history: _Optional[_Iterable[_Union[HistoryPoint, _Mapping]]] = ..., resumes: _Optional[int] = ..., best_prompt: _Optional[str] = ..., iteration: _Optional[int] = ..., candidate_count: _Optional[int] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("index", "instruction", "tip", "mean_score", "seeds_scored", "failures", "round", "fully_evaluated", "policy_tokens", "cost_usd", "excluded_reason", "demo_set_id", "demo_seeds", "stage_prompts")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    TIP_FIELD_NUMBER: _ClassVar[int]
    MEAN_SCORE_FIELD_NUMBER: _ClassVar[int]
    SEEDS_SCORED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    FULLY_EVALUATED_FIELD_NUMBER: _ClassVar[int]
    POLICY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_REASON_FIELD_NUMBER: _ClassVar[int]
    DEMO_SET_ID_FIELD_NUMBER: _ClassVar[int]
    DEMO_SEEDS_FIELD_NUMBER: _ClassVar[int]
    STAGE_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    instruction: str
    tip: str
    mean_score: float
    seeds_scored: int
    failures: int
    round: int
    fully_evaluated: bool
    policy_tokens: int
    cost_usd: float
    excluded_reason: str
    demo_set_id: str
    demo_seeds: _containers.RepeatedScalarFieldContainer[int]
    stage_prompts: _containers.RepeatedCompositeFieldContainer[StagePrompt]
    def __init__(self, index: _Optional[int] = ..., instruction: _Optional[str] = ..., tip: _Optional[str] = ..., mean_score: _Optional[float] = ..., seeds_scored: _Optional[int] = ..., failures: _Optional[int] = ..., round: _Optional[int] = ..., fully_evaluated: _Optional[bool] = ..., policy_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., excluded_reason: _Optional[str] = ..., demo_set_id: _Optional[str] = ..., demo_seeds: _Optional[_Iterable[int]] = ..., stage_prompts: _Optional[_Iterable[_Union[StagePrompt, _Mapping]]] = ...) -> None: ...

class StagePrompt(_message.Message):
    __slots__ = ("stage_id", "instruction")
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    stage_id: str
    instruction: str
    def __init__(self, stage_id: _Optional[str] = ..., instruction: _Optional[str] = ...) -> None: ...

class HistoryPoint(_message.Message):
    __slots__ = ("rollouts", "best_score", "candidate")
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    BEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    rollouts: int
    best_score: float
    candidate: int
    def __init__(self, rollouts: _Optional[int] = ..., best_score: _Optional[float] = ..., candidate: _Optional[int] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("status", "limit", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: str
    limit: int
    page_token: str
    def __init__(self, status: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListJobEventsRequest(_message.Message):
    __slots__ = ("job_id", "since_seq", "limit")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    since_seq: int
    limit: int
    def __init__(self, job_id: _Optional[str] = ..., since_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobEventsResponse(_message.Message):
    __slots__ = ("events", "next_seq")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    next_seq: int
    def __init__(self, events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ..., next_seq: _Optional[int] = ...) -> None: ...

class StreamJobEventsRequest(_message.Message):
    __slots__ = ("job_id", "since_seq")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    since_seq: int
    def __init__(self, job_id: _Optional[str] = ..., since_seq: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("seq", "type", "message", "data", "created_at", "terminal", "synth_type")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    SYNTH_TYPE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    type: str
    message: str
    data: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    terminal: bool
    synth_type: str
    def __init__(self, seq: _Optional[int] = ..., type: _Optional[str] = ..., message: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., terminal: _Optional[bool] = ..., synth_type: _Optional[str] = ...) -> None: ...

class CreateEnvironmentKeyRequest(_message.Message):
    __slots__ = ("name", "value", "ciphertext_b64")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_B64_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    ciphertext_b64: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., ciphertext_b64: _Optional[str] = ...) -> None: ...

class CreateEnvironmentKeyResponse(_message.Message):
    __slots__ = ("name", "fingerprint", "updated_at", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    fingerprint: str
    updated_at: _timestamp_pb2.Timestamp
    id: str
    def __init__(self, name: _Optional[str] = ..., fingerprint: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class GetPublicKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPublicKeyResponse(_message.Message):
    __slots__ = ("public_key", "alg")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ALG_FIELD_NUMBER: _ClassVar[int]
    public_key: str
    alg: str
    def __init__(self, public_key: _Optional[str] = ..., alg: _Optional[str] = ...) -> None: ...

class ListSynthJobEventsRequest(_message.Message):
    __slots__ = ("job_id", "since_seq", "limit")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    since_seq: int
    limit: int
    def __init__(self, job_id: _Optional[str] = ..., since_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListSynthJobEventsResponse(_message.Message):
    __slots__ = ("events", "next_seq")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    next_seq: int
    def __init__(self, events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ..., next_seq: _Optional[int] = ...) -> None: ...

class GetJobMetricsRequest(_message.Message):
    __slots__ = ("job_id", "limit")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    limit: int
    def __init__(self, job_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class MetricPoint(_message.Message):
    __slots__ = ("name", "step", "value", "candidate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    step: int
    value: float
    candidate: int
    def __init__(self, name: _Optional[str] = ..., step: _Optional[int] = ..., value: _Optional[float] = ..., candidate: _Optional[int] = ...) -> None: ...

class GetJobMetricsResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[MetricPoint]
    def __init__(self, points: _Optional[_Iterable[_Union[MetricPoint, _Mapping]]] = ...) -> None: ...

class StreamJobEventsSseRequest(_message.Message):
    __slots__ = ("job_id", "since_seq")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    since_seq: int
    def __init__(self, job_id: _Optional[str] = ..., since_seq: _Optional[int] = ...) -> None: ...

class PauseJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListCandidatesRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCandidatesResponse(_message.Message):
    __slots__ = ("candidates", "next_page_token", "total_size")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    next_page_token: str
    total_size: int
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class CreateOfflineJobRequest(_message.Message):
    __slots__ = ("technique", "kind", "system", "config_mode", "config", "metadata", "auto_start", "prompt_opt_version", "prompt_opt_fallback_policy", "container_worker_token")
    TECHNIQUE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_MODE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    AUTO_START_FIELD_NUMBER: _ClassVar[int]
    PROMPT_OPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_OPT_FALLBACK_POLICY_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_WORKER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    technique: str
    kind: str
    system: _struct_pb2.Struct
    config_mode: str
    config: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    auto_start: bool
    prompt_opt_version: str
    prompt_opt_fallback_policy: str
    container_worker_token: str
    def __init__(self, technique: _Optional[str] = ..., kind: _Optional[str] = ..., system: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., config_mode: _Optional[str] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., auto_start: _Optional[bool] = ..., prompt_opt_version: _Optional[str] = ..., prompt_opt_fallback_policy: _Optional[str] = ..., container_worker_token: _Optional[str] = ...) -> None: ...

class GetOfflineJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class UpdateOfflineJobStateRequest(_message.Message):
    __slots__ = ("job_id", "state")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class OfflineJob(_message.Message):
    __slots__ = ("job_id", "kind", "technique", "status", "state", "best_reward", "best_candidate", "best_prompt", "best_score", "baseline_reward", "phase", "candidate_count", "rollouts_completed", "rollouts_failed", "iteration", "error", "termination_reason", "created_at", "finished_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TECHNIQUE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BEST_REWARD_FIELD_NUMBER: _ClassVar[int]
    BEST_CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    BEST_PROMPT_FIELD_NUMBER: _ClassVar[int]
    BEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_REWARD_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    kind: str
    technique: str
    status: str
    state: str
    best_reward: float
    best_candidate: str
    best_prompt: str
    best_score: float
    baseline_reward: float
    phase: str
    candidate_count: int
    rollouts_completed: int
    rollouts_failed: int
    iteration: int
    error: str
    termination_reason: str
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., kind: _Optional[str] = ..., technique: _Optional[str] = ..., status: _Optional[str] = ..., state: _Optional[str] = ..., best_reward: _Optional[float] = ..., best_candidate: _Optional[str] = ..., best_prompt: _Optional[str] = ..., best_score: _Optional[float] = ..., baseline_reward: _Optional[float] = ..., phase: _Optional[str] = ..., candidate_count: _Optional[int] = ..., rollouts_completed: _Optional[int] = ..., rollouts_failed: _Optional[int] = ..., iteration: _Optional[int] = ..., error: _Optional[str] = ..., termination_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListOfflineCandidatesRequest(_message.Message):
    __slots__ = ("job_id", "limit", "cursor", "status", "algorithm", "mode", "sort", "include")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    limit: int
    cursor: str
    status: str
    algorithm: str
    mode: str
    sort: str
    include: str
    def __init__(self, job_id: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., status: _Optional[str] = ..., algorithm: _Optional[str] = ..., mode: _Optional[str] = ..., sort: _Optional[str] = ..., include: _Optional[str] = ...) -> None: ...

class OfflineCandidate(_message.Message):
    __slots__ = ("candidate_id", "index", "candidate_content", "prompt_text", "status", "reward", "score", "seeds_scored", "failures", "round", "tip", "optimization_mode", "excluded_reason")
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_CONTENT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEXT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SEEDS_SCORED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TIP_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZATION_MODE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_REASON_FIELD_NUMBER: _ClassVar[int]
    candidate_id: str
    index: int
    candidate_content: str
    prompt_text: str
    status: str
    reward: float
    score: float
    seeds_scored: int
    failures: int
    round: int
    tip: str
    optimization_mode: str
    excluded_reason: str
    def __init__(self, candidate_id: _Optional[str] = ..., index: _Optional[int] = ..., candidate_content: _Optional[str] = ..., prompt_text: _Optional[str] = ..., status: _Optional[str] = ..., reward: _Optional[float] = ..., score: _Optional[float] = ..., seeds_scored: _Optional[int] = ..., failures: _Optional[int] = ..., round: _Optional[int] = ..., tip: _Optional[str] = ..., optimization_mode: _Optional[str] = ..., excluded_reason: _Optional[str] = ...) -> None: ...

class ListOfflineCandidatesResponse(_message.Message):
    __slots__ = ("items", "next_cursor", "job_id", "algorithm", "mode")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[OfflineCandidate]
    next_cursor: str
    job_id: str
    algorithm: str
    mode: str
    def __init__(self, items: _Optional[_Iterable[_Union[OfflineCandidate, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., job_id: _Optional[str] = ..., algorithm: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class ListSeedEvalsRequest(_message.Message):
    __slots__ = ("job_id", "limit", "cursor", "split", "seed", "success", "candidate_id", "sort", "include")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    limit: int
    cursor: str
    split: str
    seed: int
    success: bool
    candidate_id: str
    sort: str
    include: str
    def __init__(self, job_id: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., split: _Optional[str] = ..., seed: _Optional[int] = ..., success: _Optional[bool] = ..., candidate_id: _Optional[str] = ..., sort: _Optional[str] = ..., include: _Optional[str] = ...) -> None: ...

class SeedEval(_message.Message):
    __slots__ = ("rollout_id", "candidate_id", "seed", "split", "success", "reward", "failure_cause", "candidate_index")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CAUSE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_INDEX_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    candidate_id: str
    seed: int
    split: str
    success: bool
    reward: float
    failure_cause: str
    candidate_index: int
    def __init__(self, rollout_id: _Optional[str] = ..., candidate_id: _Optional[str] = ..., seed: _Optional[int] = ..., split: _Optional[str] = ..., success: _Optional[bool] = ..., reward: _Optional[float] = ..., failure_cause: _Optional[str] = ..., candidate_index: _Optional[int] = ...) -> None: ...

class ListSeedEvalsResponse(_message.Message):
    __slots__ = ("items", "next_cursor", "job_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SeedEval]
    next_cursor: str
    job_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[SeedEval, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class ListOfflineJobsRequest(_message.Message):
    __slots__ = ("state", "kind", "limit", "cursor", "system_id", "system_name", "created_after", "created_before")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_ID_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    state: str
    kind: str
    limit: int
    cursor: str
    system_id: str
    system_name: str
    created_after: str
    created_before: str
    def __init__(self, state: _Optional[str] = ..., kind: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., system_id: _Optional[str] = ..., system_name: _Optional[str] = ..., created_after: _Optional[str] = ..., created_before: _Optional[str] = ...) -> None: ...

class ListOfflineJobsResponse(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[OfflineJob]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[OfflineJob, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...
