"""The shared retry policy: bounded attempts and time, Retry-After honoured, jittered backoff."""

from __future__ import annotations

import random

import pytest

from mipro._retry import Retry, RetryPolicy, call_with_retries, parse_retry_after


def test_backoff_grows_is_jittered_and_capped() -> None:
    policy = RetryPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=5.0)
    rng = random.Random(0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        waits = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100


def test_retry_after_wins_up_to_the_cap() -> None:
    policy = RetryPolicy(max_backoff=20.0)
    assert policy.backoff(1, random.Random(0), retry_after=3.0) == 3.0
    assert policy.backoff(1, random.Random(0), retry_after=600.0) == 20.0
    assert parse_retry_after("2.5") == 2.5 and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None


async def test_retries_only_what_classify_allows() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    policy = RetryPolicy(max_attempts=5, initial_backoff=0.001)
    assert await call_with_retries(flaky, policy, lambda e: Retry()) == "ok"
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(ConnectionError):
        await call_with_retries(flaky, policy, lambda e: None)
    assert len(calls) == 1


async def test_attempts_and_total_time_are_bounded() -> None:
    calls: list[int] = []

    async def down() -> None:
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await call_with_retries(down, RetryPolicy(max_attempts=4, initial_backoff=0.001),
                                lambda e: Retry())
    assert len(calls) == 4
    calls.clear()
    with pytest.raises(ConnectionError):
        await call_with_retries(down, RetryPolicy(max_attempts=50, initial_backoff=0.001,
                                                  max_elapsed=0.0), lambda e: Retry(0.01))
    assert len(calls) == 1
