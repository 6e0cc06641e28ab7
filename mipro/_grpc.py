"""gRPC plumbing every server of the stack shares: health checking, reflection, rich error
statuses and running until a signal."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Iterable[str]
) -> health.aio.HealthServicer:
    """Registers health (overall and per service, all SERVING) and reflection on `server`."""
    names = list(service_names)
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    return servicer


async def mark_serving(servicer: health.aio.HealthServicer, service_names: Iterable[str]) -> None:
    """Marks the server and each named service SERVING."""
    for name in ("", *service_names):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def mark_not_serving(
    servicer: health.aio.HealthServicer, service_names: Iterable[str]
) -> None:
    """Marks the server and each named service NOT_SERVING, so balancers drain it."""
    for name in ("", *service_names):
        await servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)


async def abort_with_details(
    context: grpc.aio.ServicerContext[Any, Any],
    code: int,
    message: str,
    *,
    reason: str,
    domain: str,
    metadata: Mapping[str, str] | None = None,
    field_violation: tuple[str, str] | None = None,
) -> NoReturn:
    """Aborts the RPC with `code` and AIP-193 details: a `google.rpc.ErrorInfo` with a stable
    `reason`, and a `google.rpc.BadRequest` naming the field when one is at fault."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain,
                                          metadata=dict(metadata or {})))
    details = [info]
    if field_violation is not None:
        bad_request = any_pb2.Any()
        bad_request.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=field_violation[0], description=field_violation[1])]))
        details.append(bad_request)
    status = status_pb2.Status(code=code, message=message, details=details)
    await context.abort_with_status(rpc_status.to_status(status))


async def serve_until_signal(make_server: Callable[[], Any], *, grace: float = 5.0) -> None:
    """Makes the server inside the running loop (gRPC servers bind to it), starts it (an
    object with `start()` and `stop(grace)`), then stops it on the first SIGINT or SIGTERM."""
    server = make_server()
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=grace)
