from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProposeInstructionsRequest(_message.Message):
    __slots__ = ("job_id", "model", "mode", "num_candidates", "task_info_json", "baseline_instruction", "examples", "previous_candidates", "seed", "dataset_summary", "summarize_dataset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NUM_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TASK_INFO_JSON_FIELD_NUMBER: _ClassVar[int]
    BASELINE_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DATASET_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SUMMARIZE_DATASET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model: ProposerModel
    mode: str
    num_candidates: int
    task_info_json: str
    baseline_instruction: str
    examples: _containers.RepeatedCompositeFieldContainer[ScoredExample]
    previous_candidates: _containers.RepeatedCompositeFieldContainer[ScoredInstruction]
    seed: int
    dataset_summary: str
    summarize_dataset: bool
    def __init__(self, job_id: _Optional[str] = ..., model: _Optional[_Union[ProposerModel, _Mapping]] = ..., mode: _Optional[str] = ..., num_candidates: _Optional[int] = ..., task_info_json: _Optional[str] = ..., baseline_instruction: _Optional[str] = ..., examples: _Optional[_Iterable[_Union[ScoredExample, _Mapping]]] = ..., previous_candidates: _Optional[_Iterable[_Union[ScoredInstruction, _Mapping]]] = ..., seed: _Optional[int] = ..., dataset_summary: _Optional[str] = ..., summarize_dataset: _Optional[bool] = ...) -> None: ...

class ProposerModel(_message.Message):
    __slots__ = ("provider", "model", "temperature", "max_tokens")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    temperature: float
    max_tokens: int
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class ScoredExample(_message.Message):
    __slots__ = ("input", "output", "reward")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    input: str
    output: str
    reward: float
    def __init__(self, input: _Optional[str] = ..., output: _Optional[str] = ..., reward: _Optional[float] = ...) -> None: ...

class ScoredInstruction(_message.Message):
    __slots__ = ("instruction", "score", "seeds_scored")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SEEDS_SCORED_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    score: float
    seeds_scored: int
    def __init__(self, instruction: _Optional[str] = ..., score: _Optional[float] = ..., seeds_scored: _Optional[int] = ...) -> None: ...

class ProposeInstructionsResponse(_message.Message):
    __slots__ = ("instructions", "usage", "duplicates_dropped", "rejected", "dataset_summary", "plain_text_fallbacks")
    class RejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    DATASET_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PLAIN_TEXT_FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    instructions: _containers.RepeatedCompositeFieldContainer[ProposedInstruction]
    usage: TokenUsage
    duplicates_dropped: int
    rejected: _containers.ScalarMap[str, int]
    dataset_summary: str
    plain_text_fallbacks: int
    def __init__(self, instructions: _Optional[_Iterable[_Union[ProposedInstruction, _Mapping]]] = ..., usage: _Optional[_Union[TokenUsage, _Mapping]] = ..., duplicates_dropped: _Optional[int] = ..., rejected: _Optional[_Mapping[str, int]] = ..., dataset_summary: _Optional[str] = ..., plain_text_fallbacks: _Optional[int] = ...) -> None: ...

class ProposedInstruction(_message.Message):
    __slots__ = ("instruction", "tip")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    TIP_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    tip: str
    def __init__(self, instruction: _Optional[str] = ..., tip: _Optional[str] = ...) -> None: ...

class TokenUsage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "calls")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    calls: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., calls: _Optional[int] = ...) -> None: ...
