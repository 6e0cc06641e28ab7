"""Where open rollouts and their exchanges are kept: one interface, two implementations.

The rollout activity opens a rollout before it calls the task app and closes it when the task
app answers; in between, the interceptor admits the rollout's model calls, records each
exchange and meters its usage against the job's budgets.

- `MemoryBook` keeps them in this process (`ExchangeLedger`): the all-in-one orchestrator,
  whose interceptor is the very process that runs the job. Usage goes straight into the job's
  `Meter`.
- `StoreBook` keeps them in the job store (`JobStore.open_rollout` and friends), so any
  interceptor replica can serve any rollout: it verifies the token by its HMAC, admits the
  call against the stored opening, reads what it needs of the job (its policy, the
  candidate's instruction, the environment key) once per job and the candidate's prompt
  (per-stage instructions and demos, which the worker stores before it opens the
  candidate's first rollout) once per candidate, and meters usage in the store, where every
  worker's meter reads it back. Budgets therefore hold across replicas.

The calls of one job in flight at once are bounded per interceptor process (its semaphore is
per replica); the rollouts in flight are bounded by the worker that runs them.
"""

from __future__ import annotations

import abc
import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

from mipro._pricing import PriceTable

from ._budget import Budget, Meter
from ._candidate_prompt import CandidatePrompt
from ._exchanges import CallRefused, Exchange, ExchangeLedger, RolloutGrant, provider_failure
from ._models import JobRecord
from ._store import Admission, JobStore, JobUsage, RolloutOpening
from ._tokens import RolloutClaims

#: Jobs whose view an interceptor keeps at once (least recently used ones are dropped).
_JOB_VIEWS = 256


class RolloutBook(abc.ABC):
    """Open rollouts, their exchanges and their usage, for the worker and the interceptor."""

    #: True when usage is metered in the store (the worker's meter is brought up to its
    #: totals); False when the interceptor meters straight into the worker's `Meter`.
    shared: bool = False

    # -- the worker's side -------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self, grant: RolloutGrant) -> None:
        """Opens (or opens again, with a new nonce) the grant's rollout."""

    @abc.abstractmethod
    async def provider_error(self, rollout_id: str, nonce: str) -> str:
        """The error of the open rollout's first failed model call, or ""."""

    @abc.abstractmethod
    async def close(self, rollout_id: str, nonce: str) -> list[Exchange]:
        """Ends the opening and returns its exchanges."""

    @abc.abstractmethod
    async def refresh_meter(self, job_id: str, meter: Meter) -> None:
        """Brings `meter` up to the job's metered totals (shared books only)."""

    @abc.abstractmethod
    async def add_usage(self, job_id: str, delta: JobUsage, meter: Meter) -> None:
        """Meters `delta`, already added to `meter` by the caller; a shared book adds it to
        the store and brings `meter` up to the totals, which include other replicas'."""

    @abc.abstractmethod
    async def end_job(self, job_id: str) -> None:
        """Forgets what the job left open."""

    # -- the interceptor's side --------------------------------------------------------------

    @abc.abstractmethod
    async def admit(self, claims: RolloutClaims) -> RolloutGrant:
        """The grant for one model call of the rollout a verified token names, counting the
        call; raises `CallRefused` (unknown or finished rollout, too many calls)."""

    @abc.abstractmethod
    def calls_in_flight(self, job_id: str) -> asyncio.Semaphore:
        """The semaphore bounding the job's model calls in flight (after `admit`)."""

    @abc.abstractmethod
    async def record(self, grant: RolloutGrant, exchange: Exchange) -> bool:
        """Keeps the exchange if its opening is still open."""

    @abc.abstractmethod
    async def meter_call(self, grant: RolloutGrant, prompt_tokens: int,
                         completion_tokens: int) -> None:
        """Meters an answered call's tokens against the job's budgets."""

    @abc.abstractmethod
    async def spent(self, grant: RolloutGrant) -> str | None:
        """The job's spend budget (time, cost, tokens) that ran out, or None."""


