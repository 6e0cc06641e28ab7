"""The one typed settings object, read from the environment.

Every process of the stack (orchestrator, proposer service, gateway launcher, CLI) reads its
configuration through `Settings.from_env()`: variable `MIPRO_<FIELD>` sets field `<field>`,
an empty variable counts as unset, and a malformed value raises `SettingsError` naming the
variable. Each field documents its variable and default; the README's settings table lists
the same. Every timeout, retry count and interval of the processes is here.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ._retry import RetryPolicy

ENV_PREFIX = "MIPRO_"


class SettingsError(ValueError):
    """A setting's value is malformed; the message names the variable."""


class _Must:
    """What a value of the annotated field must be, for error messages."""

    def __init__(self, text: str) -> None:
        self.text = text


Port = Annotated[int, Field(ge=0, le=65535), _Must("a port number (0-65535)")]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False), _Must("a number of seconds above 0")]
Backoff = Annotated[float, Field(ge=0, allow_inf_nan=False),
                    _Must("a number of seconds, 0 or more")]
WholeSeconds = Annotated[int, Field(ge=1), _Must("a whole number of seconds, at least 1")]
Millis = Annotated[int, Field(ge=1), _Must("a whole number of milliseconds, at least 1")]
Attempts = Annotated[int, Field(ge=1, le=10), _Must("a whole number of attempts (1-10)")]
Retries = Annotated[int, Field(ge=0, le=10), _Must("a whole number of retries (0-10)")]
#: gRPC treats a `maxAttempts` above 5 as 5 (gRFC A6), so larger values would be a lie.
#: A port that may be left unset (the endpoint is then off).
OptionalPort = Annotated[int | None, Field(ge=0, le=65535),
                         _Must("a port number (0-65535), or unset")]
GrpcAttempts = Annotated[int, Field(ge=1, le=5), _Must("a whole number of attempts (1-5)")]


#: The environment `Settings.from_env` reads; unset, the process environment.
_ENVIRON: ContextVar[Mapping[str, Any] | None] = ContextVar("mipro_settings_environ",
                                                            default=None)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading `_ENVIRON` (else os.environ)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        environ = _ENVIRON.get()
        environ = os.environ if environ is None else environ
        # Compose files and tests may hold numbers; the source expects strings.
        self._environ = {k: str(v) for k, v in environ.items() if v is not None}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {(k if self.case_sensitive else k.lower()): v for k, v in self._environ.items()
                if not (self.env_ignore_empty and v == "")}


