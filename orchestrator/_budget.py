"""A job's termination budgets and the meter that counts its spend against them.

Budgets are checked before each rollout or proposal call starts (calls in flight still land,
so a job may end slightly over a spend budget). The interceptor meters every forwarded model
call, the rollout activity every rollout it starts, and the plan every proposal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mipro._pricing import PriceTable

from ._models import JobSpec


class BudgetExhausted(Exception):
    """A termination budget ran out; the job ends with the best result so far."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Budget:
    """The limits of one job; None is unlimited."""

    max_rollouts: int | None = None
    max_time_seconds: float | None = None
    max_cost_usd: float | None = None
    max_tokens: int | None = None

    @classmethod
    def of(cls, spec: JobSpec) -> Budget:
        return cls(spec.max_rollouts, spec.max_time_seconds, spec.max_cost_usd, spec.max_tokens)


class Meter:
    """What one job has spent so far."""

    def __init__(self, budget: Budget, *, started_at: datetime, prices: PriceTable,
                 policy_model: str, proposer_model: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.budget = budget
        self._started = started_at.timestamp()
        self._prices = prices
        self._policy_model = policy_model
        self._proposer_model = proposer_model
        self._clock = clock
        self.rollouts = 0
        self.policy_prompt_tokens = 0
        self.policy_completion_tokens = 0
        self.proposer_tokens = 0
        self.proposer_cost_usd = 0.0

    # -- counting ----------------------------------------------------------------------------

    def add_policy_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.policy_prompt_tokens += prompt_tokens
        self.policy_completion_tokens += completion_tokens

    def add_proposer_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.proposer_tokens += prompt_tokens + completion_tokens
        self.proposer_cost_usd += self._prices.cost_usd(
            self._proposer_model, prompt_tokens, completion_tokens)

    # -- reading -----------------------------------------------------------------------------

    @property
    def policy_tokens(self) -> int:
        return self.policy_prompt_tokens + self.policy_completion_tokens

    @property
    def tokens(self) -> int:
        return self.policy_tokens + self.proposer_tokens

    @property
    def cost_usd(self) -> float:
        policy = self._prices.cost_usd(self._policy_model, self.policy_prompt_tokens,
                                       self.policy_completion_tokens)
        return round(policy + self.proposer_cost_usd, 6)

    def elapsed(self) -> float:
        return max(0.0, self._clock() - self._started)

    def exhausted(self) -> str | None:
        """The first budget that ran out, or None."""
        b = self.budget
        if b.max_rollouts is not None and self.rollouts >= b.max_rollouts:
            return "max_rollouts"
        if b.max_time_seconds is not None and self.elapsed() >= b.max_time_seconds:
            return "max_time_seconds"
        if b.max_cost_usd is not None and self.cost_usd >= b.max_cost_usd:
            return "max_cost_usd"
        if b.max_tokens is not None and self.tokens >= b.max_tokens:
            return "max_tokens"
        return None

    def spent(self) -> str | None:
        """The first spend budget (time, cost, tokens) that ran out, or None: what refuses a
        model call of a rollout already started (`max_rollouts` counted it when it began)."""
        reason = self.exhausted()
        return None if reason == "max_rollouts" else reason

    def check(self) -> None:
        """Raises `BudgetExhausted` when a budget ran out."""
        reason = self.exhausted()
        if reason is not None:
            raise BudgetExhausted(reason)

    def rollouts_left(self, reserve: int = 0) -> int | None:
        """Rollouts still allowed after keeping `reserve` aside; None when unlimited."""
        if self.budget.max_rollouts is None:
            return None
        return max(0, self.budget.max_rollouts - self.rollouts - reserve)


def utc_now() -> datetime:
    return datetime.now(UTC)