class MemoryBook(RolloutBook):
    """The in-process book: the fast path of the all-in-one orchestrator."""

    def __init__(self, ledger: ExchangeLedger) -> None:
        self.ledger = ledger

    async def open(self, grant: RolloutGrant) -> None:
        self.ledger.open(grant)

    async def provider_error(self, rollout_id: str, nonce: str) -> str:
        return self.ledger.provider_error(rollout_id)

    async def close(self, rollout_id: str, nonce: str) -> list[Exchange]:
        return self.ledger.close(rollout_id)

    async def refresh_meter(self, job_id: str, meter: Meter) -> None:
        pass  # the interceptor metered into `meter` already

    async def add_usage(self, job_id: str, delta: JobUsage, meter: Meter) -> None:
        pass

    async def end_job(self, job_id: str) -> None:
        pass  # the ledger forgets each rollout when it is closed

    async def admit(self, claims: RolloutClaims) -> RolloutGrant:
        return self.ledger.admit(claims.rollout_id, job_id=claims.job_id,
                                 candidate=claims.candidate, nonce=claims.nonce)

    def calls_in_flight(self, job_id: str) -> asyncio.Semaphore:
        return self.ledger.calls_in_flight(job_id)

    async def record(self, grant: RolloutGrant, exchange: Exchange) -> bool:
        return self.ledger.record(grant.rollout_id, exchange)

    async def meter_call(self, grant: RolloutGrant, prompt_tokens: int,
                         completion_tokens: int) -> None:
        grant.on_usage(prompt_tokens, completion_tokens)

    async def spent(self, grant: RolloutGrant) -> str | None:
        return grant.spent()


def as_book(ledger: ExchangeLedger | RolloutBook) -> RolloutBook:
    """`ledger` as a book (an `ExchangeLedger` is kept in memory)."""
    return ledger if isinstance(ledger, RolloutBook) else MemoryBook(ledger)


@dataclass
class _JobView:
    """What an interceptor replica knows of one job: read once, kept while it is used."""

    job: JobRecord
    environment_key: str
    in_flight: asyncio.Semaphore
    #: Candidate -> its stored prompt (None: it changes nothing beyond its instruction).
    prompts: dict[int, CandidatePrompt | None] = field(default_factory=dict)

    def instruction(self, candidate: int) -> str | None | bool:
        """The candidate's instruction (None for the baseline), or False when the view does
        not know the candidate yet."""
        if candidate == 0:
            return None
        if candidate < len(self.job.candidates):
            return self.job.candidates[candidate].instruction
        return False


def copy_usage(usage: JobUsage, meter: Meter) -> None:
    """Sets `meter`'s counts to the metered totals."""
    meter.rollouts = usage.rollouts
    meter.policy_prompt_tokens = usage.policy_prompt_tokens
    meter.policy_completion_tokens = usage.policy_completion_tokens
    meter.proposer_tokens = usage.proposer_tokens
    meter.proposer_cost_usd = usage.proposer_cost_usd


