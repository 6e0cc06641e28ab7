"""The transport-free core of the job API: create, read, list, cancel, events, env keys.

The gRPC servicers only adapt this class. It owns the running `JobRunner`s: at most
`max_running_jobs` run at once, at most `TenantLimits.max_running_jobs` of one tenant (a job's
`owner`), and the rest wait `queued`, served round-robin by tenant (`_scheduler.py`). A
running job is read from its runner's live snapshot, never from the store. `TenantLimits`
also caps what one tenant may queue, stream and ask for.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import structlog

from mipro import _metrics
from mipro._pricing import PriceTable
from mipro._retry import RetryPolicy

from ._errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from ._exchanges import ExchangeLedger
from ._models import CandidateRecord, JobEvent, JobRecord, JobSpec, JobStatus, RolloutResult
from ._paging import decode_token, encode_token, page
from ._proposer_client import ProposerClient
from ._rollout_book import RolloutBook
from ._runner import JobRunner, end_job, published_copy
from ._scheduler import FairScheduler
from ._secrets import SEALED_BOX_ALG, EnvKeyVault, SecretsError, env_key_id
from ._ssrf import AddressPolicy, AddressRefused, PinnedTarget, job_http_session
from ._store import JobStore, RolloutFilter
from ._task_app import MAX_RESPONSE_BYTES, TaskAppClient
from ._tokens import RolloutTokens
from ._validation import env_key_name

log = structlog.get_logger(__name__)

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
DEFAULT_EVENT_PAGE, MAX_EVENT_PAGE = 100, 10_000
#: `ListCandidates` (AIP-158) pages, and Synth's `limit`/`cursor` pages of candidates and
#: seed evaluations.
DEFAULT_CANDIDATE_PAGE, MAX_CANDIDATE_PAGE = 20, 100
DEFAULT_SYNTH_PAGE, MAX_SYNTH_PAGE = 100, 1000


@dataclass(frozen=True)
class TenantLimits:
    """What one tenant may hold (the `MIPRO_TENANT_*` settings)."""

    #: Jobs running at once; more wait `queued`.
    max_running_jobs: int = 2
    #: Jobs waiting `queued`; one more create is RESOURCE_EXHAUSTED.
    max_queued_jobs: int = 20
    #: Open live event streams; one more is RESOURCE_EXHAUSTED.
    max_live_streams: int = 16
    #: Seeds one job may name, all seed lists together.
    max_seeds: int = 2000
    #: `num_candidates` one job may ask for.
    max_candidates: int = 64


class RemoteHost(Protocol):
    """A host that runs jobs in other processes (the Temporal host, `_temporal_client.py`):
    the manager only starts and cancels them; what they do is read from the store."""

    async def start(self, job_id: str) -> None: ...
    async def cancel(self, job_id: str) -> None: ...
    async def pause(self, job_id: str, reason: str = "") -> None: ...
    async def resume(self, job_id: str) -> None: ...


#: Jobs not running now that `JobManager.peek` answers from memory: the queued and paused
#: ones and the latest ended ones (each holds its spec, seed lists included).
RESTING_JOBS = 256
#: How long a cancel through a remote host waits for the job to end.
REMOTE_CANCEL_WAIT_SECONDS = 30.0


def new_job_id() -> str:
    return "pl_" + secrets.token_hex(8)


class JobManager:
    """Creates jobs, runs them in the background and answers questions about them."""

    def __init__(self, store: JobStore, ledger: ExchangeLedger | RolloutBook,
                 proposer: ProposerClient,
                 *, public_base_url: str, max_running_jobs: int, prices: PriceTable,
                 task_app_retry: RetryPolicy | None = None,
                 task_app_timeout: float = 10.0, summary_flush_seconds: float = 0.25,
                 stream_poll_seconds: float = 5.0,
                 tenant_limits: TenantLimits | None = None,
                 vault: EnvKeyVault | None = None, address_policy: AddressPolicy | None = None,
                 task_app_max_response_bytes: int = MAX_RESPONSE_BYTES,
                 tokens: RolloutTokens | None = None,
                 remote: RemoteHost | None = None) -> None:
        #: Runs the jobs elsewhere when set; else they run in this process.
        self._remote = remote
        #: Signs the inference-URL tokens the interceptor verifies (the same key).
        self._tokens = tokens or RolloutTokens()
        self._store = store
        self._vault = vault
        #: Where task apps may be; each job's resolved address is pinned at create.
        self._addresses = address_policy or AddressPolicy()
        self._pins: dict[str, PinnedTarget] = {}
        self._max_response_bytes = task_app_max_response_bytes
        self._ledger = ledger
        self._flush = summary_flush_seconds
        self._task_app_timeout = task_app_timeout
        self._stream_poll = stream_poll_seconds
        self._proposer = proposer
        self._public_base_url = public_base_url
        self._prices = prices
        self._max_running = max_running_jobs
        self._limits = tenant_limits or TenantLimits()
        self._scheduler = FairScheduler(max_running_jobs, self._limits.max_running_jobs)
        _metrics.watch_jobs(queued=self._scheduler.waiting_total,
                            running=self._scheduler.running_total, slots=max_running_jobs)
        self._streams: dict[str, int] = {}
        self._retry = task_app_retry or RetryPolicy()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, JobRunner] = {}
        #: Jobs of this process that are not running now (queued, paused, or ended here), as
        #: last stored: what `peek` answers for them without the store, at most
        #: `RESTING_JOBS` of them, oldest dropped first. Written on this loop only.
        self._resting: dict[str, JobRecord] = {}
        self._event_signals: dict[str, asyncio.Event] = {}
        #: Jobs whose pause is under way (a second pause meanwhile is refused).
        self._pausing: set[str] = set()
        self._stopping = False

    def use_remote(self, remote: RemoteHost) -> None:
        """Runs jobs through `remote` from now on (set before `start`)."""
        self._remote = remote

    async def start(self) -> None:
        """Resumes every job a previous process left queued or running, oldest first."""
        if self._remote is not None:  # workflows outlive processes: start what never started
            for job in await self._store.jobs_with_status((JobStatus.QUEUED,)):
                await self._remote.start(job.job_id)
            return
        for job in await self._store.jobs_with_status((JobStatus.QUEUED, JobStatus.RUNNING)):
            log.info("resuming job", job_id=job.job_id, status=job.status.value)
            self._schedule(job)

    async def stop(self) -> None:
        """Cancels running jobs and closes outbound clients."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for run in self._live.values():
            run.interrupted = True  # leave it unfinished in the store, for the next start
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- jobs --------------------------------------------------------------------------------

    async def create(self, owner: str, spec: JobSpec, request_id: str = "") -> JobRecord:
        if await self._store.get_env_key(owner, spec.env_key_name) is None:
            raise FailedPrecondition(
                f"no {spec.env_key_name} is registered for this tenant: register it with "
                f"POST /api/v1/env-keys before creating a job")
        self._check_tenant_limits(owner, spec)
        await self._check_stored_queue(owner)
        target = await self._pin(spec.task_app_url)
        job = JobRecord(job_id=new_job_id(), owner=owner, spec=spec, status=JobStatus.QUEUED,
                        created_at=datetime.now(UTC), request_id=request_id, phase="queued")
        stored = await self._store.create_job(job)
        if stored.job_id != job.job_id:  # an idempotent retry of an earlier create
            return stored
        self._pins[job.job_id] = target
        _metrics.JOBS_CREATED.inc()
        await self._emit(job.job_id, "job.created", "job created",
                         {"job_id": job.job_id}, False)
        if self._remote is not None:
            self._pins.pop(job.job_id, None)  # the worker replica checks and pins it again
            await self._remote.start(job.job_id)
            return job
        self._schedule(job)
        return job

    def _check_tenant_limits(self, owner: str, spec: JobSpec) -> None:
        limits = self._limits
        seeds = len(spec.bootstrap_train_seeds) + len(spec.val_seeds) + len(spec.test_seeds)
        if seeds > limits.max_seeds:
            raise InvalidArgument(
                "policy_optimization.mipro", f"names {seeds} seeds in all; this server allows "
                f"at most {limits.max_seeds} per job (MIPRO_TENANT_MAX_SEEDS)")
        if spec.num_candidates > limits.max_candidates:
            raise InvalidArgument(
                "policy_optimization.mipro.num_candidates",
                f"is {spec.num_candidates}; this server allows at most {limits.max_candidates} "
                "(MIPRO_TENANT_MAX_CANDIDATES)")
        if (not self._scheduler.can_start_now(owner)
                and self._scheduler.waiting(owner) >= limits.max_queued_jobs):
            raise ResourceExhausted(
                f"this tenant already has {self._scheduler.waiting(owner)} queued and "
                f"{self._scheduler.running(owner)} running jobs, the most allowed "
                f"(MIPRO_TENANT_MAX_QUEUED_JOBS={limits.max_queued_jobs}); wait for one to "
                "finish or cancel one")

    def _schedule(self, job: JobRecord) -> None:
        """Starts the job now when a slot is free (reported `running`), else queues it."""
        # Decided and recorded without an await, so the answer is exact.
        run_now = self._scheduler.submit(job.job_id, job.owner)
        if run_now:
            job.status = JobStatus.RUNNING
        self._rest(job)  # until its runner publishes
        self._tasks[job.job_id] = asyncio.create_task(
            self._run(job, holding_slot=run_now), name=job.job_id)

    async def _run(self, job: JobRecord, *, holding_slot: bool) -> None:
        try:
            if not holding_slot:
                await self._scheduler.wait(job.job_id)
            opened = await self.open_runner(job)
            if opened is None:
                return
            run, http = opened
            try:
                self._live[job.job_id] = run
                await run.run()
            finally:
                if run.job.status.is_terminal:  # before it leaves `_live`: never unanswered
                    self._rest(run.job)
                await http.close()
        except asyncio.CancelledError:
            pass
        finally:
            self._scheduler.done(job.job_id)  # frees its slot or its place in the queue
            resting = self._resting.get(job.job_id)
            if resting is not None and not resting.status.is_terminal:
                # Left unfinished (paused, cancelled, stopped): the store says what it is
                # until the path that stopped it stores and keeps its state.
                self._resting.pop(job.job_id, None)
            self._live.pop(job.job_id, None)
            self._tasks.pop(job.job_id, None)

    async def open_runner(self, job: JobRecord
                          ) -> tuple[JobRunner, aiohttp.ClientSession] | None:
        """A runner for `job` and the HTTP session it calls the task app through (the caller
        closes it); None when the task app's address is now refused (the job was failed)."""
        target = self._pins.pop(job.job_id, None)
        if target is None:  # resumed after a restart (or on a worker replica): pinned again
            try:
                target = await self._pin(job.spec.task_app_url)
            except InvalidArgument as refused:
                await self._fail_unstarted(job, refused.description)
                return None
        env_key = await self._store.get_env_key(job.owner, job.spec.env_key_name) or ""
        http = job_http_session(target, max_connections=job.spec.max_concurrent + 2)
        task_app = TaskAppClient(job.spec.task_app_url, env_key, http=http,
                                 retry=self._retry, rng=random.Random(job.spec.seed),
                                 timeout=self._task_app_timeout,
                                 max_response_bytes=self._max_response_bytes)
        run = JobRunner(
            job, environment_key=env_key, task_app=task_app, proposer=self._proposer,
            store=self._store, ledger=self._ledger, prices=self._prices,
            public_base_url=self._public_base_url, flush_interval=self._flush,
            tokens=self._tokens,
            emit=lambda t, m, d, term: self._emit(job.job_id, t, m, d, term))
        return run, http

    async def _pin(self, url: str) -> PinnedTarget:
        """The task app's checked, resolved address; `InvalidArgument` naming the field."""
        try:
            return await self._addresses.pin(url)
        except AddressRefused as refused:
            raise InvalidArgument("policy_optimization.task_app_url", str(refused)) from None

    async def _fail_unstarted(self, job: JobRecord, error: str) -> None:
        ending = end_job(job, JobStatus.FAILED, "failed",
                         f"policy_optimization.task_app_url {error}")
        await self._save_resting(job)
        await self._emit(job.job_id, ending.type, ending.message, ending.data, True)

    async def get(self, owner: str, job_id: str) -> JobRecord:
        live = self._live.get(job_id)
        if live is not None and live.job.owner == owner:
            return live.snapshot()  # a running job: from memory, a moment ahead of the store
        job = await self._store.get_job(job_id, owner)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        return job

    def peek(self, owner: str, job_id: str) -> JobRecord | None:
        """A job of this process from memory: a running one as its runner last published it
        (at most `_runner.PUBLISH_SECONDS` behind), a queued, paused or ended one as this
        process last stored it; None when it is not here (or another tenant's): ask the
        store. It only reads, so the gRPC API calls it from its own thread (`_api_loop.py`)
        and a job that waits for a slot is answered without waiting for the busy jobs' loop."""
        live = self._live.get(job_id)
        job = live.published if live is not None else self._resting.get(job_id)
        if job is None or job.owner != owner:
            return None
        return job

    def _rest(self, job: JobRecord) -> None:
        """Keeps a copy of `job` as it is now stored, for `peek`, on the embedded host only
        (elsewhere other replicas change the stored job)."""
        if self._remote is not None:
            return
        self._resting.pop(job.job_id, None)
        self._resting[job.job_id] = published_copy(job)
        while len(self._resting) > RESTING_JOBS:
            self._resting.pop(next(iter(self._resting)))

    async def _save_resting(self, job: JobRecord) -> None:
        await self._store.save_job(job)
        self._rest(job)

    async def list_jobs(self, owner: str, *, status: str, limit: int,
                   page_token: str) -> tuple[list[JobRecord], str]:
        status_filter: JobStatus | None = None
        if status:
            try:
                status_filter = JobStatus(status)
            except ValueError:
                allowed = ", ".join(s.value for s in JobStatus)
                raise InvalidArgument(
                    "status", f"must be one of {allowed}; got {status!r}") from None
        if limit < 0 or limit > MAX_PAGE_SIZE:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        try:
            return await self._store.list_jobs(owner, status=status_filter,
                                               limit=limit or DEFAULT_PAGE_SIZE,
                                               page_token=page_token)
        except ValueError as exc:
            raise InvalidArgument("page_token", str(exc)) from None

    async def cancel(self, owner: str, job_id: str, reason: str) -> JobRecord:
        job = await self.get(owner, job_id)
        if job.status.is_terminal:
            raise FailedPrecondition(f"job {job_id} has already finished ({job.status.value})")
        await self._emit(job_id, "job.cancel_requested", "cancellation requested",
                         {"reason": reason[:500]}, False)
        if self._remote is not None:
            return await self._cancel_remote(owner, job_id)
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        job = await self.get(owner, job_id)
        if not job.status.is_terminal:  # it was still queued: no run ever started
            ending = end_job(job, JobStatus.CANCELLED, "cancelled")
            await self._save_resting(job)
            await self._emit(job_id, ending.type, ending.message, ending.data, True)
        return job

    # -- pause and resume ----------------------------------------------------------------------

    async def pause(self, owner: str, job_id: str, reason: str = "") -> JobRecord:
        """Stops a queued or running job without ending it: no new rollout starts, those in
        flight are cut (unstored, so they run again on resume), the runner ends and the job
        is stored `paused`. Returns it; when it finished first, returns it finished."""
        job = await self.get(owner, job_id)
        if job.status.is_terminal:
            raise FailedPrecondition(f"job {job_id} has already finished ({job.status.value})")
        if job.status is JobStatus.PAUSED or job_id in self._pausing:
            raise FailedPrecondition(f"job {job_id} is paused already")
        if self._remote is not None:  # the workflow pauses itself and stores `paused`
            await self._remote.pause(job_id, reason[:500])
            return await self.get(owner, job_id)
        self._pausing.add(job_id)
        try:
            return await self._pause(owner, job, reason)
        finally:
            self._pausing.discard(job_id)

    async def _pause(self, owner: str, job: JobRecord, reason: str) -> JobRecord:
        job_id = job.job_id
        run = self._live.get(job_id)
        if run is not None:
            run.interrupted = True  # left unfinished, as at shutdown: resumable from the store
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if run is not None:
            job = run.snapshot()
        else:
            job = await self._store.get_job(job_id, owner) or job
        if job.status.is_terminal:  # it ended before the pause took hold
            return job
        job.status = JobStatus.PAUSED
        await self._save_resting(job)
        await self._emit(job_id, "job.paused", "job paused",
                         {"reason": reason[:500], "phase": job.phase,
                          "rollouts_completed": job.rollouts_completed,
                          "rollouts_failed": job.rollouts_failed}, False)
        return job

    async def resume(self, owner: str, job_id: str) -> JobRecord:
        """Queues a paused job again; its runner replays what is stored, repeating nothing."""
        job = await self.get(owner, job_id)
        if job.status is not JobStatus.PAUSED:
            raise FailedPrecondition(f"job {job_id} is not paused ({job.status.value})")
        if self._remote is not None:  # its workflow waits, paused, for this signal
            await self._check_stored_queue(owner)  # it may have to queue again
            await self._remote.resume(job_id)
            return await self.get(owner, job_id)
        self._check_tenant_limits(owner, job.spec)  # it may have to queue again
        job.status = JobStatus.QUEUED
        await self._save_resting(job)
        await self._emit(job_id, "job.resume_requested", "resume requested", {}, False)
        self._schedule(job)
        return job

    # -- candidates and rollouts, paged ------------------------------------------------------

    async def list_candidates(self, owner: str, job_id: str, *, page_size: int,
                              page_token: str, default: int = DEFAULT_CANDIDATE_PAGE,
                              maximum: int = MAX_CANDIDATE_PAGE, size_field: str = "page_size",
                              token_field: str = "page_token",
                              keep: Callable[[CandidateRecord], bool] | None = None,
                              ) -> tuple[list[CandidateRecord], str, int]:
        """A page of the job's candidates by index (those `keep` accepts), the next page's
        token and the total."""
        job = await self.get(owner, job_id)
        candidates = [c for c in job.candidates if keep(c)] if keep else job.candidates
        found, token = page(candidates, scope=f"{job_id}/candidates", size=page_size,
                            token=page_token, default=default, maximum=maximum,
                            size_field=size_field, token_field=token_field)
        return found, token, len(candidates)

    async def list_rollouts(self, owner: str, job_id: str, *, limit: int, cursor: str,
                            where: RolloutFilter | None = None,
                            scope: str = "rollouts") -> tuple[list[RolloutResult], str]:
        """A page of the job's stored rollouts in finish order (those `where` keeps), and the
        next page's cursor ('' on the last); the cursor is the last row's store position."""
        await self.get(owner, job_id)
        if limit < 0 or limit > MAX_SYNTH_PAGE:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_SYNTH_PAGE}, got {limit}")
        scope = f"{job_id}/{scope}"
        size = limit or DEFAULT_SYNTH_PAGE
        rows = await self._store.list_rollouts_page(
            job_id, after=decode_token(cursor, scope, "cursor"), limit=size + 1, where=where)
        more = len(rows) > size
        rows = rows[:size]
        return [r for _, r in rows], encode_token(scope, rows[-1][0]) if more else ""


    async def _cancel_remote(self, owner: str, job_id: str) -> JobRecord:
        """Cancels the job's workflow and waits (bounded) until a worker ended the job."""
        assert self._remote is not None
        await self._remote.cancel(job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REMOTE_CANCEL_WAIT_SECONDS
        job = await self.get(owner, job_id)
        while not job.status.is_terminal and loop.time() < deadline:
            await asyncio.sleep(0.2)
            job = await self.get(owner, job_id)
        return job

    @property
    def tenant_limits(self) -> TenantLimits:
        return self._limits

    async def _check_stored_queue(self, owner: str) -> None:
        """On a remote host, the queued-jobs cap counted in the store, which every replica
        shares (the running cap is the workflow's admission, `JobStore.admit_job`); the same
        refusal as `_check_tenant_limits` gives on the embedded host."""
        if self._remote is None:
            return
        limits = self._limits
        queued, running = await self._store.tenant_job_counts(owner)
        if queued >= limits.max_queued_jobs and not (
                queued == 0 and running < limits.max_running_jobs):
            raise ResourceExhausted(
                f"this tenant already has {queued} queued and {running} running jobs, the most "
                f"allowed (MIPRO_TENANT_MAX_QUEUED_JOBS={limits.max_queued_jobs}); wait for "
                "one to finish or cancel one")

    # -- events ------------------------------------------------------------------------------

    async def _emit(self, job_id: str, type_: str, message: str, data: dict[str, Any],
                    terminal: bool) -> None:
        await self._store.append_event(job_id, type_, message, data, terminal=terminal)
        signal = self._event_signals.pop(job_id, None)
        if signal is not None:
            signal.set()

    async def list_events(self, owner: str, job_id: str, *, since_seq: int,
                          limit: int) -> list[JobEvent]:
        await self.get(owner, job_id)
        if since_seq < 0:
            raise InvalidArgument("since_seq", f"must be non-negative, got {since_seq}")
        if limit < 0 or limit > MAX_EVENT_PAGE:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_EVENT_PAGE}, got {limit}")
        return await self._store.list_events(job_id, since_seq=since_seq,
                                             limit=limit or DEFAULT_EVENT_PAGE)

    async def stream_events(self, owner: str, job_id: str,
                            since_seq: int) -> AsyncIterator[JobEvent]:
        """Every event after `since_seq`, live, ending after the terminal event."""
        await self.get(owner, job_id)
        if since_seq < 0:
            raise InvalidArgument("since_seq", f"must be non-negative, got {since_seq}")
        open_streams = self._streams.get(owner, 0)
        if open_streams >= self._limits.max_live_streams:
            raise ResourceExhausted(
                f"this tenant already has {open_streams} live event streams open, the most "
                f"allowed (MIPRO_TENANT_MAX_LIVE_STREAMS); close one or page with "
                f"GET .../events?since_seq=")
        self._streams[owner] = open_streams + 1
        try:
            async for event in self._stream(job_id, since_seq):
                yield event
        finally:
            self._streams[owner] -= 1
            if not self._streams[owner]:
                del self._streams[owner]

    async def _stream(self, job_id: str, since_seq: int) -> AsyncIterator[JobEvent]:
        seq = since_seq
        while True:
            signal = self._event_signals.setdefault(job_id, asyncio.Event())
            events = await self._store.list_events(job_id, since_seq=seq,
                                                   limit=MAX_EVENT_PAGE)
            for event in events:
                yield event
                seq = event.seq
                if event.terminal:
                    return
            if events:
                continue
            if self._stopping:
                return
            try:
                await asyncio.wait_for(signal.wait(), timeout=self._stream_poll)
            except TimeoutError:
                pass

    # -- environment keys --------------------------------------------------------------------

    async def put_env_key(self, owner: str, name: str, value: str,
                          ciphertext_b64: str = "") -> EnvKeyReceipt:
        """Stores `value`, or the value a client sealed into `ciphertext_b64` (exactly one)."""
        name = env_key_name(name, "name")
        if not name:
            raise InvalidArgument("name", "is required")
        if value and ciphertext_b64:
            raise InvalidArgument("ciphertext_b64", "give either value or ciphertext_b64, "
                                  "not both")
        vault = self._require_vault()
        if ciphertext_b64:
            if len(ciphertext_b64) > 8192:
                raise InvalidArgument("ciphertext_b64", "must be at most 8192 characters")
            try:
                value = vault.open_sealed(ciphertext_b64)
            except SecretsError as error:
                raise InvalidArgument("ciphertext_b64", str(error)) from None
            field = "ciphertext_b64"
        else:
            field = "value"
        if not value:
            raise InvalidArgument(field, "is required: give value (the key) or ciphertext_b64 "
                                  "(the key sealed to GET /api/v1/crypto/public-key)")
        if len(value) > 4096:
            raise InvalidArgument(field, "must hold at most 4096 characters")
        await self._store.put_env_key(owner, name, value)
        return EnvKeyReceipt(name=name, id=env_key_id(owner, name),
                             fingerprint=vault.fingerprint(owner, name, value),
                             updated_at=datetime.now(UTC))

    def public_key(self) -> tuple[str, str]:
        """`(base64 X25519 public key, alg)` that clients seal environment keys to."""
        return self._require_vault().public_key_b64, SEALED_BOX_ALG

    def _require_vault(self) -> EnvKeyVault:
        if self._vault is None:
            raise RuntimeError("the job manager has no vault for environment keys")
        return self._vault


@dataclass(frozen=True)
class EnvKeyReceipt:
    """What registering an environment key answers: never the value itself."""

    name: str
    id: str
    fingerprint: str
    updated_at: datetime
