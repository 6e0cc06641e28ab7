"""The orchestrator's errors, and which gRPC status each one means.

    OrchestratorError
    ├── InvalidArgument      a request field is wrong (names the field path)   INVALID_ARGUMENT
    ├── Unauthenticated      missing or unknown API key                        UNAUTHENTICATED
    ├── NotFound             no such job for this caller                       NOT_FOUND
    ├── FailedPrecondition   the request conflicts with the job's state        FAILED_PRECONDITION
    └── ResourceExhausted    a per-tenant limit is reached (queued jobs,       RESOURCE_EXHAUSTED
                             live streams); retry when one has finished        (HTTP 429)

    JobFailure               ends a running job as `failed`; its message is the job's `error`
    ├── TaskAppUnavailable   the task app cannot be reached or is unhealthy
    └── TaskAppRejected      the task app refused the backend (auth, missing key)

`_grpc_service.py` maps the first tree onto status codes, in one place.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """A request the orchestrator cannot serve; the message is safe to show the caller."""

    reason: str = "ERROR"


class InvalidArgument(OrchestratorError):
    """A request field is missing or wrong."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class Unauthenticated(OrchestratorError):
    """The API key is missing or unknown."""

    reason = "UNAUTHENTICATED"


class NotFound(OrchestratorError):
    """The resource does not exist for this caller."""

    reason = "NOT_FOUND"


class FailedPrecondition(OrchestratorError):
    """The request conflicts with the resource's current state."""

    reason = "FAILED_PRECONDITION"


class ResourceExhausted(OrchestratorError):
    """A per-tenant limit is reached; the message names the limit and its setting."""

    reason = "RESOURCE_EXHAUSTED"


class JobFailure(Exception):
    """Ends a job as `failed`; the message becomes the job's `error` and names the cause."""


class TaskAppUnavailable(JobFailure):
    """The task app could not be reached or reported itself unhealthy."""


class TaskAppRejected(JobFailure):
    """The task app refused the backend's requests (wrong or missing environment key)."""
