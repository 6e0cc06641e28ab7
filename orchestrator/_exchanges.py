"""What the interceptor saw of each rollout's model calls, and the one interface it reports to.

The rollout activity `open`s a rollout before calling the task app and `close`s it when the
task app answers; in between, the interceptor serves the rollout's model calls and `record`s
each exchange. The ledger is bounded: only open rollouts have an entry, each keeps at most
`max_calls` exchanges, and a call for an unknown or closed rollout is never kept (the
interceptor refuses it before forwarding anything). It also holds, per job with an open
rollout, the semaphore that bounds the job's model calls in flight to its `max_concurrent`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._candidate_prompt import CandidatePrompt, demo_turns
from ._models import PolicySpec

_MAX_TRACE_TEXT = 2000
#: Calls of one rollout kept in its trace's `calls`.
MAX_TRACED_CALLS = 8


@dataclass(frozen=True)
class Exchange:
    """One model call made through the interceptor."""

    messages: list[dict[str, Any]]
    response: dict[str, Any] | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    #: Why the provider call failed; "" when it answered.
    error: str = ""
    #: The call's stage key (`_candidate_prompt.stage_key`), from the task app's messages.
    stage: str = ""


@dataclass(frozen=True)
class RolloutGrant:
    """What the interceptor needs to serve one rollout's model calls."""

    job_id: str
    rollout_id: str
    #: The random nonce of this opening of the rollout, carried by its token.
    nonce: str
    candidate_index: int
    #: The candidate's instruction; None passes the task app's messages through (baseline).
    instruction: str | None
    policy: PolicySpec
    environment_key: str = field(repr=False)
    #: Meters the tokens of every answered call against the job's budgets, late ones too.
    on_usage: Callable[[int, int], None] = field(repr=False, default=lambda p, c: None)
    #: The job's spend budget that ran out (tokens, cost, time), or None; checked per call.
    spent: Callable[[], str | None] = field(repr=False, default=lambda: None)
    #: The job's model calls in flight at once, at most.
    max_concurrent: int = 1
    #: The candidate's per-stage instructions and demos; None: `instruction` alone decides.
    prompt: CandidatePrompt | None = None


@dataclass
class _Entry:
    grant: RolloutGrant
    exchanges: list[Exchange] = field(default_factory=list)
    calls: int = 0


class CallRefused(Exception):
    """The interceptor must not forward this call; `status` and the message say why."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class ExchangeLedger:
    """Open rollouts and their exchanges, keyed by rollout id."""

    def __init__(self, *, max_calls_per_rollout: int = 32) -> None:
        self._open: dict[str, _Entry] = {}
        self._max_calls = max_calls_per_rollout
        #: job id -> (its calls-in-flight semaphore, its open rollouts)
        self._jobs: dict[str, tuple[asyncio.Semaphore, int]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def open(self, grant: RolloutGrant) -> None:
        previous = self._open.get(grant.rollout_id)
        if previous is None:
            semaphore, count = self._jobs.get(grant.job_id) or (
                asyncio.Semaphore(max(1, grant.max_concurrent)), 0)
            self._jobs[grant.job_id] = (semaphore, count + 1)
        self._open[grant.rollout_id] = _Entry(grant)

    def calls_in_flight(self, job_id: str) -> asyncio.Semaphore:
        """The semaphore bounding `job_id`'s model calls in flight (the job has an open
        rollout: `admit` just said so)."""
        return self._jobs[job_id][0]

    def admit(self, rollout_id: str, *, job_id: str, candidate: int,
              nonce: str) -> RolloutGrant:
        """The grant for a model call of the rollout a verified token names, counting the
        call; raises `CallRefused` for an unknown or finished rollout, a token of another
        job, candidate or opening of the rollout, or a rollout over its number of calls."""
        entry = self._open.get(rollout_id)
        if entry is None or (entry.grant.job_id, entry.grant.candidate_index,
                             entry.grant.nonce) != (job_id, candidate, nonce):
            raise CallRefused(404, "unknown or finished rollout", "not_found_error")
        if entry.calls >= self._max_calls:
            raise CallRefused(429, f"a rollout may make at most {self._max_calls} model calls",
                              "rate_limit_error")
        entry.calls += 1
        return entry.grant

    def record(self, rollout_id: str, exchange: Exchange) -> bool:
        """Keeps `exchange` if its rollout is still open; False when it is not."""
        entry = self._open.get(rollout_id)
        if entry is None:
            return False
        entry.exchanges.append(exchange)
        return True

    def provider_error(self, rollout_id: str) -> str:
        """The error of the open rollout's first failed model call, or ""."""
        entry = self._open.get(rollout_id)
        return provider_failure(entry.exchanges) if entry is not None else ""

    def close(self, rollout_id: str) -> list[Exchange]:
        """Ends the rollout's entry and returns its exchanges."""
        entry = self._open.pop(rollout_id, None)
        if entry is None:
            return []
        job_id = entry.grant.job_id
        semaphore, count = self._jobs[job_id]
        if count <= 1:
            del self._jobs[job_id]
        else:
            self._jobs[job_id] = (semaphore, count - 1)
        return entry.exchanges


