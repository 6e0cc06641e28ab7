"""The gRPC servicers of the public API: authenticate, convert, call the core, convert back.

Domain errors become gRPC statuses in exactly one place, `_abort_with`, with a stable reason
in `google.rpc.ErrorInfo` and the field path in `google.rpc.BadRequest` (AIP-193); the
gateway turns those into JSON error bodies with the matching HTTP status.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from google.api import httpbody_pb2
from google.rpc import code_pb2

from mipro._grpc import abort_with_details
from mipro.v1 import jobs_pb2, jobs_pb2_grpc

from ._auth import Authenticator
from ._convert import candidate_to_proto, event_to_proto, job_to_proto, job_view, to_timestamp
from ._errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OrchestratorError,
    ResourceExhausted,
    Unauthenticated,
)
from ._jobs import DEFAULT_SYNTH_PAGE, MAX_SYNTH_PAGE, JobManager
from ._offline import (
    KIND,
    STATES,
    candidate_filter,
    offline_candidate,
    offline_job,
    seed_eval,
    seed_eval_filter,
    spec_of,
)
from ._synth import MAX_METRIC_POINTS, as_synth_event, best_score_points, sse_done, sse_frame
from ._validation import validate_create_request

log = structlog.get_logger(__name__)

_CODES: dict[type[OrchestratorError], int] = {
    InvalidArgument: code_pb2.INVALID_ARGUMENT,
    Unauthenticated: code_pb2.UNAUTHENTICATED,
    NotFound: code_pb2.NOT_FOUND,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
}
_DOMAIN = "mipro.v1"

R = TypeVar("R")
#: The servicer context of every method here.
Context = grpc.aio.ServicerContext[Any, Any]


async def _abort_with(context: Context, error: OrchestratorError) -> None:
    code = next((c for kind, c in _CODES.items() if isinstance(error, kind)), code_pb2.INTERNAL)
    violation = (error.field, error.description) if isinstance(error, InvalidArgument) else None
    await abort_with_details(context, code, str(error), reason=error.reason, domain=_DOMAIN,
                             field_violation=violation)


def _unary(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Authenticates the caller and maps domain errors to statuses for a unary method."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> R:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=method.__name__)
        try:
            owner = await self._auth.tenant_from_metadata(context.invocation_metadata() or ())
            return await method(self, owner, request, context)
        except OrchestratorError as error:
            log.info("request refused", reason=error.reason, detail=str(error))
            await _abort_with(context, error)
            raise AssertionError("abort returned") from None

    return wrapper


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """`mipro.v1.JobService` over the job manager."""

    def __init__(self, jobs: JobManager, auth: Authenticator) -> None:
        self._jobs = jobs
        self._auth = auth

    @_unary
    async def CreateJob(self, owner: str, request: jobs_pb2.CreateJobRequest,
                        context: Context) -> jobs_pb2.CreateJobResponse:
        spec = validate_create_request(request)
        job = await self._jobs.create(owner, spec, request.request_id)
        log.info("job created", job_id=job.job_id)
        return jobs_pb2.CreateJobResponse(job_id=job.job_id, status=job.status.value)

    @_unary
    async def GetJob(self, owner: str, request: jobs_pb2.GetJobRequest,
                     context: Context) -> jobs_pb2.Job:
        if request.view not in jobs_pb2.JobView.values():
            raise InvalidArgument("view", f"must be JOB_VIEW_BASIC or JOB_VIEW_FULL, got "
                                          f"{request.view}")
        # A running job from its published snapshot, without a turn of the jobs' loop.
        job = self._jobs.peek(owner, request.job_id) or await self._jobs.get(owner,
                                                                              request.job_id)
        return job_view(job_to_proto(job), request.view)

    @_unary
    async def ListJobs(self, owner: str, request: jobs_pb2.ListJobsRequest,
                       context: Context) -> jobs_pb2.ListJobsResponse:
        jobs, token = await self._jobs.list_jobs(owner, status=request.status, limit=request.limit,
                                            page_token=request.page_token)
        return jobs_pb2.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs],
                                         next_page_token=token)

    @_unary
    async def CancelJob(self, owner: str, request: jobs_pb2.CancelJobRequest,
                        context: Context) -> jobs_pb2.Job:
        return job_to_proto(await self._jobs.cancel(owner, request.job_id, request.reason))

    @_unary
    async def ListJobEvents(self, owner: str, request: jobs_pb2.ListJobEventsRequest,
                            context: Context) -> jobs_pb2.ListJobEventsResponse:
        events = await self._jobs.list_events(owner, request.job_id, since_seq=request.since_seq,
                                              limit=request.limit)
        next_seq = events[-1].seq if events else request.since_seq
        return jobs_pb2.ListJobEventsResponse(events=[event_to_proto(e) for e in events],
                                              next_seq=next_seq)

    async def StreamJobEvents(
        self, request: jobs_pb2.StreamJobEventsRequest, context: Context
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        structlog.contextvars.clear_contextvars()
        try:
            owner = await self._auth.tenant_from_metadata(context.invocation_metadata() or ())
            stream = self._jobs.stream_events(owner, request.job_id, request.since_seq)
            async for event in stream:
                yield event_to_proto(event)
        except OrchestratorError as error:
            await _abort_with(context, error)


    @_unary
    async def PauseJob(self, owner: str, request: jobs_pb2.PauseJobRequest,
                       context: Context) -> jobs_pb2.Job:
        return job_to_proto(await self._jobs.pause(owner, request.job_id, request.reason))

    @_unary
    async def ResumeJob(self, owner: str, request: jobs_pb2.ResumeJobRequest,
                        context: Context) -> jobs_pb2.Job:
        return job_to_proto(await self._jobs.resume(owner, request.job_id))

    @_unary
    async def ListCandidates(self, owner: str, request: jobs_pb2.ListCandidatesRequest,
                             context: Context) -> jobs_pb2.ListCandidatesResponse:
        found, token, total = await self._jobs.list_candidates(
            owner, request.job_id, page_size=request.page_size, page_token=request.page_token)
        return jobs_pb2.ListCandidatesResponse(
            candidates=[candidate_to_proto(c) for c in found], next_page_token=token,
            total_size=total)


class EnvironmentKeyServicer(jobs_pb2_grpc.EnvironmentKeyServiceServicer):
    """`mipro.v1.EnvironmentKeyService`; values are stored, never echoed or logged."""

    def __init__(self, jobs: JobManager, auth: Authenticator) -> None:
        self._jobs = jobs
        self._auth = auth

    @_unary
    async def CreateEnvironmentKey(
        self, owner: str, request: jobs_pb2.CreateEnvironmentKeyRequest,
        context: Context,
    ) -> jobs_pb2.CreateEnvironmentKeyResponse:
        receipt = await self._jobs.put_env_key(owner, request.name, request.value,
                                               request.ciphertext_b64)
        return jobs_pb2.CreateEnvironmentKeyResponse(
            name=receipt.name, id=receipt.id, fingerprint=receipt.fingerprint,
            updated_at=to_timestamp(receipt.updated_at))

    @_unary
    async def GetPublicKey(
        self, owner: str, request: jobs_pb2.GetPublicKeyRequest, context: Context,
    ) -> jobs_pb2.GetPublicKeyResponse:
        public_key, alg = self._jobs.public_key()
        return jobs_pb2.GetPublicKeyResponse(public_key=public_key, alg=alg)


class SynthCompatServicer(jobs_pb2_grpc.SynthCompatServiceServicer):
    """`mipro.v1.SynthCompatService`: the paths synth-ai 0.7's client reads."""

    def __init__(self, jobs: JobManager, auth: Authenticator) -> None:
        self._jobs = jobs
        self._auth = auth

    @_unary
    async def ListSynthJobEvents(self, owner: str, request: jobs_pb2.ListSynthJobEventsRequest,
                                 context: Context) -> jobs_pb2.ListSynthJobEventsResponse:
        events = await self._jobs.list_events(owner, request.job_id, since_seq=request.since_seq,
                                              limit=request.limit)
        next_seq = events[-1].seq if events else request.since_seq
        return jobs_pb2.ListSynthJobEventsResponse(
            events=[as_synth_event(event_to_proto(e)) for e in events], next_seq=next_seq)

    @_unary
    async def GetJobMetrics(self, owner: str, request: jobs_pb2.GetJobMetricsRequest,
                            context: Context) -> jobs_pb2.GetJobMetricsResponse:
        if not 0 <= request.limit <= MAX_METRIC_POINTS:
            raise InvalidArgument(
                "limit", f"must be between 1 and {MAX_METRIC_POINTS}, got {request.limit}")
        job = await self._jobs.get(owner, request.job_id)
        return jobs_pb2.GetJobMetricsResponse(points=best_score_points(job, request.limit))


