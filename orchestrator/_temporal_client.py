"""The Temporal host's API side: start, cancel, pause and resume job workflows.

An API replica never runs a job: it stores it, then starts its workflow (id = job id, so a
retried start never makes a second run). Cancel is workflow cancellation, which the
workflow turns into the one ending (`end_job`); pause and resume are the workflow's
`pause` and `resume` signals. Any API replica can do any of these for any job.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from ._temporal_workflow import WORKFLOW_NAME, JobArgs


async def connect(address: str, namespace: str) -> Client:
    """A client of the Temporal frontend at `address`."""
    return await Client.connect(address, namespace=namespace)


class TemporalJobs:
    """Job workflows on one task queue, as `JobManager`'s remote host."""

    def __init__(self, client: Client, *, task_queue: str, heartbeat_seconds: float,
                 batches_per_run: int) -> None:
        self.client = client
        self._task_queue = task_queue
        self._heartbeat = heartbeat_seconds
        self._batches = batches_per_run

    def _handle(self, job_id: str) -> WorkflowHandle[object, object]:
        return self.client.get_workflow_handle(job_id)

    async def start(self, job_id: str) -> None:
        """Starts the job's workflow; nothing when it was started before."""
        try:
            await self.client.start_workflow(
                WORKFLOW_NAME, JobArgs(job_id, heartbeat_seconds=self._heartbeat,
                                       batches_per_run=self._batches),
                id=job_id, task_queue=self._task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            pass

    async def cancel(self, job_id: str) -> None:
        """Requests the workflow's cancellation (it ends the job `cancelled`)."""
        await self._ignore_gone(self._handle(job_id).cancel())

    async def pause(self, job_id: str, reason: str = "") -> None:
        await self._ignore_gone(self._handle(job_id).signal("pause", reason))

    async def resume(self, job_id: str) -> None:
        await self._ignore_gone(self._handle(job_id).signal("resume"))

    @staticmethod
    async def _ignore_gone(call: Awaitable[Any]) -> None:
        """Awaits `call`; a workflow that has already closed is no error (the job ended)."""
        try:
            await call
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
