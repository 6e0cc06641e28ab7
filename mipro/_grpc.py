"""gRPC plumbing every server of the stack shares: health checking and reflection."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection


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
