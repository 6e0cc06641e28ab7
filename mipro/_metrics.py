"""Every Prometheus metric of the backend, with its labels, in one place, and the one HTTP
endpoint per process that serves them (`serve_metrics`, path `/metrics`).

Each metric lives in the process that does the work it counts, so a deployment that splits
the orchestrator into roles (`MIPRO_ROLES`) still counts everything exactly once:

- the worker (the process that runs jobs): `mipro_jobs{state}` (gauge: `queued`,
  `running`), `mipro_jobs_ended_total{state}` (`succeeded`, `failed`, `cancelled`),
  `mipro_scheduler_queue_depth`, `mipro_scheduler_slots`, `mipro_rollouts_total{phase,
  outcome, cause}`, `mipro_rollout_duration_seconds{phase, outcome}` (histogram),
  `mipro_rollouts_in_flight`, `mipro_proposer_request_duration_seconds{outcome}`;
- the API: `mipro_jobs_created_total`;
- the interceptor (`role="policy"`) and the proposer service (`role="proposer"`):
  `mipro_provider_call_duration_seconds{role, model, outcome}` (histogram),
  `mipro_provider_tokens_total{role, model, kind}` (`prompt`, `completion`),
  `mipro_provider_cost_usd_total{role, model}` (priced by `mipro._pricing`);
- the interceptor: `mipro_interceptor_refused_total{reason}`.

Label values are bounded: never a job, rollout or tenant id. `cause` is a `FailureCause`
value or `http_<status>` for a status 300-599 (`http_other` beyond); `model` is a model name
in the price table or in `MIPRO_METRICS_MODELS`, else `other` (a tenant names its models, so
free text never becomes a series); `reason` is one of `REFUSAL_REASONS`.

prometheus-client's default collectors (`process_*`, `python_gc_*`) come along; Envoy's
stats are served by the gateway itself (its metrics listener, `gateway/config.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

log = structlog.get_logger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0)

#: Why the interceptor refused a model call (the values of `mipro_interceptor_refused_total`).
REFUSAL_REASONS = frozenset({
    "token_invalid",      # 401: forged, tampered or expired inference-URL token
    "rollout_unknown",    # 404: the rollout is not open (finished, or another opening)
    "too_many_calls",     # 429: past MIPRO_INTERCEPTOR_MAX_CALLS_PER_ROLLOUT
    "environment_key",    # 401: the job's environment key was not presented
    "body_too_large",     # 413
    "invalid_body",       # 400: not JSON, NaN/Infinity, no messages list
    "policy_violation",   # 400: n > 1, stream
    "budget_spent",       # 429: the job's spend budget ran out
})

# -- jobs and the scheduler (worker; the API counts creations) -------------------------------

JOBS = Gauge("mipro_jobs", "Jobs held by this process, by state.", ["state"])
JOBS_CREATED = Counter("mipro_jobs_created_total", "Jobs created through this process's API.")
JOBS_ENDED = Counter("mipro_jobs_ended_total", "Jobs that reached a terminal state here.",
                     ["state"])
QUEUE_DEPTH = Gauge("mipro_scheduler_queue_depth", "Jobs waiting for a running slot.")
SLOTS = Gauge("mipro_scheduler_slots", "Jobs this process runs at once, at most.")

# -- rollouts (worker) ------------------------------------------------------------------------

ROLLOUTS = Counter("mipro_rollouts_total", "Rollouts run (task-app calls), by outcome and "
                   "failure cause.", ["phase", "outcome", "cause"])
ROLLOUT_SECONDS = Histogram("mipro_rollout_duration_seconds", "Wall time of one rollout, "
                            "every task-app attempt included.", ["phase", "outcome"],
                            buckets=_LATENCY_BUCKETS)
ROLLOUTS_IN_FLIGHT = Gauge("mipro_rollouts_in_flight", "Rollouts running now.")

# -- the proposer service, as the worker calls it ---------------------------------------------

PROPOSER_REQUEST_SECONDS = Histogram(
    "mipro_proposer_request_duration_seconds", "Wall time of one proposal request to the "
    "proposer service, its retries included.", ["outcome"], buckets=_LATENCY_BUCKETS)

# -- model calls (interceptor: role policy; proposer service: role proposer) ------------------

PROVIDER_CALL_SECONDS = Histogram(
    "mipro_provider_call_duration_seconds", "Wall time of one model call, its retries "
    "included.", ["role", "model", "outcome"], buckets=_LATENCY_BUCKETS)
PROVIDER_TOKENS = Counter("mipro_provider_tokens_total", "Tokens of answered model calls.",
                          ["role", "model", "kind"])
PROVIDER_COST = Counter("mipro_provider_cost_usd_total", "Estimated spend of answered model "
                        "calls, in US dollars (MIPRO_PRICES_FILE prices).", ["role", "model"])

# -- the interceptor --------------------------------------------------------------------------

INTERCEPTOR_REFUSED = Counter("mipro_interceptor_refused_total", "Model calls the interceptor "
                              "refused, by reason; none was forwarded.", ["reason"])

#: The model names that may be label values; others are `other`.
_models: frozenset[str] = frozenset()


def allow_models(names: Iterable[str]) -> None:
    """Sets the model names that may appear as `model` label values (the price table's and
    `MIPRO_METRICS_MODELS`); called once at process start."""
    global _models
    _models = frozenset(n for n in names if n)
    _call_children.clear()


def model_label(model: str) -> str:
    """`model` if it is an allowed label value, else `other`."""
    return model if model in _models else "other"


def cause_label(cause: str) -> str:
    """A rollout failure cause as a bounded label value (`""` for a success)."""
    if cause.startswith("http_"):
        status = cause[5:]
        return cause if status.isdigit() and 300 <= int(status) <= 599 else "http_other"
    return cause


# The labelled children of the hot-path metrics, by label values (`labels()` costs several
# times an increment). Bounded like the labels: the keys are label values.
_rollout_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
_call_children: dict[tuple[str, str, bool], tuple[Histogram, Counter, Counter, Counter]] = {}


def count_rollout(phase: str, cause: str, seconds: float) -> None:
    """One finished rollout: `cause` is "" when it returned a reward."""
    key = (phase, cause_label(cause))
    children = _rollout_children.get(key)
    if children is None:
        outcome = "failed" if cause else "ok"
        children = _rollout_children[key] = (ROLLOUTS.labels(phase, outcome, key[1]),
                                             ROLLOUT_SECONDS.labels(phase, outcome))
    children[0].inc()
    children[1].observe(seconds)


def count_model_call(role: str, model: str, seconds: float, *, ok: bool,
                     prompt_tokens: int = 0, completion_tokens: int = 0,
                     cost_usd: float = 0.0) -> None:
    """One model call of `role` (`policy` or `proposer`), its usage when it was answered."""
    key = (role, model_label(model), ok)
    children = _call_children.get(key)
    if children is None:
        name = key[1]
        children = _call_children[key] = (
            PROVIDER_CALL_SECONDS.labels(role, name, "ok" if ok else "error"),
            PROVIDER_TOKENS.labels(role, name, "prompt"),
            PROVIDER_TOKENS.labels(role, name, "completion"),
            PROVIDER_COST.labels(role, name))
    seconds_child, prompt, completion, cost = children
    seconds_child.observe(seconds)
    if prompt_tokens:
        prompt.inc(prompt_tokens)
    if completion_tokens:
        completion.inc(completion_tokens)
    if cost_usd > 0:
        cost.inc(cost_usd)


def count_refusal(reason: str) -> None:
    assert reason in REFUSAL_REASONS, reason
    INTERCEPTOR_REFUSED.labels(reason).inc()


def watch_jobs(*, queued: Callable[[], int], running: Callable[[], int],
               slots: int) -> None:
    """Reads the job gauges from the worker's scheduler at each scrape (nothing is updated
    on the hot path)."""
    JOBS.labels("queued").set_function(queued)
    JOBS.labels("running").set_function(running)
    QUEUE_DEPTH.set_function(queued)
    SLOTS.set(slots)


class MetricsEndpoint:
    """This process's `/metrics` (prometheus-client's threaded HTTP server; any path answers,
    `/metrics` is the documented one). `stop()` closes it."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server
        self.port = int(server.server_port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(host: str, port: int | None, *, component: str) -> MetricsEndpoint | None:
    """Starts the endpoint on `host:port` (0: a free port); None when `port` is None (off)."""
    if port is None:
        return None
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    endpoint = MetricsEndpoint(server)
    log.info("metrics endpoint started", component=component, host=host, port=endpoint.port,
             path="/metrics")
    return endpoint
