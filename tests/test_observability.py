"""Metrics and traces, checked against what a job reports about itself.

- `/metrics` of the orchestrator and the proposer service, and the gateway's Envoy stats, are
  scraped during and after a small job on a real stack (fake model: wiring only) whose task
  app answers garbage to some rollouts; the counters must equal the job's own figures.
- The spans of a small job, run by an orchestrator and a proposer service in this process,
  are read from the SDK's in-memory exporter: one trace, its parent/child structure, counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import httpx
import pytest
import pytest_asyncio
import structlog
from aiohttp import web
from google.protobuf.json_format import MessageToDict, ParseDict
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from mipro import _tracing
from mipro._dev_secrets import dev_secrets_env
from mipro._logging import add_trace_ids
from mipro._retry import RetryPolicy
from mipro._settings import Settings
from mipro._stack import Stack, free_port
from mipro.v1 import jobs_pb2, jobs_pb2_grpc
from orchestrator._server import OrchestratorServer
from orchestrator._task_app import RolloutCall, TaskAppClient
from proposer_service._server import ProposerServer

from ._launch import start_fake_model
from .conftest import RunningStack, launch_stack
from .faults import FLAKY_TASK_APP, start_fault_server
from .test_durability import _finished, _get, _submit, _wait
from .test_end_to_end import documented_job

Samples = list[tuple[str, dict[str, str], float]]


def _parse(text: str) -> Samples:
    return [(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def _total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for n, got, value in samples
               if n == name and all(got.get(k) == v for k, v in labels.items()))


def _minus(now: Samples, before: Samples) -> Samples:
    """`now`, each sample less its value in `before` (what happened in between)."""
    earlier = {(n, tuple(sorted(labels.items()))): v for n, labels, v in before}
    return [(n, labels, v - earlier.get((n, tuple(sorted(labels.items()))), 0.0))
            for n, labels, v in now]


async def _scrape(client: httpx.AsyncClient, port: int, path: str = "/metrics") -> Samples:
    response = await client.get(f"http://127.0.0.1:{port}{path}")
    assert response.status_code == 200, response.text
    return _parse(response.text)


# -- metrics on a real stack -----------------------------------------------------------------


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: keeps every span it is sent, with its service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []

    async def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes
                           if a.key == "service.name")
            self.spans += [(service, span) for scope in resource_spans.scope_spans
                           for span in scope.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def metered_stack(tmp_path_factory: pytest.TempPathFactory
                        ) -> AsyncIterator[tuple[RunningStack, dict[str, int], _Collector]]:
    """A stack with every metrics endpoint on, exporting its traces to a collector here;
    its tests run one job each, one after the other."""
    tmp_path = tmp_path_factory.mktemp("metered")
    collector, server = _Collector(), grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    otlp_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ports = {"orchestrator": free_port(), "proposer": free_port(), "gateway": free_port()}
    try:
        running = await launch_stack(tmp_path, extra_env={
            "MIPRO_METRICS_PORT": str(ports["orchestrator"]),
            "MIPRO_PROPOSER_METRICS_PORT": str(ports["proposer"]),
            "MIPRO_GATEWAY_METRICS_PORT": str(ports["gateway"]),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "100",
        })
        try:
            yield running, ports, collector
        finally:
            await asyncio.shield(running.stack.stop())
    finally:
        await server.stop(0)


async def test_metrics_equal_the_jobs_own_figures(
        metered_stack: tuple[RunningStack, dict[str, int], _Collector], tmp_path: Path) -> None:
    stack, ports, _ = metered_stack
    flaky = await start_fault_server(stack.stack, FLAKY_TASK_APP, stack.task_app_url,
                                     free_port(), log=tmp_path / "flaky.jsonl",
                                     args=["--garbage-rate", "0.2", "--fail-rate", "0.1",
                                           "--hang-rate", "0", "--seed", "3"])
    async with httpx.AsyncClient(timeout=10) as client:
        # Other tests of this module ran jobs on the stack: count from here.
        start = await _scrape(client, ports["orchestrator"])
        start_proposer = await _scrape(client, ports["proposer"])
        # A model call with a forged token is refused, and counted by reason.
        forged = await client.post(f"{stack.gateway_url}/v1/forged/chat/completions",
                                   json={"messages": []})
        assert forged.status_code == 401
        # Six bootstrap seeds: the faults are drawn per rollout id, which holds the random
        # job id, and with three seeds all three broke in about one run of a hundred (the
        # job then fails as it should: its baseline is scored on no seed).
        job_id = await _submit(stack, flaky, bootstrap_train_seeds=list(range(6)),
                               val_seeds=list(range(100, 112)), num_candidates=3)

        # During the job: the counters lie between the job's figures read before and after
        # the scrape (a rollout is counted as it ends, just before the job folds it in, so
        # at most `max_concurrent` ahead of the job).
        before = await _get(stack, job_id)
        during = await _scrape(client, ports["orchestrator"])
        after = await _get(stack, job_id)
        max_concurrent = after["policy_optimization"]["mipro"]["max_concurrent"]
        scraped = _total(during, "mipro_rollouts_total") - _total(start, "mipro_rollouts_total")
        done_before = before["rollouts_completed"] + before["rollouts_failed"]
        done_after = after["rollouts_completed"] + after["rollouts_failed"]
        assert done_before <= scraped <= done_after + max_concurrent
        assert 0 <= _total(during, "mipro_rollouts_in_flight") <= max_concurrent
        if before["status"] == after["status"] == "running":
            assert _total(during, "mipro_jobs", state="running") == 1
            assert _total(during, "mipro_scheduler_queue_depth") == 0

        job = await _wait(stack, job_id, until=_finished, timeout=120)
        assert job["status"] == "succeeded", job["error"]
        assert job["rollouts_failed"] > 0, "the flaky task app should have broken some"
        final = _minus(await _scrape(client, ports["orchestrator"]), start)
        proposer = _minus(await _scrape(client, ports["proposer"]), start_proposer)
        gateway_text = (await client.get(f"http://127.0.0.1:{ports['gateway']}/metrics")).text

    # Rollouts by outcome and cause are the job's counts; the histogram saw each once.
    assert _total(final, "mipro_rollouts_total", outcome="ok") == job["rollouts_completed"]
    assert _total(final, "mipro_rollouts_total", outcome="failed") == job["rollouts_failed"]
    causes = Counter[str]()
    for name, labels, value in final:
        if name == "mipro_rollouts_total" and labels["outcome"] == "failed":
            causes[labels["cause"]] += int(value)
    assert dict(causes) == job["failures_by_cause"]
    garbage = sum(1 for line in (tmp_path / "flaky.jsonl").read_text().splitlines()
                  if json.loads(line)["fault"] == "garbage")
    assert causes["invalid_json"] == garbage
    assert _total(final, "mipro_rollout_duration_seconds_count") == (
        job["rollouts_completed"] + job["rollouts_failed"])
    assert _total(final, "mipro_rollouts_in_flight") == 0  # a gauge: 0 - 0
    # Tokens and spend by role and model are the job's usage.
    model = job["policy_optimization"]["policy"]["model"]
    assert _total(final, "mipro_provider_tokens_total", role="policy", model=model) == (
        job["policy_tokens"]) > 0
    assert _total(proposer, "mipro_provider_tokens_total", role="proposer", model=model) == (
        job["proposer_tokens"]) > 0
    proposer_cost = _total(proposer, "mipro_provider_cost_usd_total", role="proposer")
    policy_cost = _total(final, "mipro_provider_cost_usd_total", role="policy")
    assert proposer_cost > 0 and policy_cost > 0
    assert policy_cost + proposer_cost == pytest.approx(job["cost_usd"], abs=2e-6)
    assert _total(proposer, "mipro_provider_call_duration_seconds_count", role="proposer",
                  outcome="ok") >= len(job["candidates"]) - 1
    assert _total(final, "mipro_proposer_request_duration_seconds_count", outcome="ok") >= 1
    # The job itself, and the refused call.
    assert _total(final, "mipro_jobs_created_total") == 1
    assert _total(final, "mipro_jobs_ended_total", state="succeeded") == 1
    assert _total(final, "mipro_jobs", state="running") == 0  # gauges: now minus before
    assert _total(start, "mipro_jobs", state="running") == 0
    assert _total(start, "mipro_scheduler_slots") == 4
    assert _total(final, "mipro_interceptor_refused_total", reason="token_invalid") == 1
    assert _total(final, "mipro_interceptor_refused_total") == 1
    # No job or rollout id is a label value anywhere.
    assert job_id not in json.dumps([labels for _, labels, _ in final])
    # Envoy's stats, through the gateway's metrics listener; the rest of its admin is not there.
    gateway = _parse(gateway_text)
    assert _total(gateway, "envoy_http_downstream_rq_total",
                  envoy_http_conn_manager_prefix="gateway") > 0
    async with httpx.AsyncClient(timeout=10) as client:
        base = f"http://127.0.0.1:{ports['gateway']}"
        assert (await client.get(f"{base}/stats/prometheus")).status_code == 200
        assert (await client.get(f"{base}/stats")).status_code == 404
        assert (await client.post(f"{base}/quitquitquit")).status_code == 404


async def test_traces_reach_an_otlp_collector_and_logs_carry_their_ids(
        metered_stack: tuple[RunningStack, dict[str, int], _Collector]) -> None:
    stack, _, collector = metered_stack
    job_id = await _submit(stack, bootstrap_train_seeds=[0, 1], val_seeds=[100, 101],
                           num_candidates=2)
    job = await _wait(stack, job_id, until=_finished, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    trace_id = _tracing.job_trace_id(job_id).to_bytes(16, "big")
    deadline = time.monotonic() + 15
    while not any(s.name == "job" and s.trace_id == trace_id for _, s in collector.spans):
        assert time.monotonic() < deadline, "the job's root span never reached the collector"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the proposer's batch, sent at about the same time
    ours = Counter((service, s.name) for service, s in collector.spans if s.trace_id == trace_id)
    assert ours[("mipro-orchestrator", "job")] == 1
    assert ours[("mipro-orchestrator", "rollout")] == (
        job["rollouts_completed"] + job["rollouts_failed"])
    assert ours[("mipro-orchestrator", "chat gpt-4o-mini")] == ours[("mipro-orchestrator",
                                                                    "rollout")]
    assert ours[("mipro-proposer", "ProposeInstructions")] == ours[("mipro-orchestrator",
                                                                    "propose")] >= 1
    # The JSON log lines the job's run writes (its events) carry its trace id, and those of
    # a rollout the rollout's id.
    lines = [json.loads(line) for line in
             (stack.log_dir / "orchestrator.log").read_text().splitlines()
             if line.startswith("{") and job_id in line]
    events = [line for line in lines if "event_type" in line]
    assert {line["event_type"] for line in events} >= {"job.started", "job.succeeded"}
    assert all(line["trace_id"] == trace_id.hex() and line["job_id"] == job_id
               for line in events), [line for line in events if "trace_id" not in line]
    assert any(line.get("rollout_id", "").startswith(job_id) for line in events)


# -- traces, in this process -------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    _tracing.configure_tracing("test", Settings.from_env({}),
                               processors=[SimpleSpanProcessor(exporter)])
    try:
        yield exporter
    finally:
        _tracing.shutdown_tracing()


@pytest_asyncio.fixture(loop_scope="session")
async def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                     ) -> AsyncIterator[dict[str, Any]]:
    """An orchestrator and a proposer service in this process (so their spans reach the
    in-memory exporter); the fake model and the example task app as processes."""
    api_key, env_key = "mk_" + secrets.token_hex(8), "env_" + secrets.token_hex(8)
    interceptor_port = free_port()
    data_dir = tmp_path / "data"
    env = {
        "MIPRO_HOST": "127.0.0.1", "MIPRO_ORCHESTRATOR_PORT": str(free_port()),
        "MIPRO_INTERCEPTOR_PORT": str(interceptor_port), "MIPRO_PROPOSER_PORT": str(free_port()),
        "MIPRO_PUBLIC_BASE_URL": f"http://127.0.0.1:{interceptor_port}",
        "MIPRO_DATA_DIR": str(data_dir), "MIPRO_API_KEYS": api_key,
        "MIPRO_TASK_APP_ALLOW": "loopback", "MIPRO_PROPOSER_TOKEN": secrets.token_hex(16),
        "MIPRO_METRICS_PORT": "0",
    }
    env.update(dev_secrets_env(env, data_dir))
    settings = Settings.from_env(env)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MIPRO_")}
    processes = Stack(settings, base_env, log_dir=tmp_path / "logs")
    proposer = orchestrator = None
    try:
        model_url = await start_fake_model(processes, free_port())
        monkeypatch.setenv("MIPRO_PROVIDER_OPENAI_BASE_URL", model_url)
        monkeypatch.setenv("MIPRO_PROVIDER_OPENAI_API_KEY", "fake")
        task_app_url = await processes.start_task_app(free_port(), env_key)
        proposer = ProposerServer(settings)
        await proposer.start()
        orchestrator = OrchestratorServer(settings)
        await orchestrator.start()
        yield {"grpc": f"127.0.0.1:{orchestrator.grpc_port}", "api_key": api_key,
               "env_key": env_key, "proposer_token": settings.proposer_token,
               "task_app_url": task_app_url, "metrics_port": orchestrator.metrics_port}
    finally:
        if orchestrator is not None:
            await orchestrator.stop(1)
        if proposer is not None:
            await proposer.stop(1)
        await processes.stop()


async def _run_job(where: dict[str, Any], **mipro: Any) -> dict[str, Any]:
    job = documented_job(where["task_app_url"])
    job["policy_optimization"]["mipro"].update(mipro)
    metadata = (("authorization", f"Bearer {where['api_key']}"),)
    async with grpc.aio.insecure_channel(where["grpc"]) as channel:
        keys = jobs_pb2_grpc.EnvironmentKeyServiceStub(channel)
        await keys.CreateEnvironmentKey(jobs_pb2.CreateEnvironmentKeyRequest(
            name="ENVIRONMENT_API_KEY", value=where["env_key"]), metadata=metadata)
        jobs = jobs_pb2_grpc.JobServiceStub(channel)
        created = await jobs.CreateJob(ParseDict(job, jobs_pb2.CreateJobRequest()),
                                       metadata=metadata)
        deadline = time.monotonic() + 120
        while True:
            got = MessageToDict(await jobs.GetJob(jobs_pb2.GetJobRequest(
                job_id=created.job_id), metadata=metadata), preserving_proto_field_name=True)
            if got["status"] in ("succeeded", "failed", "cancelled"):
                return got
            assert time.monotonic() < deadline, f"job still {got['status']}"
            await asyncio.sleep(0.2)


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    span_id = parent.context.span_id
    return [s for s in spans if s.parent is not None and s.parent.span_id == span_id]


async def test_one_trace_per_job_with_phases_rollouts_and_model_calls(
        spans: InMemorySpanExporter, in_process: dict[str, Any]) -> None:
    job = await _run_job(in_process, bootstrap_train_seeds=[0, 1], val_seeds=[100, 101, 102],
                         num_candidates=3)
    assert job["status"] == "succeeded", job.get("error")
    finished = list(spans.get_finished_spans())
    trace_id = _tracing.job_trace_id(job["job_id"])
    ours = [s for s in finished if s.context.trace_id == trace_id]
    # The proposer service's spans joined the job's trace through gRPC metadata.
    assert {s.resource.attributes["service.name"] for s in ours} == {"mipro-test"}

    (root,) = [s for s in ours if s.name == "job"]
    assert root.parent is None and root.attributes["mipro.job_id"] == job["job_id"]
    assert root.attributes["mipro.status"] == "succeeded"
    phases = sorted(_children(ours, root), key=lambda s: s.start_time or 0)
    names = [p.name.removeprefix("phase ") for p in phases]
    # Proposal rounds alternate with the screening of their candidates.
    assert names[:3] == ["preflight", "bootstrap", "propose"] and names[-1] == "evaluate"
    assert set(names[3:]) == {"propose", "evaluate"}
    assert all(a.end_time is not None and b.start_time is not None
               and a.end_time <= b.start_time for a, b in zip(phases, phases[1:], strict=False))
    # Every rollout hangs under a phase, and the task app's one model call per rollout hangs
    # under its rollout: the interceptor derived the parent from the rollout's token.
    rollouts = [s for s in ours if s.name == "rollout"]
    counted = int(job.get("rollouts_completed", 0)) + int(job.get("rollouts_failed", 0))
    assert len(rollouts) == counted
    phase_ids = {p.context.span_id for p in phases}
    assert all(r.parent is not None and r.parent.span_id in phase_ids for r in rollouts)
    by_phase = Counter(r.attributes["mipro.phase"] for r in rollouts)
    assert by_phase["bootstrap"] == 2
    for rollout in rollouts:
        (call,) = _children(ours, rollout)
        assert call.name == "chat gpt-4o-mini"
        assert call.attributes["mipro.rollout_id"] == rollout.attributes["mipro.rollout_id"]
        assert call.attributes["gen_ai.usage.input_tokens"] > 0
    policy_calls = [s for s in ours if s.name.startswith("chat ")
                    and "mipro.rollout_id" in s.attributes]
    assert len(policy_calls) == len(rollouts)
    # Each proposal round: the orchestrator's call, the proposer's server span under it,
    # and one model call per candidate asked for under that (the first round also writes the
    # job's dataset summary, in one more call).
    proposes = [s for s in ours if s.name == "propose"]
    assert len(proposes) == names.count("propose")
    assert proposes and all(p.parent is not None and p.parent.span_id in phase_ids
                            for p in proposes)
    for propose in proposes:
        (server,) = _children(ours, propose)
        assert server.name == "ProposeInstructions"
        calls = _children(ours, server)
        purposes = Counter(c.attributes["mipro.purpose"] for c in calls)
        assert purposes["instructions"] == propose.attributes["mipro.candidates_asked"]
        assert purposes["dataset_summary"] == (1 if propose is proposes[0] else 0)
        assert all(c.name == "chat gpt-4o-mini" for c in calls)
    # Nothing secret in any attribute.
    text = json.dumps([dict(s.attributes or {}) for s in finished], default=str)
    for secret in ("env_key", "api_key", "proposer_token"):
        assert in_process[secret] not in text, secret
    # `MIPRO_METRICS_PORT=0` served /metrics on a free port (this process's registry, which
    # other in-process tests may have counted into too).
    async with httpx.AsyncClient(timeout=10) as client:
        samples = await _scrape(client, in_process["metrics_port"])
    assert _total(samples, "mipro_rollouts_total") >= counted


async def test_the_rollout_request_carries_traceparent(spans: InMemorySpanExporter) -> None:
    seen: list[str] = []

    async def rollout(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent", ""))
        return web.json_response({"metrics": {"outcome_reward": 1.0}})

    app = web.Application()
    app.router.add_post("/rollout", rollout)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        span = _tracing.start_span("rollout")
        header = _tracing.traceparent(span)
        async with aiohttp.ClientSession() as http:
            import random
            client = TaskAppClient(f"http://127.0.0.1:{port}", "k", http=http,
                                   retry=RetryPolicy(), rng=random.Random(0))
            outcome = await client.rollout(RolloutCall(
                rollout_id="r", seed=0, candidate_index=0, inference_url="http://x/v1/t",
                model="m", provider="p", timeout_seconds=5, traceparent=header))
        assert outcome.reward == 1.0
        assert span is not None
        context = span.get_span_context()
        assert seen == [f"00-{context.trace_id:032x}-{context.span_id:016x}-01"]
    finally:
        await runner.cleanup()


def test_log_lines_carry_the_current_trace_id(spans: InMemorySpanExporter) -> None:
    event: dict[str, Any] = {"event": "x"}
    assert add_trace_ids(None, "info", dict(event)) == event  # no span: nothing added
    with _tracing.span("job") as span:
        assert span is not None
        with structlog.contextvars.bound_contextvars(job_id="pl_1", rollout_id="pl_1_v0s1"):
            merged = structlog.contextvars.merge_contextvars(None, "info", dict(event))
            line = add_trace_ids(None, "info", merged)
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert (line["job_id"], line["rollout_id"]) == ("pl_1", "pl_1_v0s1")


def test_a_logged_exception_keeps_its_traceback_in_json_logs() -> None:
    """What an operator reads when a job crashes: the JSON line names the job and carries
    the traceback (a process of its own: logging is configured process-wide)."""
    code = ("import structlog\nfrom mipro._logging import configure_logging\n"
            "configure_logging('orchestrator', fmt='json')\n"
            "try:\n    {}['missing']\nexcept KeyError:\n"
            "    structlog.get_logger().exception('job crashed', job_id='pl_1')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert (line["event"], line["job_id"], line["level"]) == ("job crashed", "pl_1", "error")
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].rstrip().endswith("KeyError: 'missing'")


def test_tracing_is_off_unless_configured() -> None:
    assert not _tracing.tracing_wanted(Settings.from_env({}), {})
    assert _tracing.tracing_wanted(Settings.from_env({}),
                                   {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert not _tracing.tracing_wanted(Settings.from_env({"MIPRO_TRACING": "false"}),
                                       {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"})
    assert _tracing.tracing_wanted(Settings.from_env({"MIPRO_TRACING": "true"}), {})
    assert _tracing.start_span("job") is None  # off: no span is made at all


# -- the dashboard -------------------------------------------------------------------------------

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "mipro.json"
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def test_the_dashboard_queries_only_metrics_we_export() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from mipro import _metrics

    families = [family for metric in vars(_metrics).values()
                if isinstance(metric, MetricWrapperBase) for family in metric.describe()]
    exported = {f.name + suffix for f in families for suffix in _SUFFIXES[f.type]}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bmipro_[a-z_]+", expr)}
    assert used <= exported, used - exported
    # Every metric we export is on the dashboard.
    shown = {f.name for f in families if any(f.name + s in used for s in _SUFFIXES[f.type])}
    assert shown == {f.name for f in families}
    assert all(re.search(r"\b(mipro|envoy|process)_", e) for e in exprs)
