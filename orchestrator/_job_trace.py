"""The spans of one run of a job: its root, one per phase, one per rollout (see
`mipro._tracing` for the whole tree). Every method does nothing when tracing is off."""

from __future__ import annotations

from opentelemetry.context import Context

from mipro import _tracing
from mipro._tracing import Status, StatusCode

from ._models import JobRecord, JobStatus, RolloutResult


class JobTrace:
    """The job span, the open phase span under it, and rollout spans under that."""

    def __init__(self, job_id: str) -> None:
        self._job_id = job_id
        self._trace_id = _tracing.job_trace_id(job_id)
        self.root: _tracing.Span | None = None
        self._phase: _tracing.Span | None = None
        self._phase_name = ""

    def start(self, resumes: int) -> _tracing.Span | None:
        """Opens the job's root span (a resumed job's runs share its trace)."""
        self.root = _tracing.start_span(
            "job", parent=Context(), trace_id=self._trace_id,
            attributes={"mipro.job_id": self._job_id, "mipro.resumes": resumes})
        return self.root

    def phase(self, name: str) -> None:
        """Ends the open phase span and opens `name`'s (nothing when it is open already)."""
        if self.root is None or (self._phase is not None and self._phase_name == name):
            return
        self._end_phase()
        self._phase = _tracing.start_span(f"phase {name}", parent=self.root,
                                          attributes={"mipro.phase": name})
        self._phase_name = name

    @property
    def parent(self) -> _tracing.Span | None:
        """The span new work hangs under: the open phase, else the job."""
        return self._phase or self.root

    def rollout(self, rollout_id: str, nonce: str, *, phase: str, candidate: int,
                seed: int) -> _tracing.Span | None:
        """Opens a rollout's span, with the id the interceptor derives from its token."""
        if self.root is None:
            return None
        return _tracing.start_span(
            "rollout", parent=self.parent, kind=_tracing.SpanKind.CLIENT,
            span_id=_tracing.rollout_span_id(rollout_id, nonce),
            attributes={"mipro.job_id": self._job_id, "mipro.rollout_id": rollout_id,
                        "mipro.phase": phase, "mipro.candidate": candidate, "mipro.seed": seed})

    @staticmethod
    def rollout_done(span: _tracing.Span | None, result: RolloutResult) -> None:
        if span is None:
            return
        span.set_attribute("mipro.outcome", "ok" if result.ok else "failed")
        if result.ok and result.reward is not None:
            span.set_attribute("mipro.reward", result.reward)
        else:
            span.set_attribute("mipro.failure_cause", result.failure_cause)
            span.set_status(Status(StatusCode.ERROR, result.failure_cause))
        span.set_attribute("mipro.tokens", result.tokens)
        span.end()

    def finish(self, job: JobRecord) -> None:
        """Ends every open span, the job's with its outcome."""
        self._end_phase()
        root, self.root = self.root, None
        if root is None:
            return
        root.set_attribute("mipro.status", job.status.value)
        root.set_attribute("mipro.resumes", job.resumes)
        root.set_attribute("mipro.rollouts_completed", job.rollouts_completed)
        root.set_attribute("mipro.rollouts_failed", job.rollouts_failed)
        if job.termination_reason:
            root.set_attribute("mipro.termination_reason", job.termination_reason)
        if job.status is JobStatus.FAILED:
            root.set_status(Status(StatusCode.ERROR, job.error[:200]))
        root.end()

    def _end_phase(self) -> None:
        if self._phase is not None:
            self._phase.end()
        self._phase, self._phase_name = None, ""