class Settings(BaseSettings):
    """Configuration of the MIPRO backend processes."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore",
                                      env_ignore_empty=True, validate_default=True)

    # -- addresses --------------------------------------------------------------------------
    #: `MIPRO_HOST`: the address a server binds when its own `MIPRO_<SERVICE>_HOST` is unset.
    #: Default `127.0.0.1`.
    host: str = "127.0.0.1"
    #: `MIPRO_GATEWAY_PORT`: the Envoy gateway's REST port. Default 8080.
    gateway_port: Port = 8080
    #: `MIPRO_GATEWAY_ADMIN_PORT`: Envoy's admin port (loopback only). Default 9901.
    gateway_admin_port: Port = 9901
    #: `MIPRO_INFERENCE_GATEWAY`: whether `mipro up` (and `mipro demo`) run the inference
    #: gateway, a second Envoy that carries only the task apps' model calls (`/v1/`) to the
    #: interceptor, so that on one host the API's calls are not queued behind theirs; the
    #: public base URL then defaults to it. `false`: one gateway carries both. Default true.
    inference_gateway: bool = True
    #: `MIPRO_INFERENCE_GATEWAY_PORT`: the inference gateway's port (on `MIPRO_GATEWAY_HOST`).
    #: Default 8082.
    inference_gateway_port: Port = 8082
    #: `MIPRO_INFERENCE_GATEWAY_ADMIN_PORT`: its Envoy's admin port (loopback only).
    #: Default 9903.
    inference_gateway_admin_port: Port = 9903
    #: `MIPRO_ORCHESTRATOR_PORT`: the orchestrator's gRPC port. Default 50051.
    orchestrator_port: Port = 50051
    #: `MIPRO_INTERCEPTOR_PORT`: the orchestrator's HTTP port for the interceptor. Default 8081.
    interceptor_port: Port = 8081
    #: `MIPRO_PROPOSER_PORT`: the proposer service's gRPC port. Default 50061.
    proposer_port: Port = 50061
    #: `MIPRO_PROPOSER_ADDRESS`: where the orchestrator reaches the proposer service.
    #: Default `<MIPRO_HOST>:<MIPRO_PROPOSER_PORT>`.
    proposer_address: str = ""
    #: `MIPRO_PUBLIC_BASE_URL`: the backend's URL as task apps reach it; `inference_url`s are
    #: built from it. Default `http://<MIPRO_GATEWAY_HOST>:<MIPRO_INFERENCE_GATEWAY_PORT>` (the
    #: inference gateway), or `http://<MIPRO_GATEWAY_HOST>:<MIPRO_GATEWAY_PORT>` (the gateway)
    #: when `MIPRO_INFERENCE_GATEWAY` is false. Both gateways route `/v1/` to the interceptor.
    public_base_url: str = ""

    # -- data, keys, logs -------------------------------------------------------------------
    #: `MIPRO_DATA_DIR`: where the SQLite job store lives. Default `./.mipro`.
    data_dir: Path = Path(".mipro")
    #: `MIPRO_API_KEYS`: comma-separated API keys accepted by the job API.
    api_keys: Annotated[tuple[str, ...], NoDecode, _Must("comma-separated keys")] = ()
    #: `MIPRO_API_KEY_PEPPER`: the server secret stored API keys are hashed with (HMAC-SHA256);
    #: at least 16 characters. Default: the file `api_key_pepper` in the data directory, made
    #: on first use (development); changing it invalidates every stored key.
    api_key_pepper: Annotated[str, Field(repr=False),
                              _Must("at least 16 characters (or unset)")] = ""
    #: `MIPRO_API_KEY_CACHE_MS`: how long the orchestrator reuses what it read of stored keys
    #: and tenants; a revoke or disable takes effect within it. 0-1000, default 1000.
    api_key_cache_ms: Annotated[int, Field(ge=0, le=1000),
                                _Must("a whole number of milliseconds (0-1000)")] = 1000
    #: `MIPRO_TENANT_CHECK_SECONDS`: how often the orchestrator cancels the queued and running
    #: jobs of disabled tenants. Default 1.
    tenant_check_seconds: Seconds = 1.0
    #: `MIPRO_MAX_RUNNING_JOBS`: jobs run at once per orchestrator; more wait `queued`. Default 4.
    max_running_jobs: Annotated[int, Field(ge=1), _Must("a whole number, at least 1")] = 4
    #: `MIPRO_LOG_LEVEL`: `debug`, `info`, `warning` or `error`. Default `info`.
    log_level: Annotated[Literal["debug", "info", "warning", "error"],
                         _Must("debug, info, warning or error")] = "info"
    #: `MIPRO_LOG_FORMAT`: `json`, `console`, or `auto` (console on a terminal). Default `auto`.
    log_format: Annotated[Literal["json", "console", "auto"],
                          _Must("json, console or auto")] = "auto"
    #: `MIPRO_PRICES_FILE`: a JSON file of model prices that override the built-in table.
    prices_file: Path | None = None
    #: `MIPRO_SECRETS_KEY`: the server key (base64 of 32 random bytes) that encrypts
    #: environment keys at rest and opens sealed ones. Required by the orchestrator;
    #: `mipro up`, `mipro demo` and the tests make one in `<data dir>/secrets.key` if unset.
    secrets_key: Annotated[SecretStr | None, _Must("base64 of 32 bytes")] = None
    #: `MIPRO_SECRETS_KEY_PREVIOUS`: comma-separated earlier server keys, still accepted for
    #: decryption while stored keys are re-encrypted (see README "Environment keys").
    secrets_key_previous: Annotated[tuple[SecretStr, ...], NoDecode,
                                    _Must("comma-separated base64 keys of 32 bytes")] = ()

    # -- model providers (the proposer's and the interceptor's calls) -----------------------
    #: `MIPRO_PROVIDER_TIMEOUT_SECONDS`: the time limit of one attempt of a model call.
    #: Default 120.
    provider_timeout_seconds: Seconds = 120.0
    #: `MIPRO_PROVIDER_CONNECT_TIMEOUT_SECONDS`: the time limit of connecting to a provider.
    #: Default 10.
    provider_connect_timeout_seconds: Seconds = 10.0
    #: `MIPRO_PROVIDER_MAX_RETRIES`: retries of a failed model call (429, 5xx, timeouts, lost
    #: connections) by the openai SDK, which honours `Retry-After`. Default 3 (4 attempts).
    provider_max_retries: Retries = 3

    # -- the task app -----------------------------------------------------------------------
    #: `MIPRO_TASK_APP_TIMEOUT_SECONDS`: the time limit of the task app's `/health` and
    #: `/task_info`. Default 10.
    task_app_timeout_seconds: Seconds = 10.0
    #: `MIPRO_TASK_APP_RETRY_ATTEMPTS`: attempts of a rollout call that fails transiently
    #: (connection error, timeout, 429, 5xx), the first included. Default 3.
    task_app_retry_attempts: Attempts = 3
    #: `MIPRO_TASK_APP_RETRY_INITIAL_BACKOFF_SECONDS`: the wait before the second attempt;
    #: it doubles per attempt, with jitter. Default 0.5.
    task_app_retry_initial_backoff_seconds: Backoff = 0.5
    #: `MIPRO_TASK_APP_RETRY_MAX_BACKOFF_SECONDS`: the longest wait between attempts,
    #: `Retry-After` included. Default 20.
    task_app_retry_max_backoff_seconds: Backoff = 20.0

    # -- orchestrator -> proposer service (gRPC) --------------------------------------------
    #: `MIPRO_PROPOSER_DEADLINE_SECONDS`: the deadline of one proposal request, all its
    #: attempts and the wait for a restarting proposer service included. Default 300.
    proposer_deadline_seconds: Seconds = 300.0
    #: `MIPRO_PROPOSER_RETRY_ATTEMPTS`: attempts of a proposal request that ends UNAVAILABLE,
    #: the first included (gRPC's retry policy; at most 5). Default 5.
    proposer_retry_attempts: GrpcAttempts = 5
    #: `MIPRO_PROPOSER_RETRY_INITIAL_BACKOFF_SECONDS`: the largest wait before the second
    #: attempt (gRPC waits a random time up to it); it doubles per attempt. Default 1.
    proposer_retry_initial_backoff_seconds: Seconds = 1.0
    #: `MIPRO_PROPOSER_RETRY_MAX_BACKOFF_SECONDS`: the largest wait between attempts, and
    #: between reconnection attempts to a proposer service that is down. Default 10.
    proposer_retry_max_backoff_seconds: Seconds = 10.0

    # -- the proposer service's model calls -------------------------------------------------
    #: `MIPRO_PROPOSER_STRUCTURED_OUTPUT`: ask the proposer model for JSON
    #: (`response_format` with a JSON schema); a provider that refuses it is asked in plain
    #: text. Off suits models too small to write prose under a grammar (the demo turns it
    #: off for SmolLM2-135M; README, "The proposer"). Default true.
    proposer_structured_output: bool = True
    #: `MIPRO_PROPOSER_INSTRUCTIONS_PER_CALL`: instructions one proposal call asks for (1-16),
    #: each call under one tip. Default 1.
    proposer_instructions_per_call: Annotated[
        int, Field(ge=1, le=16), _Must("a whole number of instructions (1-16)")] = 1

    # -- orchestrator -----------------------------------------------------------------------
    #: `MIPRO_SHUTDOWN_GRACE_SECONDS`: on SIGTERM, how long the orchestrator and the proposer
    #: service let calls in flight finish. Default 5.
    shutdown_grace_seconds: Backoff = 5.0
    #: `MIPRO_EVENT_STREAM_POLL_SECONDS`: how often a live event stream re-reads the store
    #: when no new event woke it. Default 5.
    event_stream_poll_seconds: Seconds = 5.0
    #: `MIPRO_SUMMARY_FLUSH_MS`: how often a running job's summary is written to the store,
    #: at most. Default 250.
    summary_flush_ms: Millis = 250
    #: `MIPRO_STORE_BUSY_TIMEOUT_MS`: how long a store write waits for a locked SQLite
    #: database. Default 5000.
    store_busy_timeout_ms: Millis = 5000
    #: `MIPRO_DATABASE_URL`: the job store. `sqlite:///PATH` (relative to the working
    #: directory; `sqlite:////abs/path` for an absolute one) or `postgresql://user:password@
    #: host:port/dbname` (any libpq URI: `?sslmode=require`, `?host=/run/postgresql` for a
    #: socket). Default `sqlite:///<MIPRO_DATA_DIR>/mipro.db`. See README "Job store".
    database_url: Annotated[str, Field(repr=False),
                            _Must("sqlite:///PATH or postgresql://USER@HOST/DB")] = ""
    #: `MIPRO_DATABASE_POOL_SIZE`: the most connections one process keeps to a Postgres job
    #: store. Default 10.
    database_pool_size: Annotated[int, Field(ge=1, le=1000),
                                  _Must("a whole number of connections (1-1000)")] = 10
    #: `MIPRO_INTERCEPTOR_KEEP_ALIVE_SECONDS`: how long the interceptor keeps an idle HTTP
    #: connection open. Default 30.
    interceptor_keep_alive_seconds: WholeSeconds = 30

    # -- gateway ----------------------------------------------------------------------------
    #: `MIPRO_GATEWAY_API_TIMEOUT_SECONDS`: the gateway's time limit of a unary API call.
    #: Default 60.
    gateway_api_timeout_seconds: Seconds = 60.0
    #: `MIPRO_GATEWAY_INTERCEPTOR_TIMEOUT_SECONDS`: the gateway's time limit of a policy-model
    #: call through the interceptor. Default 300.
    gateway_interceptor_timeout_seconds: Seconds = 300.0

    # -- the process stack (`mipro up`, `mipro demo`, the tests) ----------------------------
    #: `MIPRO_STACK_READY_TIMEOUT_SECONDS`: how long a started service may take to become
    #: ready. Default 30.
    stack_ready_timeout_seconds: Seconds = 30.0
    #: `MIPRO_LOCAL_MODEL_READY_TIMEOUT_SECONDS`: the same for the real local model, which
    #: loads its weights first. Default 120.
    local_model_ready_timeout_seconds: Seconds = 120.0
    #: `MIPRO_STACK_STOP_GRACE_SECONDS`: how long a stopped service may take to exit after
    #: SIGTERM before it gets SIGKILL. Default 10.
    stack_stop_grace_seconds: Backoff = 10.0

    # -- bind addresses, internal services, gateway protections (issue 9) -------------------
    #: `MIPRO_GATEWAY_HOST`: the address the Envoy gateway binds, the one to publish.
    #: Default `MIPRO_HOST`.
    gateway_host: str = ""
    #: `MIPRO_ORCHESTRATOR_HOST`: the address the orchestrator's gRPC server binds (internal).
    #: Default `MIPRO_HOST`.
    orchestrator_host: str = ""
    #: `MIPRO_INTERCEPTOR_HOST`: the address the interceptor's HTTP server binds (internal:
    #: task apps reach it through the gateway's `/v1/`). Default `MIPRO_HOST`.
    interceptor_host: str = ""
    #: `MIPRO_PROPOSER_HOST`: the address the proposer service binds (internal).
    #: Default `MIPRO_HOST`.
    proposer_host: str = ""
    #: `MIPRO_PROPOSER_TOKEN`: the shared secret the orchestrator sends the proposer service
    #: (`authorization: Bearer` metadata); the proposer refuses to start without one. `mipro
    #: up`, `mipro demo` and the tests make one per run when unset.
    proposer_token: str = Field(default="", repr=False)
    #: `MIPRO_GATEWAY_REQUEST_HEADERS_TIMEOUT_SECONDS`: how long the gateway waits for a
    #: request's headers once its connection is open. Default 10.
    gateway_request_headers_timeout_seconds: Seconds = 10.0
    #: `MIPRO_GATEWAY_STREAM_IDLE_TIMEOUT_SECONDS`: the gateway closes a request that sends
    #: and receives nothing for this long (the live event streams excepted). Default 300.
    gateway_stream_idle_timeout_seconds: Seconds = 300.0
    #: `MIPRO_GATEWAY_RATE_LIMIT_PER_MINUTE`: job-API requests per minute per API key (the
    #: `Authorization` or `x-api-key` header), bursts included; beyond, 429. Default 600.
    gateway_rate_limit_per_minute: Annotated[int, Field(ge=1),
                                             _Must("a whole number, at least 1")] = 600
    #: `MIPRO_GATEWAY_INTERCEPTOR_MAX_BODY_BYTES`: the largest request body the gateway passes
    #: to the interceptor (`/v1/`); beyond, 413. Default 2097152 (2 MiB).
    gateway_interceptor_max_body_bytes: Annotated[int, Field(ge=1024),
                                                  _Must("a number of bytes, at least 1024")
                                                  ] = 2 * 1024 * 1024
    #: `MIPRO_GATEWAY_EXPOSE_GRPC_INTROSPECTION`: `true` lets gRPC reflection and health
    #: checking through the gateway; by default only the public services pass. Default false.
    gateway_expose_grpc_introspection: bool = False
    #: `MIPRO_GATEWAY_TLS_CERT_FILE`: a PEM certificate chain; with the key file, the gateway
    #: terminates TLS (HTTPS and gRPC over TLS) on its port. Default none (plain HTTP).
    gateway_tls_cert_file: Path | None = None
    #: `MIPRO_GATEWAY_TLS_KEY_FILE`: the PEM private key of `MIPRO_GATEWAY_TLS_CERT_FILE`.
    gateway_tls_key_file: Path | None = None

    # -- per-tenant limits (a tenant is a job's `owner`) ------------------------------------
    #: `MIPRO_TENANT_MAX_RUNNING_JOBS`: a tenant's jobs running at once; more wait `queued`,
    #: and free slots go round-robin across tenants. Default 2.
    tenant_max_running_jobs: Annotated[int, Field(ge=1), _Must("a whole number, at least 1")] = 2
    #: `MIPRO_TENANT_MAX_QUEUED_JOBS`: a tenant's jobs waiting `queued`; one more create is
    #: refused with 429. Default 20.
    tenant_max_queued_jobs: Annotated[int, Field(ge=0), _Must("a whole number, 0 or more")] = 20
    #: `MIPRO_TENANT_MAX_LIVE_STREAMS`: a tenant's open live event streams; one more is
    #: refused with 429. Default 16.
    tenant_max_live_streams: Annotated[int, Field(ge=1), _Must("a whole number, at least 1")] = 16
    #: `MIPRO_TENANT_MAX_SEEDS`: the seeds one job may name, all seed lists together; more is
    #: refused with 400 naming the field. Default 2000.
    tenant_max_seeds: Annotated[int, Field(ge=1), _Must("a whole number, at least 1")] = 2000
    #: `MIPRO_TENANT_MAX_CANDIDATES`: `num_candidates` one job may ask for; more is refused
    #: with 400. Default 64.
    tenant_max_candidates: Annotated[int, Field(ge=1), _Must("a whole number, at least 1")] = 64

    # -- safety: the interceptor's policy and where task apps may be ------------------------
    #: `MIPRO_TASK_APP_ALLOW`: comma-separated hosts, CIDRs, `loopback` or `private` that
    #: task apps may use besides public addresses (refused by default: loopback, private,
    #: link-local, CGNAT, metadata). `mipro up`, `mipro demo` and the tests set `loopback`.
    task_app_allow: Annotated[tuple[str, ...], NoDecode,
                              _Must("comma-separated hosts or CIDRs")] = ()
    #: `MIPRO_TASK_APP_MAX_RESPONSE_BYTES`: the longest task-app answer read. Default 4 MiB.
    task_app_max_response_bytes: Annotated[int, Field(ge=1024),
                                           _Must("a number of bytes, at least 1024")] = 4194304
    #: `MIPRO_INTERCEPTOR_TOKEN_KEY`: the secret that signs inference-URL tokens; every
    #: interceptor replica of one deployment needs the same one. Unset, each process makes a
    #: random one (tokens then die with the process, which a single orchestrator never minds).
    interceptor_token_key: str = Field(default="", repr=False)
    #: `MIPRO_INTERCEPTOR_MAX_BODY_BYTES`: the largest model-call body the interceptor reads;
    #: larger ones get 413. Default 2 MiB.
    interceptor_max_body_bytes: Annotated[int, Field(ge=1024),
                                          _Must("a number of bytes, at least 1024")] = 2097152
    #: `MIPRO_INTERCEPTOR_DEFAULT_MAX_TOKENS`: the completion-token cap of every model call
    #: of a job whose policy sets no `max_completion_tokens`. Default 4096.
    interceptor_default_max_tokens: Annotated[int, Field(ge=1),
                                              _Must("a whole number, at least 1")] = 4096
    #: `MIPRO_INTERCEPTOR_MAX_CALLS_PER_ROLLOUT`: model calls one rollout may make; more get
    #: 429. Default 32.
    interceptor_max_calls_per_rollout: Annotated[int, Field(ge=1),
                                                 _Must("a whole number, at least 1")] = 32

    # -- observability (README "Metrics and traces") -----------------------------------------
    #: `MIPRO_METRICS_HOST`: the address the `/metrics` endpoints bind. Default `MIPRO_HOST`.
    metrics_host: str = ""
    #: `MIPRO_METRICS_PORT`: the orchestrator process's Prometheus `/metrics` port (every
    #: role of the process on one endpoint); 0 picks a free port. Default unset: no endpoint.
    metrics_port: OptionalPort = None
    #: `MIPRO_PROPOSER_METRICS_PORT`: the proposer service's `/metrics` port; 0 picks a free
    #: port. Default unset: no endpoint.
    proposer_metrics_port: OptionalPort = None
    #: `MIPRO_GATEWAY_METRICS_PORT`: a gateway listener that serves only Envoy's
    #: `/stats/prometheus` (also as `/metrics`), on `MIPRO_GATEWAY_HOST`. Default unset: none.
    gateway_metrics_port: OptionalPort = None
    #: `MIPRO_METRICS_MODELS`: comma-separated model names that may be `model` label values
    #: besides those of the price table; any other model is counted as `other`.
    metrics_models: Annotated[tuple[str, ...], NoDecode, _Must("comma-separated names")] = ()
    #: `MIPRO_TRACING`: `true` exports OpenTelemetry traces over OTLP (the SDK reads the
    #: standard `OTEL_EXPORTER_OTLP_*` variables), `false` never. Default: on exactly when
    #: `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
    tracing: bool | None = None

    @property
    def metrics_bind_host(self) -> str:
        """The address the `/metrics` endpoints bind."""
        return self.metrics_host or self.host


    # -- scale out: process roles and the Temporal host (README "Running at scale") --------
    #: `MIPRO_ROLES`: what this orchestrator process does, comma-separated: `api` (the
    #: public gRPC services), `worker` (runs jobs), `interceptor` (the HTTP /v1 endpoint of
    #: task apps). Default all three: one process, as `mipro up` runs it. Without
    #: `MIPRO_TEMPORAL_ADDRESS`, `api` and `worker` go together (the embedded host runs a job
    #: in the process that accepted it).
    roles: Annotated[tuple[str, ...], NoDecode,
                     _Must("a comma-separated list of api, worker, interceptor")] = (
        "api", "worker", "interceptor")
    #: `MIPRO_TEMPORAL_ADDRESS`: a Temporal frontend (`host:port`); set, jobs run as Temporal
    #: workflows on every `worker` replica instead of in the process that accepted them.
    #: Default unset: the embedded host.
    temporal_address: str = ""
    #: `MIPRO_TEMPORAL_NAMESPACE`: the Temporal namespace of the job workflows. Default
    #: `default`.
    temporal_namespace: str = "default"
    #: `MIPRO_TEMPORAL_TASK_QUEUE`: the task queue job workflows and activities run on.
    #: Default `mipro-jobs`.
    temporal_task_queue: str = "mipro-jobs"
    #: `MIPRO_TEMPORAL_HEARTBEAT_SECONDS`: how long a batch of rollouts may go without a
    #: heartbeat before Temporal gives it to another worker replica. Default 15.
    temporal_heartbeat_seconds: Annotated[float, Field(gt=0, le=600),
                                          _Must("seconds, above 0 and at most 600")] = 15.0
    #: `MIPRO_TEMPORAL_BATCHES_PER_RUN`: batches of rollouts a job's workflow run executes
    #: before it continues as new (bounding its history). Default 20.
    temporal_batches_per_run: Annotated[int, Field(ge=1),
                                        _Must("a whole number, at least 1")] = 20

    @field_validator("roles", mode="before")
    @classmethod
    def _split_roles(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(r.strip().lower() for r in value.split(",") if r.strip())
        return value

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - {"api", "worker", "interceptor"})
        if unknown or not value:
            raise ValueError(f"names {', '.join(unknown) or 'no role'}; the roles are api, "
                             "worker and interceptor")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _roles_fit_the_host(self) -> Settings:
        roles = set(self.roles)
        if not self.temporal_address and ("api" in roles) != ("worker" in roles):
            raise ValueError("MIPRO_ROLES: without MIPRO_TEMPORAL_ADDRESS the api and worker "
                             "roles run together (the embedded host runs a job in the process "
                             "that accepted it)")
        if not self.all_in_one and not self.interceptor_token_key:
            raise ValueError("MIPRO_INTERCEPTOR_TOKEN_KEY is required with MIPRO_TEMPORAL_ADDRESS "
                             "or split MIPRO_ROLES: every replica verifies the same tokens")
        return self

    @property
    def all_in_one(self) -> bool:
        """One process with every role and the embedded host: the in-memory fast path."""
        return set(self.roles) == {"api", "worker", "interceptor"} and not self.temporal_address

    @field_validator("task_app_allow", "metrics_models", mode="before")
    @classmethod
    def _split_allow(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment; no dotenv or secrets files."""
        return init_settings, _MappingEnvSource(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        """Fills the addresses whose defaults are built from other settings."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        host = data.get("host") or cls.model_fields["host"].default
        # Each server's own address wins; `MIPRO_HOST` is the fallback of all of them.
        for name in ("gateway_host", "orchestrator_host", "interceptor_host", "proposer_host"):
            data[name] = data.get(name) or host
        if not data.get("proposer_address"):
            port = data.get("proposer_port", cls.model_fields["proposer_port"].default)
            data["proposer_address"] = f"{data['proposer_host']}:{port}"
        if not data.get("public_base_url"):
            gateway = ("inference_gateway_port" if _truthy(data.get(
                "inference_gateway", cls.model_fields["inference_gateway"].default))
                else "gateway_port")
            port = data.get(gateway, cls.model_fields[gateway].default)
            data["public_base_url"] = f"http://{data['gateway_host']}:{port}"
        return data

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("api_keys", "secrets_key_previous", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @field_validator("api_key_pepper")
    @classmethod
    def _pepper_length(cls, value: str) -> str:
        if value and len(value) < 16:
            raise ValueError("too short")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(_DATABASE_SCHEMES):
            raise ValueError("unknown scheme")
        if value.startswith("sqlite:") and not value.startswith("sqlite:///"):
            raise ValueError("no path after sqlite:///")
        return value

    @field_validator("secrets_key", "secrets_key_previous")
    @classmethod
    def _key_bytes(cls, value: Any) -> Any:
        for key in value if isinstance(value, tuple) else (value,):
            if key is not None:
                _decode_secrets_key(key.get_secret_value())
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Reads every setting from `env` (default: the process environment).

        Raises `SettingsError` naming the first malformed variable."""
        token = _ENVIRON.set(env)
        try:
            return cls()
        except ValidationError as error:
            raise SettingsError(_describe(error)) from None
        finally:
            _ENVIRON.reset(token)

    @property
    def database_path(self) -> Path:
        """The SQLite file of the job store (the default one when the URL is Postgres's)."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return self.data_dir / "mipro.db"

    @property
    def database_dialect(self) -> Literal["sqlite", "postgres"]:
        """Which kind of job store `database_url` names."""
        return "postgres" if self.database_url.startswith(("postgresql:", "postgres:")) \
            else "sqlite"

    @property
    def secrets_keys(self) -> tuple[bytes, ...]:
        """The server keys, current first (empty when `MIPRO_SECRETS_KEY` is unset)."""
        if self.secrets_key is None:
            return ()
        return tuple(_decode_secrets_key(k.get_secret_value())
                     for k in (self.secrets_key, *self.secrets_key_previous))

    @property
    def task_app_retry_policy(self) -> RetryPolicy:
        """How rollout calls to a task app are retried."""
        return RetryPolicy(max_attempts=self.task_app_retry_attempts,
                           initial_backoff=self.task_app_retry_initial_backoff_seconds,
                           max_backoff=self.task_app_retry_max_backoff_seconds)


_BOOL = TypeAdapter(bool)


def _truthy(value: Any) -> bool:
    """`value` read as the bool field it is for; a malformed one reads as true here, and the
    field's own validation then names it."""
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        return True


def _decode_secrets_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"decodes to {len(raw)} bytes, not 32")
    return raw


def variable_name(field: str) -> str:
    """The environment variable of settings field `field`."""
    return ENV_PREFIX + field.upper()


def _describe(error: ValidationError) -> str:
    """`MIPRO_X must be <what>, got <value>` for the first error of `error`."""
    first = error.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    if not field:  # a rule across settings: its message names them (never the input)
        return str(first["msg"]).removeprefix("Value error, ")
    info = Settings.model_fields.get(field)
    must = next((m.text for m in (info.metadata if info else ()) if isinstance(m, _Must)), None)
    reason = f"must be {must}" if must else first["msg"]
    if field in _SECRET_FIELDS:  # never echo a secret, not even a malformed one
        return f"{variable_name(field)} {reason} ({first['msg']})"
    return f"{variable_name(field)} {reason}, got {first['input']!r}"


#: Fields whose values an error message must not quote.
_SECRET_FIELDS = frozenset({"secrets_key", "secrets_key_previous", "database_url"})

#: The URL schemes `MIPRO_DATABASE_URL` accepts.
_DATABASE_SCHEMES = ("sqlite:", "postgresql://", "postgres://")
