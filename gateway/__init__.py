"""The Envoy gateway: REST and gRPC in front of the orchestrator.

The config is built by `gateway.config` (also `python -m gateway.config`), the descriptor by
`python -m gateway.codegen`; this package runs the Envoy binary.
"""

from gateway._envoy import (
    EnvoyConfigError,
    EnvoyError,
    EnvoyExitedError,
    EnvoyNotFoundError,
    envoy_binary,
    start_envoy,
    stop_envoy,
    validate_config,
    wait_until_ready,
)

__all__ = [
    "EnvoyConfigError",
    "EnvoyError",
    "EnvoyExitedError",
    "EnvoyNotFoundError",
    "envoy_binary",
    "start_envoy",
    "stop_envoy",
    "validate_config",
    "wait_until_ready",
]
