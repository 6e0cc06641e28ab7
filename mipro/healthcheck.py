"""`python -m mipro.healthcheck`: exits 0 when one service answers healthy, else 1.

The container images' HEALTHCHECK. What it checks is `MIPRO_HEALTHCHECK` (or the first
argument):

- `grpc://HOST:PORT` — the standard gRPC health service (`grpc.health.v1.Health/Check`,
  overall status) answers SERVING;
- `http://HOST:PORT/PATH` — a GET answers 2xx.

Unset, it checks the orchestrator's gRPC port on loopback (`MIPRO_ORCHESTRATOR_PORT`, default
50051). The reason of a failure goes to stderr, one line, so `docker inspect` shows it.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_SECONDS = 4.0


def default_target(environ: dict[str, str]) -> str:
    return f"grpc://127.0.0.1:{environ.get('MIPRO_ORCHESTRATOR_PORT', '50051')}"


def check(target: str, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """None when `target` is healthy, else why not."""
    parts = urlsplit(target)
    if parts.scheme == "grpc" and parts.netloc:
        return _check_grpc(parts.netloc, timeout)
    if parts.scheme == "http" and parts.netloc:
        return _check_http(target, timeout)
    return f"MIPRO_HEALTHCHECK {target!r}: expected grpc://HOST:PORT or http://HOST:PORT/PATH"


def _check_grpc(address: str, timeout: float) -> str | None:
    with grpc.insecure_channel(address) as channel:
        # typeshed's HealthStub declares no methods (see mipro._stack.wait_grpc_serving).
        call = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
        try:
            reply: health_pb2.HealthCheckResponse = call(health_pb2.HealthCheckRequest(),
                                                         timeout=timeout)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            return f"{address}: {code.name if code else error}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def _check_http(url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            code: int = response.status
    except urllib.error.HTTPError as error:
        code = int(error.code)
    except OSError as error:
        return f"{url}: {error}"
    return None if 200 <= code < 300 else f"{url}: HTTP {code}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    environ = dict(os.environ)
    target = args[0] if args else environ.get("MIPRO_HEALTHCHECK") or default_target(environ)
    problem = check(target)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