class StoreBook(RolloutBook):
    """The book in the job store, shared by every worker and interceptor replica."""

    shared = True

    def __init__(self, store: JobStore, *, prices: PriceTable,
                 max_calls_per_rollout: int = 32) -> None:
        self._store = store
        self._prices = prices
        self._max_calls = max_calls_per_rollout
        self._views: OrderedDict[str, _JobView] = OrderedDict()
        #: (job id, candidate) whose prompt this process has stored.
        self._prompts_put: set[tuple[str, int]] = set()

    # -- the worker's side -------------------------------------------------------------------

    async def open(self, grant: RolloutGrant) -> None:
        key = (grant.job_id, grant.candidate_index)
        if grant.candidate_index and key not in self._prompts_put:  # before its first call
            await self._store.put_candidate_prompt(
                grant.job_id, grant.candidate_index,
                grant.prompt.to_dict() if grant.prompt is not None else None)
            self._prompts_put.add(key)
        await self._store.open_rollout(RolloutOpening(
            grant.job_id, grant.rollout_id, grant.nonce, grant.candidate_index))

    async def provider_error(self, rollout_id: str, nonce: str) -> str:
        return provider_failure(await self._store.rollout_exchanges(rollout_id, nonce))

    async def close(self, rollout_id: str, nonce: str) -> list[Exchange]:
        return await self._store.close_rollout(rollout_id, nonce)

    async def refresh_meter(self, job_id: str, meter: Meter) -> None:
        copy_usage(await self._store.get_usage(job_id), meter)

    async def add_usage(self, job_id: str, delta: JobUsage, meter: Meter) -> None:
        copy_usage(await self._store.add_usage(job_id, delta), meter)

    async def end_job(self, job_id: str) -> None:
        await self._store.drop_open_rollouts(job_id)
        self._views.pop(job_id, None)
        self._prompts_put = {k for k in self._prompts_put if k[0] != job_id}

    # -- the interceptor's side --------------------------------------------------------------

    async def admit(self, claims: RolloutClaims) -> RolloutGrant:
        opening = RolloutOpening(claims.job_id, claims.rollout_id, claims.nonce,
                                 claims.candidate)
        admission = await self._store.admit_call(opening, self._max_calls)
        if admission is Admission.UNKNOWN:
            raise CallRefused(404, "unknown or finished rollout", "not_found_error")
        if admission is Admission.OVER_LIMIT:
            raise CallRefused(429, f"a rollout may make at most {self._max_calls} model calls",
                              "rate_limit_error")
        view = await self._view(claims.job_id, claims.candidate)
        instruction = view.instruction(claims.candidate)
        if instruction is False:  # an opening for a candidate the job does not have
            raise CallRefused(404, "unknown or finished rollout", "not_found_error")
        spec = view.job.spec
        return RolloutGrant(
            job_id=claims.job_id, rollout_id=claims.rollout_id, nonce=claims.nonce,
            candidate_index=claims.candidate,
            instruction=instruction if isinstance(instruction, str) else None,
            policy=spec.policy, environment_key=view.environment_key,
            max_concurrent=spec.max_concurrent,
            prompt=await self._prompt(view, claims.job_id, claims.candidate))

    async def _prompt(self, view: _JobView, job_id: str,
                      candidate: int) -> CandidatePrompt | None:
        """The candidate's stored prompt, read once per candidate (the baseline has none)."""
        if candidate == 0:
            return None
        if candidate in view.prompts:
            return view.prompts[candidate]
        stored, data = await self._store.get_candidate_prompt(job_id, candidate)
        prompt = CandidatePrompt.from_dict(data) if data is not None else None
        if stored:
            view.prompts[candidate] = prompt
        return prompt

    async def _view(self, job_id: str, candidate: int) -> _JobView:
        view = self._views.get(job_id)
        if view is not None and view.instruction(candidate) is not False:
            self._views.move_to_end(job_id)
            return view
        job = await self._store.get_job(job_id)
        if job is None:
            raise CallRefused(404, "unknown or finished rollout", "not_found_error")
        if view is not None:  # a candidate proposed since: the rest stays as it was
            view.job = job
            return view
        key = await self._store.get_env_key(job.owner, job.spec.env_key_name) or ""
        view = self._views[job_id] = _JobView(
            job, key, asyncio.Semaphore(max(1, job.spec.max_concurrent)))
        while len(self._views) > _JOB_VIEWS:
            self._views.popitem(last=False)
        return view

    def calls_in_flight(self, job_id: str) -> asyncio.Semaphore:
        view = self._views.get(job_id)
        return view.in_flight if view is not None else asyncio.Semaphore(1)

    async def record(self, grant: RolloutGrant, exchange: Exchange) -> bool:
        return await self._store.record_exchange(grant.rollout_id, grant.nonce, exchange)

    async def meter_call(self, grant: RolloutGrant, prompt_tokens: int,
                         completion_tokens: int) -> None:
        if prompt_tokens or completion_tokens:
            await self._store.add_usage(grant.job_id, JobUsage(
                policy_prompt_tokens=prompt_tokens, policy_completion_tokens=completion_tokens))

    async def spent(self, grant: RolloutGrant) -> str | None:
        view = self._views.get(grant.job_id)
        if view is None:
            return None
        job = view.job
        meter = Meter(Budget.of(job.spec), started_at=job.started_at or job.created_at,
                      prices=self._prices, policy_model=job.spec.policy.model,
                      proposer_model=job.spec.proposer.model)
        copy_usage(await self._store.get_usage(grant.job_id), meter)
        return meter.spent()

