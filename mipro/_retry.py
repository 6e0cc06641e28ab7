"""The retry policy shared by every outbound call of the stack.

A `RetryPolicy` says how many attempts a call gets and how long to wait between them
(exponential backoff with jitter, a server's `Retry-After` honoured up to a cap, and a
bound on the total time). It is the task-app hop's retry layer (`orchestrator/_task_app.py`);
provider calls are retried by the openai SDK and calls to the proposer service by gRPC's
service-config retry policy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failed call."""

    #: Attempts in total, the first one included. Default 3.
    max_attempts: int = 3
    #: Backoff before the second attempt, in seconds. Default 0.5.
    initial_backoff: float = 0.5
    #: Growth factor of the backoff per attempt. Default 2.
    multiplier: float = 2.0
    #: The longest single wait, in seconds, `Retry-After` included. Default 20.
    max_backoff: float = 20.0
    #: No retry starts once this many seconds have passed since the first attempt. Default 120.
    max_elapsed: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be non-negative and multiplier at least 1")

    def backoff(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_backoff)
        ceiling = min(self.initial_backoff * self.multiplier ** (attempt - 1), self.max_backoff)
        # "Equal jitter": half the backoff is fixed, so waits never collapse to nothing.
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds; None when absent or a date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
