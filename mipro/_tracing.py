"""OpenTelemetry traces, off by default: one trace per job, exported over OTLP.

`configure_tracing` turns them on for the process (when `MIPRO_TRACING` says so, or when an
`OTEL_EXPORTER_OTLP_*ENDPOINT` is set; the OTLP exporter reads the standard `OTEL_*`
variables itself). Off, every helper here returns at once and no span is made.

The spans of a job:

    job                                  (root; one per run of the job, a resume adds one)
    ├── phase preflight | bootstrap | propose | evaluate | test
    │   ├── rollout                      (the task-app call, every attempt; `traceparent`
    │   │   │                             is sent to the task app)
    │   │   └── chat <model>             (each model call through the interceptor)
    │   └── propose                      (the orchestrator's call to the proposer service)
    │       └── ProposeInstructions      (the proposer service, `traceparent` in gRPC metadata)
    │           └── chat <model>         (each proposer model call)

Ids are derived, not random, where another process must find them: a job's trace id is a
hash of its job id, and a rollout span's id a hash of the rollout id and the nonce of that
opening of the rollout (both carried by the verified inference-URL token). So the
interceptor, in any replica, parents a model call on its rollout without the task app
forwarding `traceparent` (task apps are untrusted; the header they send is ignored).

Span attributes carry ids, counts and outcomes, never a key, a token or a message.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import DefaultGetter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._settings import Settings

__all__ = ["Span", "SpanKind", "Status", "StatusCode", "configure_tracing", "enabled",
           "shutdown_tracing"]

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: The ids the next span made in this context takes: (trace id, span id), 0 = random.
_NEXT_IDS: ContextVar[tuple[int, int]] = ContextVar("mipro_next_span_ids", default=(0, 0))
_PROPAGATOR = TraceContextTextMapPropagator()
_GETTER: DefaultGetter = DefaultGetter()

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


class _DerivedIds(IdGenerator):
    """Random ids, except where the caller set the next ones (`start_span(..., ids=)`)."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_trace_id(self) -> int:
        return _NEXT_IDS.get()[0] or self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        return _NEXT_IDS.get()[1] or self._random.generate_span_id()


def tracing_wanted(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    """`MIPRO_TRACING` when set, else whether an OTLP endpoint is configured."""
    if settings.tracing is not None:
        return settings.tracing
    environ = os.environ if environ is None else environ
    return any(environ.get(name) for name in _ENDPOINT_VARIABLES)


def configure_tracing(component: str, settings: Settings, *,
                      processors: Sequence[SpanProcessor] | None = None) -> bool:
    """Turns tracing on for this process when wanted (or when `processors` are given, as
    tests do with an in-memory exporter); returns whether it is on."""
    global _provider, _tracer
    if processors is None:
        if not tracing_wanted(settings):
            return False
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter()
        processors = [BatchSpanProcessor(exporter)]
    shutdown_tracing()
    service = os.environ.get("OTEL_SERVICE_NAME") or f"mipro-{component}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              id_generator=_DerivedIds())
    for processor in processors:
        provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("mipro")
    return True


@contextmanager
def traced_process(component: str, settings: Settings) -> Iterator[None]:
    """Tracing for the whole of a service's process (when wanted), flushed at its end."""
    configure_tracing(component, settings)
    try:
        yield
    finally:
        shutdown_tracing()


def shutdown_tracing() -> None:
    """Flushes and stops the exporter; tracing is off afterwards."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def enabled() -> bool:
    return _tracer is not None


# -- ids --------------------------------------------------------------------------------------


def _hash_id(text: str, size: int) -> int:
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=size).digest(), "big")
    return value or 1  # 0 is the invalid id


def job_trace_id(job_id: str) -> int:
    """The trace id of every span of `job_id`."""
    return _hash_id(f"job:{job_id}", 16)


def rollout_span_id(rollout_id: str, nonce: str) -> int:
    """The span id of the rollout span of one opening (`nonce`) of `rollout_id`."""
    return _hash_id(f"rollout:{rollout_id}:{nonce}", 8)


def rollout_context(job_id: str, rollout_id: str, nonce: str) -> Context:
    """The context whose parent is the rollout span: for the interceptor's model calls."""
    parent = SpanContext(job_trace_id(job_id), rollout_span_id(rollout_id, nonce),
                         is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


# -- spans ------------------------------------------------------------------------------------


def start_span(name: str, *, parent: Span | Context | None = None,
               attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL,
               trace_id: int = 0, span_id: int = 0) -> Span | None:
    """A started span (the caller ends it), or None when tracing is off. `parent` None is
    the current span; `trace_id`/`span_id` fix the new span's ids (0: random)."""
    tracer = _tracer
    if tracer is None:
        return None
    context = trace.set_span_in_context(parent) if isinstance(parent, Span) else parent
    token = _NEXT_IDS.set((trace_id, span_id))
    try:
        return tracer.start_span(name, context=context, kind=kind,
                                 attributes=dict(attributes) if attributes else None)
    finally:
        _NEXT_IDS.reset(token)


@contextmanager
def span(name: str, *, parent: Span | Context | None = None,
         attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL,
         span_id: int = 0) -> Iterator[Span | None]:
    """`start_span` as the current span of the block (None, and nothing done, when off); an
    exception escaping the block is recorded on it."""
    started = start_span(name, parent=parent, attributes=attributes, kind=kind,
                         span_id=span_id)
    if started is None:
        yield None
        return
    with trace.use_span(started, end_on_exit=True, record_exception=True,
                        set_status_on_exception=True):
        yield started


@contextmanager
def current(span: Span | None) -> Iterator[None]:
    """Makes `span` the current span of the block (log lines then carry its trace id); it is
    not ended here. Nothing when `span` is None."""
    if span is None:
        yield
        return
    # Its owner sets its status: a cancellation or shutdown passing through is no error.
    with trace.use_span(span, end_on_exit=False, record_exception=False,
                        set_status_on_exception=False):
        yield


def traceparent(span: Span | None) -> str:
    """The W3C `traceparent` header naming `span`; "" when there is none."""
    if span is None:
        return ""
    context = span.get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def context_from_metadata(metadata: Iterable[Any] | None) -> Context | None:
    """The remote parent named by a `traceparent` in gRPC metadata (`(key, value)` pairs),
    or None."""
    if not enabled() or not metadata:
        return None
    carrier = {key: value for key, value in metadata
               if key in ("traceparent", "tracestate") and isinstance(value, str)}
    if not carrier:
        return None
    return _PROPAGATOR.extract(carrier, getter=_GETTER)


def current_ids() -> dict[str, str]:
    """`trace_id` and `span_id` of the current span, for log lines; {} when none."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
