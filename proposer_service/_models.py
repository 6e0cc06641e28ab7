"""The proposer's domain types: what a proposal request holds and what it returns.

They mirror `mipro.v1.proposer` messages without depending on them, so the core runs without
gRPC; `_convert.py` translates between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The only proposal mode: instructions alone, no few-shot demos.
INSTRUCTION_ONLY = "instruction_only"
#: The completion token cap of one call when the request gives none (0).
DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class ProposerModel:
    """The proposer model and its sampling settings."""

    provider: str
    model: str
    temperature: float = 0.7
    #: Completion token cap of one call; 0 means `DEFAULT_MAX_TOKENS`.
    max_tokens: int = DEFAULT_MAX_TOKENS


@dataclass(frozen=True)
class ScoredExample:
    """One baseline trace: the input the policy saw, its answer and the reward."""

    input: str
    output: str
    reward: float


@dataclass(frozen=True)
class ScoredInstruction:
    """An instruction tried earlier in the job, with its mean reward over `seeds_scored`."""

    instruction: str
    score: float
    seeds_scored: int


@dataclass(frozen=True)
class ProposeRequest:
    """A request for up to `num_candidates` distinct candidate instructions."""

    model: ProposerModel
    num_candidates: int
    baseline_instruction: str = ""
    job_id: str = ""
    mode: str = INSTRUCTION_ONLY
    #: The task app's `/task_info` answer as JSON text; empty when it gave none.
    task_info_json: str = ""
    examples: tuple[ScoredExample, ...] = ()
    previous_candidates: tuple[ScoredInstruction, ...] = ()
    #: Seeds the tip choice and the model's sampling.
    seed: int = 0
    #: The job's dataset summary, written by an earlier request; shown in every call.
    dataset_summary: str = ""
    #: Write the job's dataset summary first (one model call) and use it; the result
    #: returns it so the job keeps it. Asked once per job.
    summarize_dataset: bool = False


@dataclass(frozen=True)
class Proposal:
    """One proposed instruction and the id of the tip it was written under."""

    instruction: str
    tip: str


@dataclass(frozen=True)
class TokenUsage:
    """Tokens the provider reported, summed over the calls that answered."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Model calls that returned an answer.
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ProposeResult:
    """Distinct proposals in candidate order, the tokens spent and how many were dropped."""

    proposals: tuple[Proposal, ...]
    usage: TokenUsage = field(default_factory=TokenUsage)
    #: Proposals dropped as duplicates, near-duplicates or copies of a known instruction.
    duplicates_dropped: int = 0
    #: Replies (or instructions of a reply) not used, by reason (`_rules.REJECT_*`); the
    #: duplicates are among them.
    rejected: dict[str, int] = field(default_factory=dict)
    #: The dataset summary written for this request ("" when none was asked or it failed).
    dataset_summary: str = ""
    #: Calls sent again without `response_format` because the provider refused it.
    plain_text_fallbacks: int = 0
