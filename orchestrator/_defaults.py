"""The job-defaults table: every optional job setting's default and allowed range, once.

Validation (`_validation.py`) fills defaults and checks ranges from here, `JobSpec` takes its
defaults from here, and the README's "Job settings" table lists the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

N = TypeVar("N", int, float)


@dataclass(frozen=True)
class Knob(Generic[N]):
    """A numeric setting: its default and its allowed range."""

    default: N
    low: N
    high: N
    #: Whether `low` itself is allowed; False for "must be positive" settings.
    low_inclusive: bool = True

    def allows(self, value: float) -> bool:
        above = value >= self.low if self.low_inclusive else value > self.low
        return above and value <= self.high

    def describe(self) -> str:
        bound = "[" if self.low_inclusive else "("
        return f"in {bound}{self.low:g}, {self.high:g}]"


#: Candidates besides the baseline.
NUM_CANDIDATES = Knob(6, 1, 64)
#: Rollouts in flight for one job.
MAX_CONCURRENT = Knob(8, 1, 256)
#: Seeds tip choice, proposal sampling and the search.
SEED = Knob(0, 0, 2**31 - 1)
#: A rollout taking longer is cut and recorded as a `timeout` failure.
ROLLOUT_TIMEOUT_SECONDS = Knob(120.0, 0.0, 3600.0, low_inclusive=False)
#: Proposal rounds; the default is 2, or 1 when there is a single candidate.
NUM_ITERATIONS = Knob(2, 1, 16)
#: Validation seeds new candidates are screened on between rounds (at most the set's size).
MINIBATCH_SIZE = Knob(10, 1, 10_000)
#: The policy model's sampling temperature, when the job forces one.
POLICY_TEMPERATURE = Knob(0.0, 0.0, 2.0)
#: The policy model's token cap per call, when the job forces one.
POLICY_MAX_COMPLETION_TOKENS = Knob(256, 1, 131_072)
#: The proposer model's sampling temperature.
PROPOSER_TEMPERATURE = Knob(0.7, 0.0, 2.0)
#: The proposer model's token cap per proposal call.
PROPOSER_MAX_TOKENS = Knob(512, 16, 32_768)
#: Budgets (no default: unlimited unless set).
MAX_ROLLOUTS = Knob(0, 1, 10**7)
MAX_TIME_SECONDS = Knob(0.0, 0.0, 7 * 86_400.0, low_inclusive=False)
MAX_COST_USD = Knob(0.0, 0.0, 1e6, low_inclusive=False)
MAX_TOKENS = Knob(0, 1, 2**31 - 1)

#: Seeds in one list (bootstrap, validation or test), at most.
MAX_SEEDS = 10_000
#: The proposer mode when none is given, and the modes allowed.
PROPOSER_MODE = "instruction_only"
PROPOSER_MODES = ("instruction_only", "demos_only", "instruction_and_demos")
#: The modes that bootstrap few-shot demos, and those that propose instructions.
DEMO_MODES = ("demos_only", "instruction_and_demos")
INSTRUCTION_MODES = ("instruction_only", "instruction_and_demos")

# Few-shot demos (Synth's names, `mipro.*`); used by the modes in DEMO_MODES.
#: A bootstrap rollout's calls become demos when its reward is at least this.
FEW_SHOT_SCORE_THRESHOLD = Knob(0.8, 0.0, 1.0)
#: Demos in one demo set (per stage), at most.
MAX_DEMO_SET_SIZE = Knob(4, 1, 16)
#: Demo sets besides the empty one, at most.
MAX_DEMO_SETS = Knob(4, 1, 16)
#: Qualified bootstrap demos a demo mode needs; fewer fails the job (0: no minimum).
MIN_BOOTSTRAP_DEMOS = Knob(0, 0, 10_000)
#: Candidates of a job, the baseline and the (instruction, demo set) combinations included.
MAX_TOTAL_CANDIDATES = 64
#: Per stage (`modules[].stages[]`): 0 keeps the stage's own instruction.
MAX_INSTRUCTION_SLOTS = Knob(1, 0, 64)
#: Per stage: demos in its demo sets, at most (default: `max_demo_set_size`; 0: none).
MAX_DEMO_SLOTS = Knob(4, 0, 16)
#: Stages of one job, at most.
MAX_STAGES = 16
