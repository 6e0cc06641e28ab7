"""The orchestrator process: the public gRPC API and the interceptor's HTTP endpoint.

`OrchestratorServer` owns the lifecycle of both servers, the job store, the job manager and
the proposer client: `await start()`, then `await stop(grace)`. Ports may be 0 (tests); the
bound ones are in `grpc_port` and `interceptor_port`.

`MIPRO_ROLES` picks what the process does (README "Running at scale"): `api` registers the
job services, `worker` runs jobs (in process, or as a Temporal worker when
`MIPRO_TEMPORAL_ADDRESS` is set), `interceptor` serves `/v1`. gRPC health and reflection
are served in every role. Only the all-in-one embedded process keeps open rollouts in
memory; every other arrangement keeps them in the store (`_rollout_book.py`).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
import structlog
import uvicorn

from mipro import _metrics
from mipro._grpc import add_health_and_reflection, mark_not_serving, mark_serving
from mipro._pricing import PriceTable
from mipro._settings import Settings
from mipro.v1 import jobs_pb2, jobs_pb2_grpc

from ._api_loop import ApiLoop, OnLoop
from ._auth import Authenticator
from ._exchanges import ExchangeLedger
from ._grpc_service import (
    EnvironmentKeyServicer,
    JobServicer,
    OfflineJobServicer,
    SynthCompatServicer,
    SynthEventStreamServicer,
)
from ._interceptor import Interceptor
from ._jobs import JobManager, TenantLimits
from ._proposer_client import ProposerCallPolicy, ProposerClient
from ._rollout_book import RolloutBook, StoreBook
from ._secrets import EnvKeyVault
from ._ssrf import AddressPolicy
from ._store import JobStore
from ._store_factory import make_store
from ._store_sqlite import SqliteJobStore
from ._tenants import TenantWatch, ensure_bootstrap_tenants, load_pepper
from ._tokens import RolloutTokens

log = structlog.get_logger(__name__)

SERVICE_NAMES = (
    jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    jobs_pb2.DESCRIPTOR.services_by_name["EnvironmentKeyService"].full_name,
    jobs_pb2.DESCRIPTOR.services_by_name["SynthCompatService"].full_name,
    jobs_pb2.DESCRIPTOR.services_by_name["SynthEventStreamService"].full_name,
    jobs_pb2.DESCRIPTOR.services_by_name["OfflineJobService"].full_name,
)


class OrchestratorServer:
    """Runs the job API (gRPC) and the interceptor (HTTP) in one event loop."""

    def __init__(self, settings: Settings, *, store: JobStore | None = None) -> None:
        if not settings.secrets_keys:
            raise ValueError("MIPRO_SECRETS_KEY is unset: the orchestrator needs a server key "
                             "to encrypt environment keys (base64 of 32 random bytes; see "
                             "README \"Environment keys\")")
        vault = EnvKeyVault(settings.secrets_keys[0], settings.secrets_keys[1:])
        self._settings = settings
        self._store = store or make_store(settings, vault=vault)
        self._ledger = ExchangeLedger(
            max_calls_per_rollout=settings.interceptor_max_calls_per_rollout)
        prices = PriceTable.load(settings.prices_file)
        _metrics.allow_models([*prices.per_million, *settings.metrics_models])
        self._metrics: _metrics.MetricsEndpoint | None = None
        self._roles = frozenset(settings.roles)
        #: Open rollouts: in memory for the all-in-one process, else in the store.
        self._book: ExchangeLedger | RolloutBook = self._ledger if settings.all_in_one else \
            StoreBook(self._store, prices=prices,
                      max_calls_per_rollout=settings.interceptor_max_calls_per_rollout)
        self._worker: Any = None
        self._worker_task: asyncio.Task[None] | None = None
        self._worker_activities: Any = None
        tokens = RolloutTokens(settings.interceptor_token_key)
        self._proposer = ProposerClient(settings.proposer_address,
                                        ProposerCallPolicy.from_settings(settings),
                                        token=settings.proposer_token)
        self._interceptor = Interceptor(self._book,
                                        provider_timeout=settings.provider_timeout_seconds,
                                        provider_max_retries=settings.provider_max_retries,
                                        provider_connect_timeout=(
                                            settings.provider_connect_timeout_seconds),
                                        tokens=tokens,
                                        max_body_bytes=settings.interceptor_max_body_bytes,
                                        default_max_tokens=settings.interceptor_default_max_tokens,
                                        prices=prices)
        self._jobs = JobManager(self._store, self._book, self._proposer,
                                public_base_url=settings.public_base_url,
                                max_running_jobs=settings.max_running_jobs,
                                prices=prices,
                                task_app_retry=settings.task_app_retry_policy,
                                task_app_timeout=settings.task_app_timeout_seconds,
                                summary_flush_seconds=settings.summary_flush_ms / 1000,
                                stream_poll_seconds=settings.event_stream_poll_seconds,
                                tenant_limits=TenantLimits(
                                    max_running_jobs=settings.tenant_max_running_jobs,
                                    max_queued_jobs=settings.tenant_max_queued_jobs,
                                    max_live_streams=settings.tenant_max_live_streams,
                                    max_seeds=settings.tenant_max_seeds,
                                    max_candidates=settings.tenant_max_candidates),
                                vault=vault,
                                address_policy=AddressPolicy(settings.task_app_allow),
                                task_app_max_response_bytes=settings.task_app_max_response_bytes,
                                tokens=tokens)
        # The public gRPC API runs on its own loop and thread (`_api_loop.py`); the job
        # manager and the store stay on this one, and the servicers reach them through
        # `OnLoop`. A gRPC server binds to the loop it is made on, so it is made there.
        self._api = ApiLoop()
        main_loop = asyncio.get_running_loop()
        jobs_api: Any = OnLoop(self._jobs, main_loop)
        self._grpc = self._api.run_sync(grpc.aio.server)
        self._health = add_health_and_reflection(self._grpc, SERVICE_NAMES)
        pepper, made = load_pepper(settings)
        if made is not None:
            log.warning("made an API-key pepper in the data directory; set "
                        "MIPRO_API_KEY_PEPPER outside development", path=str(made))
        # The API's key checks read the store from the API's loop where the store allows it:
        # SQLite's connection (aiosqlite) answers the loop that asks. Postgres' pool belongs
        # to the main loop, so there they are read on it, waiting for its turns (450 ms with
        # 20 jobs running). `keep_fresh` re-reads them in the background either way.
        store_api: Any = self._store if isinstance(self._store, SqliteJobStore) else OnLoop(
            self._store, main_loop)
        auth = Authenticator(settings.api_keys, store=store_api,
                             pepper=pepper, cache_seconds=settings.api_key_cache_ms / 1000)
        self._auth = auth
        self._auth_refresh: asyncio.Task[None] | None = None
        self._tenant_watch = TenantWatch(self._store, self._jobs.cancel,
                                         interval=settings.tenant_check_seconds)
        if "api" in self._roles:
            jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(jobs_api, auth),
                                                           self._grpc)
            jobs_pb2_grpc.add_EnvironmentKeyServiceServicer_to_server(
                EnvironmentKeyServicer(jobs_api, auth), self._grpc)
            jobs_pb2_grpc.add_SynthCompatServiceServicer_to_server(
                SynthCompatServicer(jobs_api, auth), self._grpc)
            jobs_pb2_grpc.add_SynthEventStreamServiceServicer_to_server(
                SynthEventStreamServicer(jobs_api, auth), self._grpc)
            jobs_pb2_grpc.add_OfflineJobServiceServicer_to_server(
                OfflineJobServicer(jobs_api, auth), self._grpc)
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.grpc_port = 0
        self.interceptor_port = 0
        #: The bound `/metrics` port (`MIPRO_METRICS_PORT`), 0 when there is no endpoint.
        self.metrics_port = 0

    async def start(self) -> None:
        settings = self._settings
        await self._store.open()
        if settings.temporal_address:
            await self._start_temporal()
        if "api" in self._roles:
            await ensure_bootstrap_tenants(self._store, settings.api_keys)
            await self._jobs.start()
            self._tenant_watch.start()
        address = f"{settings.orchestrator_host}:{settings.orchestrator_port}"
        self.grpc_port = self._api.run_sync(lambda: self._grpc.add_insecure_port(address))
        if self.grpc_port == 0:
            raise OSError(f"cannot bind gRPC to {address}")
        await self._api.call(self._grpc.start)
        if "api" in self._roles:  # keys re-read in the background: no call waits for them
            self._auth_refresh = self._api.run_sync(
                lambda: self._api.loop.create_task(self._auth.keep_fresh()))
        if "interceptor" in self._roles:
            await self._start_interceptor()
        self._metrics = _metrics.serve_metrics(settings.metrics_bind_host, settings.metrics_port,
                                               component="orchestrator")
        self.metrics_port = self._metrics.port if self._metrics else 0
        # The job services are SERVING only where they are registered (the api role).
        await self._api.call(mark_serving, self._health,
                             SERVICE_NAMES if "api" in self._roles else ())
        log.info("orchestrator started", grpc_port=self.grpc_port,
                 interceptor_port=self.interceptor_port, data_dir=str(settings.data_dir),
                 proposer=settings.proposer_address, public_base_url=settings.public_base_url,
                 roles=",".join(settings.roles),
                 host="temporal" if settings.temporal_address else "embedded")

    async def _start_temporal(self) -> None:
        """Connects to Temporal: the API starts workflows there, a worker runs them."""
        from ._temporal_client import TemporalJobs, connect
        from ._temporal_worker import WorkerActivities, make_worker

        settings = self._settings
        client = await connect(settings.temporal_address, settings.temporal_namespace)
        if "api" in self._roles:
            self._jobs.use_remote(TemporalJobs(
                client, task_queue=settings.temporal_task_queue,
                heartbeat_seconds=settings.temporal_heartbeat_seconds,
                batches_per_run=settings.temporal_batches_per_run))
        if "worker" in self._roles:
            assert isinstance(self._book, RolloutBook)
            self._worker_activities = WorkerActivities(self._jobs, self._store, self._book,
                                                       client=client)
            self._worker = make_worker(client, settings.temporal_task_queue,
                                       self._worker_activities,
                                       max_concurrent_activities=settings.max_running_jobs)
            self._worker_task = asyncio.create_task(self._worker.run(), name="temporal-worker")

    async def _start_interceptor(self) -> None:
        settings = self._settings
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.interceptor_host, settings.interceptor_port))
        self.interceptor_port = sock.getsockname()[1]
        # httptools (C) parses HTTP/1.1 several times faster than h11: the interceptor is on
        # the path of every model call.
        config = uvicorn.Config(self._interceptor.app, log_config=None, access_log=False,
                                lifespan="off", http="httptools", proxy_headers=False,
                                interface="asgi3",
                                timeout_keep_alive=settings.interceptor_keep_alive_seconds)
        self._http = uvicorn.Server(config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()
            await asyncio.sleep(0.01)

    async def stop(self, grace: float = 5.0) -> None:
        await self._api.call(mark_not_serving, self._health, SERVICE_NAMES)
        await self._tenant_watch.stop()
        if self._worker is not None:
            await self._worker.shutdown()
            await asyncio.gather(*(t for t in (self._worker_task,) if t is not None),
                                 return_exceptions=True)
            await self._worker_activities.close()
        await self._jobs.stop()
        await self._api.call(self._grpc.stop, grace)
        if self._auth_refresh is not None:
            self._api.loop.call_soon_threadsafe(self._auth_refresh.cancel)
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        await self._interceptor.close()
        await self._proposer.close()
        await self._store.close()
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        self._api.stop()
        log.info("orchestrator stopped")

    async def wait_for_termination(self) -> None:
        await self._api.call(self._grpc.wait_for_termination)