# -- what a rollout's exchanges tell ---------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TRACE_TEXT else text[:_MAX_TRACE_TEXT] + "…"


def _compact(exchange: Exchange) -> dict[str, Any]:
    """One answered exchange as instruction, input and output text."""
    assert exchange.response is not None
    system = next(
        (_text(m.get("content")) for m in exchange.messages
         if m.get("role") in ("system", "developer")), "")
    user = next(
        (_text(m.get("content")) for m in reversed(exchange.messages)
         if m.get("role") == "user"), "")
    choices = exchange.response.get("choices") or [{}]
    message = (choices[0] if isinstance(choices, list) and choices else {}) or {}
    message = message.get("message") or {} if isinstance(message, dict) else {}
    calls = message.get("tool_calls") or []
    if len(calls) > 1:
        output = json.dumps([c.get("function", {}).get("arguments") for c in calls])
    elif calls:
        output = calls[0].get("function", {}).get("arguments", "")
    else:
        output = _text(message.get("content"))
    return {"instruction": _clip(system), "input": _clip(user), "output": _clip(output or ""),
            "latency_ms": round(exchange.latency_ms, 1), "tool_calls": len(calls)}


def _calls(answered: Sequence[Exchange]) -> list[dict[str, Any]]:
    """Per answered call (at most `MAX_TRACED_CALLS`): its stage, compact texts and its demo
    turns (None when it cannot be a demo), tool results read from the stage's next call."""
    out: list[dict[str, Any]] = []
    for position, exchange in enumerate(answered[:MAX_TRACED_CALLS]):
        following = next((e.messages for e in answered[position + 1:]
                          if e.stage == exchange.stage), [])
        compact = _compact(exchange)
        out.append({"stage": exchange.stage, "instruction": compact["instruction"],
                    "input": compact["input"], "output": compact["output"],
                    "turns": demo_turns(exchange.messages, exchange.response, following)})
    return out


def trace_of(exchanges: Sequence[Exchange], *,
             with_calls: bool = True) -> dict[str, Any] | None:
    """The first answered exchange as a compact trace (instruction, input, output), with
    every answered call in `calls` (stage, texts, demo turns) for demos and stages unless
    `with_calls` is False."""
    answered = [e for e in exchanges if e.response is not None]
    if not answered:
        return None
    compact = _compact(answered[0])
    return {**compact, "calls": _calls(answered)} if with_calls else compact


def provider_failure(exchanges: Sequence[Exchange]) -> str:
    """The first failed provider call's error, or "" when every call was answered."""
    return next((e.error for e in exchanges if e.error), "")
