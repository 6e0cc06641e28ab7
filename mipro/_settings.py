"""The one typed settings object, read from the environment.

Every process of the stack (orchestrator, proposer service, gateway launcher, CLI) reads its
configuration through `Settings.from_env()`. Each field documents its variable and default;
the README's settings table lists the same.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """A setting's value is malformed; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not 0 <= value <= 65535 and name.endswith("_PORT"):
        raise SettingsError(f"{name} must be a port number (0-65535), got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Configuration of the MIPRO backend processes."""

    #: `MIPRO_HOST`: the address every server binds to. Default `127.0.0.1`.
    host: str = "127.0.0.1"
    #: `MIPRO_GATEWAY_PORT`: the Envoy gateway's REST port. Default 8080.
    gateway_port: int = 8080
    #: `MIPRO_GATEWAY_ADMIN_PORT`: Envoy's admin port (loopback only). Default 9901.
    gateway_admin_port: int = 9901
    #: `MIPRO_ORCHESTRATOR_PORT`: the orchestrator's gRPC port. Default 50051.
    orchestrator_port: int = 50051
    #: `MIPRO_INTERCEPTOR_PORT`: the orchestrator's HTTP port for the interceptor. Default 8081.
    interceptor_port: int = 8081
    #: `MIPRO_PROPOSER_PORT`: the proposer service's gRPC port. Default 50061.
    proposer_port: int = 50061
    #: `MIPRO_PROPOSER_ADDRESS`: where the orchestrator reaches the proposer service.
    #: Default `<MIPRO_HOST>:<MIPRO_PROPOSER_PORT>`.
    proposer_address: str = ""
    #: `MIPRO_PUBLIC_BASE_URL`: the backend's URL as task apps reach it; `inference_url`s are
    #: built from it. Default `http://<MIPRO_HOST>:<MIPRO_GATEWAY_PORT>` (the gateway).
    public_base_url: str = ""
    #: `MIPRO_DATA_DIR`: where the SQLite job store lives. Default `./.mipro`.
    data_dir: Path = field(default_factory=lambda: Path(".mipro"))
    #: `MIPRO_API_KEYS`: comma-separated API keys accepted by the job API.
    api_keys: tuple[str, ...] = ()
    #: `MIPRO_MAX_RUNNING_JOBS`: jobs run at once per orchestrator; more wait `queued`. Default 4.
    max_running_jobs: int = 4
    #: `MIPRO_LOG_LEVEL`: `debug`, `info`, `warning` or `error`. Default `info`.
    log_level: str = "info"
    #: `MIPRO_LOG_FORMAT`: `json`, `console`, or `auto` (console on a terminal). Default `auto`.
    log_format: str = "auto"
    #: `MIPRO_PRICES_FILE`: a JSON file of model prices that override the built-in table.
    prices_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Reads every setting from `env` (default: the process environment)."""
        env = os.environ if env is None else env
        host = env.get("MIPRO_HOST") or cls.host
        gateway_port = _int(env, "MIPRO_GATEWAY_PORT", cls.gateway_port)
        proposer_port = _int(env, "MIPRO_PROPOSER_PORT", cls.proposer_port)
        keys = tuple(k.strip() for k in env.get("MIPRO_API_KEYS", "").split(",") if k.strip())
        log_format = env.get("MIPRO_LOG_FORMAT", "auto").lower()
        if log_format not in ("json", "console", "auto"):
            raise SettingsError(
                f"MIPRO_LOG_FORMAT must be json, console or auto, got {log_format!r}")
        max_running = _int(env, "MIPRO_MAX_RUNNING_JOBS", cls.max_running_jobs)
        if max_running < 1:
            raise SettingsError(f"MIPRO_MAX_RUNNING_JOBS must be at least 1, got {max_running}")
        return cls(
            host=host,
            gateway_port=gateway_port,
            gateway_admin_port=_int(env, "MIPRO_GATEWAY_ADMIN_PORT", cls.gateway_admin_port),
            orchestrator_port=_int(env, "MIPRO_ORCHESTRATOR_PORT", cls.orchestrator_port),
            interceptor_port=_int(env, "MIPRO_INTERCEPTOR_PORT", cls.interceptor_port),
            proposer_port=proposer_port,
            proposer_address=env.get("MIPRO_PROPOSER_ADDRESS") or f"{host}:{proposer_port}",
            public_base_url=(
                env.get("MIPRO_PUBLIC_BASE_URL") or f"http://{host}:{gateway_port}"
            ).rstrip("/"),
            data_dir=Path(env.get("MIPRO_DATA_DIR") or ".mipro"),
            api_keys=keys,
            max_running_jobs=max_running,
            log_level=env.get("MIPRO_LOG_LEVEL", "info").lower(),
            log_format=log_format,
            prices_file=Path(env["MIPRO_PRICES_FILE"]) if env.get("MIPRO_PRICES_FILE") else None,
        )

    @property
    def database_path(self) -> Path:
        """The SQLite file of the job store."""
        return self.data_dir / "mipro.db"