class SynthEventStreamServicer(jobs_pb2_grpc.SynthEventStreamServiceServicer):
    """`mipro.v1.SynthEventStreamService`: the live stream as SSE, ending `data: [DONE]`."""

    def __init__(self, jobs: JobManager, auth: Authenticator) -> None:
        self._jobs = jobs
        self._auth = auth

    async def StreamJobEventsSse(
        self, request: jobs_pb2.StreamJobEventsSseRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        structlog.contextvars.clear_contextvars()
        try:
            owner = await self._auth.tenant_from_metadata(context.invocation_metadata() or ())
            async for event in self._jobs.stream_events(owner, request.job_id,
                                                        request.since_seq):
                message = event_to_proto(event)
                yield sse_frame(message)
                if message.terminal:
                    yield sse_done()
        except OrchestratorError as error:
            await _abort_with(context, error)


class OfflineJobServicer(jobs_pb2_grpc.OfflineJobServiceServicer):
    """`mipro.v1.OfflineJobService`: synth-ai 0.9's offline jobs over the same jobs."""

    def __init__(self, jobs: JobManager, auth: Authenticator) -> None:
        self._jobs = jobs
        self._auth = auth

    @_unary
    async def CreateOfflineJob(self, owner: str, request: jobs_pb2.CreateOfflineJobRequest,
                               context: Context) -> jobs_pb2.OfflineJob:
        job = await self._jobs.create(owner, spec_of(request))
        log.info("job created", job_id=job.job_id, kind=request.kind)
        return offline_job(job)

    @_unary
    async def GetOfflineJob(self, owner: str, request: jobs_pb2.GetOfflineJobRequest,
                            context: Context) -> jobs_pb2.OfflineJob:
        return offline_job(await self._jobs.get(owner, request.job_id))

    @_unary
    async def UpdateOfflineJobState(
        self, owner: str, request: jobs_pb2.UpdateOfflineJobStateRequest, context: Context,
    ) -> jobs_pb2.OfflineJob:
        if request.state == "paused":
            job = await self._jobs.pause(owner, request.job_id)
        elif request.state == "running":
            job = await self._jobs.resume(owner, request.job_id)
        elif request.state == "cancelled":
            job = await self._jobs.cancel(owner, request.job_id, "state set to cancelled")
        else:
            raise InvalidArgument("state", f"must be one of {', '.join(STATES)}, got "
                                           f"{request.state!r}")
        return offline_job(job)

    @_unary
    async def ListOfflineCandidates(
        self, owner: str, request: jobs_pb2.ListOfflineCandidatesRequest, context: Context,
    ) -> jobs_pb2.ListOfflineCandidatesResponse:
        found, cursor, _ = await self._jobs.list_candidates(
            owner, request.job_id, page_size=request.limit, page_token=request.cursor,
            default=DEFAULT_SYNTH_PAGE, maximum=MAX_SYNTH_PAGE, size_field="limit",
            token_field="cursor", keep=candidate_filter(request))
        return jobs_pb2.ListOfflineCandidatesResponse(
            items=[offline_candidate(request.job_id, c) for c in found], next_cursor=cursor,
            job_id=request.job_id, algorithm="mipro", mode="offline")

    @_unary
    async def ListSeedEvals(self, owner: str, request: jobs_pb2.ListSeedEvalsRequest,
                            context: Context) -> jobs_pb2.ListSeedEvalsResponse:
        found, cursor = await self._jobs.list_rollouts(
            owner, request.job_id, limit=request.limit, cursor=request.cursor,
            where=seed_eval_filter(request.job_id, request), scope="seed-evals")
        return jobs_pb2.ListSeedEvalsResponse(
            items=[seed_eval(request.job_id, r) for r in found], next_cursor=cursor,
            job_id=request.job_id)

    @_unary
    async def ListOfflineJobs(self, owner: str, request: jobs_pb2.ListOfflineJobsRequest,
                              context: Context) -> jobs_pb2.ListOfflineJobsResponse:
        for name in ("system_id", "system_name", "created_after", "created_before"):
            if getattr(request, name):
                raise InvalidArgument(name, "is not supported here (there are no systems and "
                                            "no time filter); leave it out")
        if request.kind not in ("", KIND):
            return jobs_pb2.ListOfflineJobsResponse()
        try:
            jobs, cursor = await self._jobs.list_jobs(
                owner, status=request.state, limit=request.limit, page_token=request.cursor)
        except InvalidArgument as error:  # named as the client named it
            field = {"status": "state", "page_token": "cursor"}.get(error.field, error.field)
            raise InvalidArgument(field, error.description) from None
        return jobs_pb2.ListOfflineJobsResponse(items=[offline_job(j) for j in jobs],
                                                next_cursor=cursor)
