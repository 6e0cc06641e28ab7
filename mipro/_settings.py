"""The one typed settings object, read from the environment.

Every process of the stack (orchestrator, proposer service, gateway launcher, CLI) reads its
configuration through `Settings.from_env()`: variable `MIPRO_<FIELD>` sets field `<field>`,
an empty variable counts as unset, and a malformed value raises `SettingsError` naming the
variable. Each field documents its variable and default; the README's settings table lists
the same. Every timeout, retry count and interval of the processes is here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
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
    #: `MIPRO_HOST`: the address every server binds to. Default `127.0.0.1`.
    host: str = "127.0.0.1"
    #: `MIPRO_GATEWAY_PORT`: the Envoy gateway's REST port. Default 8080.
    gateway_port: Port = 8080
    #: `MIPRO_GATEWAY_ADMIN_PORT`: Envoy's admin port (loopback only). Default 9901.
    gateway_admin_port: Port = 9901
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
    #: built from it. Default `http://<MIPRO_HOST>:<MIPRO_GATEWAY_PORT>` (the gateway).
    public_base_url: str = ""

    # -- data, keys, logs -------------------------------------------------------------------
    #: `MIPRO_DATA_DIR`: where the SQLite job store lives. Default `./.mipro`.
    data_dir: Path = Path(".mipro")
    #: `MIPRO_API_KEYS`: comma-separated API keys accepted by the job API.
    api_keys: Annotated[tuple[str, ...], NoDecode, _Must("comma-separated keys")] = ()
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

    @field_validator("task_app_allow", mode="before")
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
        if not data.get("proposer_address"):
            port = data.get("proposer_port", cls.model_fields["proposer_port"].default)
            data["proposer_address"] = f"{host}:{port}"
        if not data.get("public_base_url"):
            port = data.get("gateway_port", cls.model_fields["gateway_port"].default)
            data["public_base_url"] = f"http://{host}:{port}"
        return data

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
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
        """The SQLite file of the job store."""
        return self.data_dir / "mipro.db"

    @property
    def task_app_retry_policy(self) -> RetryPolicy:
        """How rollout calls to a task app are retried."""
        return RetryPolicy(max_attempts=self.task_app_retry_attempts,
                           initial_backoff=self.task_app_retry_initial_backoff_seconds,
                           max_backoff=self.task_app_retry_max_backoff_seconds)


def variable_name(field: str) -> str:
    """The environment variable of settings field `field`."""
    return ENV_PREFIX + field.upper()


def _describe(error: ValidationError) -> str:
    """`MIPRO_X must be <what>, got <value>` for the first error of `error`."""
    first = error.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    info = Settings.model_fields.get(field)
    must = next((m.text for m in (info.metadata if info else ()) if isinstance(m, _Must)), None)
    reason = f"must be {must}" if must else first["msg"]
    return f"{variable_name(field)} {reason}, got {first['input']!r}"
