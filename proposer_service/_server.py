"""The proposer's gRPC server: `mipro.v1.ProposerService` plus health and reflection.

`ProposerServer` owns the lifecycle: `await start()` binds `host:port` (port 0 picks a free
one, exposed as `port`), `await stop(grace)` drains and closes the model clients.

Every call but health checking and reflection (left open for probes and `grpcurl`) must carry
the service token, `authorization: Bearer <MIPRO_PROPOSER_TOKEN>` metadata, checked in
constant time by `ServiceTokenInterceptor`; a missing or wrong token is `UNAUTHENTICATED`
before the servicer runs. The servicer
only converts the request, calls the core and converts back; domain errors become gRPC
statuses in exactly one place, `_abort_with`, with a stable reason in `google.rpc.ErrorInfo`
and, for a bad field, its path in `google.rpc.BadRequest` (AIP-193).
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
import structlog
from google.rpc import code_pb2

from mipro import _metrics, _tracing
from mipro._grpc import (
    abort_with_details,
    add_health_and_reflection,
    mark_not_serving,
    mark_serving,
)
from mipro._settings import Settings
from mipro.v1 import proposer_pb2, proposer_pb2_grpc

from ._convert import request_from_proto, result_to_proto
from ._errors import InvalidRequest, ProposalsFailed, ProposerError, UnknownProvider
from ._proposer import Proposer
from ._rules import ReplyRules

log = structlog.get_logger(__name__)

SERVICE_NAME = proposer_pb2.DESCRIPTOR.services_by_name["ProposerService"].full_name
_DOMAIN = "mipro.v1"
#: Domain error → gRPC status code; the first matching class wins.
_CODES: tuple[tuple[type[ProposerError], int], ...] = (
    (UnknownProvider, code_pb2.INVALID_ARGUMENT),
    (InvalidRequest, code_pb2.INVALID_ARGUMENT),
    (ProposalsFailed, code_pb2.UNAVAILABLE),
)

R = TypeVar("R")


async def _abort_with(
    context: grpc.aio.ServicerContext[Any, Any], error: ProposerError
) -> NoReturn:
    code = next((c for kind, c in _CODES if isinstance(error, kind)), code_pb2.INTERNAL)
    metadata = {"provider": error.provider} if isinstance(
        error, UnknownProvider | ProposalsFailed) else {}
    violation = (error.field, error.description) if isinstance(error, InvalidRequest) else None
    await abort_with_details(context, code, str(error), reason=error.reason, domain=_DOMAIN,
                             metadata=metadata, field_violation=violation)


def _mapped(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Binds the request's job id to the logs and maps domain errors to statuses."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=method.__name__, job_id=request.job_id)
        try:
            return await method(self, request, context)
        except ProposerError as error:
            log.warning("request failed", reason=error.reason, detail=str(error))
            await _abort_with(context, error)

    return wrapper


class ProposerServicer(proposer_pb2_grpc.ProposerServiceServicer):
    """`mipro.v1.ProposerService` over the `Proposer` core."""

    def __init__(self, proposer: Proposer) -> None:
        self._proposer = proposer

    @_mapped
    async def ProposeInstructions(
        self, request: proposer_pb2.ProposeInstructionsRequest,
        context: grpc.aio.ServicerContext[
            proposer_pb2.ProposeInstructionsRequest, proposer_pb2.ProposeInstructionsResponse],
    ) -> proposer_pb2.ProposeInstructionsResponse:
        parent = _tracing.context_from_metadata(context.invocation_metadata())
        with _tracing.span("ProposeInstructions", parent=parent, kind=_tracing.SpanKind.SERVER,
                           attributes={"mipro.job_id": request.job_id,
                                       "mipro.candidates_asked": request.num_candidates}):
            result = await self._proposer.propose(request_from_proto(request))
        return result_to_proto(result)


#: Methods any caller may use: gRPC health checking and reflection, for probes.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
#: The metadata key that carries the service token.
TOKEN_METADATA_KEY = "authorization"


class ServiceTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call without the service token (`authorization: Bearer <token>`),
    except health checking and reflection."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("MIPRO_PROPOSER_TOKEN is empty: the proposer service needs the "
                             "token its callers send (mipro up makes one per run)")
        self._expected = f"Bearer {token}".encode()

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or wrong service token (authorization metadata)")

        self._refusal: grpc.RpcMethodHandler[Any, None] = (
            grpc.unary_unary_rpc_method_handler(refuse))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler_call_details.method.startswith(OPEN_METHOD_PREFIXES):
            return await continuation(handler_call_details)
        given = next((value for key, value in handler_call_details.invocation_metadata or ()
                      if key == TOKEN_METADATA_KEY), "")
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        if not hmac.compare_digest(given_bytes, self._expected):
            log.warning("call refused: missing or wrong service token",
                        method=handler_call_details.method)
            return self._refusal
        return await continuation(handler_call_details)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class ProposerServer:
    """Serves the proposer on `settings.proposer_host:settings.proposer_port` until stopped."""

    def __init__(self, settings: Settings, *, proposer: Proposer | None = None) -> None:
        self._settings = settings
        self._proposer = proposer or Proposer(settings=settings,
                                              rules=ReplyRules.from_settings(settings))
        self._grpc = grpc.aio.server(
            interceptors=[ServiceTokenInterceptor(settings.proposer_token)])
        self._health = add_health_and_reflection(self._grpc, [SERVICE_NAME])
        proposer_pb2_grpc.add_ProposerServiceServicer_to_server(
            ProposerServicer(self._proposer), self._grpc)
        #: The bound port, known after `start()`.
        self.port = 0
        #: The bound `/metrics` port (`MIPRO_PROPOSER_METRICS_PORT`), 0 when there is none.
        self.metrics_port = 0
        self._metrics: _metrics.MetricsEndpoint | None = None
        _metrics.allow_models([*self._proposer.prices.per_million, *settings.metrics_models])

    @property
    def address(self) -> str:
        """`host:port` as clients dial it, after `start()`."""
        return _address(self._settings.proposer_host, self.port)

    async def start(self) -> None:
        """Binds, starts serving and marks the service SERVING."""
        requested = _address(self._settings.proposer_host, self._settings.proposer_port)
        try:
            self.port = self._grpc.add_insecure_port(requested)
        except RuntimeError as error:
            raise OSError(f"cannot bind the proposer service to {requested}: {error}") from None
        if self.port == 0:
            raise OSError(f"cannot bind the proposer service to {requested}")
        await self._grpc.start()
        self._metrics = _metrics.serve_metrics(self._settings.metrics_bind_host,
                                               self._settings.proposer_metrics_port,
                                               component="proposer")
        self.metrics_port = self._metrics.port if self._metrics else 0
        await mark_serving(self._health, [SERVICE_NAME])
        log.info("proposer service started", address=self.address)

    async def stop(self, grace: float | None = 5.0) -> None:
        """Marks NOT_SERVING, lets calls in flight finish for `grace` seconds, closes clients."""
        await mark_not_serving(self._health, [SERVICE_NAME])
        await self._grpc.stop(grace)
        await self._proposer.aclose()
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        log.info("proposer service stopped")

    async def wait_for_termination(self) -> None:
        await self._grpc.wait_for_termination()

    async def __aenter__(self) -> ProposerServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
