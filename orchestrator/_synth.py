"""What Synth's SDK (synth-ai 0.7) reads, beside the documented API: event names, metrics, SSE.

Our event types stay ours on the documented paths; every event also carries `synth_type`, its
name in Synth's scheme, and on Synth's paths (the legacy events page and the SSE stream) that
name is the event's `type`. The table is in README "Using Synth's SDK".
"""

from __future__ import annotations

import json

from google.api import httpbody_pb2
from google.protobuf.json_format import MessageToDict

from mipro.v1 import jobs_pb2

from ._models import JobRecord

SYNTH_PREFIX = "learning.policy.mipro."
#: Our event types whose name differs in Synth's scheme; the others keep theirs after the prefix.
_RENAMED = {
    "job.succeeded": "job.completed",
    "candidate.scored": "candidate.evaluated",
    "best.updated": "candidate.new_best",
}
#: The media type of the SSE stream, and its closing sentinel.
SSE_CONTENT_TYPE = "text/event-stream"
SSE_DONE = b"data: [DONE]\n\n"
#: The largest page of metric points.
MAX_METRIC_POINTS = 10_000


def synth_type(event_type: str) -> str:
    """`event_type` in Synth's scheme: `job.succeeded` is `...mipro.job.completed`."""
    return SYNTH_PREFIX + _RENAMED.get(event_type, event_type)


def as_synth_event(event: jobs_pb2.JobEvent) -> jobs_pb2.JobEvent:
    """A copy of `event` whose `type` is Synth's name."""
    renamed = jobs_pb2.JobEvent()
    renamed.CopyFrom(event)
    renamed.type = event.synth_type
    return renamed


def sse_frame(event: jobs_pb2.JobEvent) -> httpbody_pb2.HttpBody:
    """One SSE block, `id: <seq>` and `data: <event JSON>`, with Synth's event type."""
    body = MessageToDict(as_synth_event(event), preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)
    data = json.dumps(body, separators=(",", ":"))
    return httpbody_pb2.HttpBody(content_type=SSE_CONTENT_TYPE,
                                 data=f"id: {event.seq}\ndata: {data}\n\n".encode())


def sse_done() -> httpbody_pb2.HttpBody:
    """The block that ends the stream, as Synth's client expects it."""
    return httpbody_pb2.HttpBody(content_type=SSE_CONTENT_TYPE, data=SSE_DONE)


def best_score_points(job: JobRecord, limit: int) -> list[jobs_pb2.MetricPoint]:
    """The job's best-score history as metric points, the latest `limit` of them."""
    points = [jobs_pb2.MetricPoint(name="best_score", step=rollouts, value=score,
                                   candidate=candidate)
              for rollouts, score, candidate in job.history]
    return points[-limit:] if limit else points
