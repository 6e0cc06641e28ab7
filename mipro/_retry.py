"""The retry policy shared by every outbound call of the stack.

A `RetryPolicy` says how many attempts a call gets and how long to wait between them
(exponential backoff with jitter, a server's `Retry-After` honoured up to a cap, and a
bound on the total time). Whether an error is worth retrying is decided by the caller, which
knows its protocol: the task-app client, the interceptor's and the proposer's provider calls
(`mipro._providers.provider_retry_decision`) and the orchestrator's proposer client.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


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


@dataclass(frozen=True)
class Retry:
    """A failed attempt is worth retrying, after `after` seconds if the server said so."""

    after: float | None = None


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    classify: Callable[[BaseException], Retry | None],
    *,
    rng: random.Random | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """`await call()`, retried per `policy` while `classify` says the error is retryable.

    The last error is raised when attempts or `policy.max_elapsed` run out.
    """
    rng = rng or random.Random()
    started = time.monotonic()
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return await call()
        except Exception as error:
            decision = classify(error)
            if decision is None or attempt == policy.max_attempts:
                raise
            delay = policy.backoff(attempt, rng, decision.after)
            if time.monotonic() - started + delay > policy.max_elapsed:
                raise
            if on_retry is not None:
                on_retry(attempt, error, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
