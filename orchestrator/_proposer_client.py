"""The orchestrator's client of the proposer service (gRPC), with retries for transient errors."""

from __future__ import annotations

import asyncio
import random

import grpc

from mipro._retry import RetryPolicy
from mipro.v1 import proposer_pb2, proposer_pb2_grpc

from ._errors import JobFailure

_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class ProposerClient:
    """Asks the proposer service for candidate instructions."""

    def __init__(
        self, address: str, *, retry: RetryPolicy | None = None, timeout_seconds: float = 300.0
    ) -> None:
        self._address = address
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = proposer_pb2_grpc.ProposerServiceStub(self._channel)
        # Patient enough to ride out a proposer restart or a rolling deployment.
        self._retry = retry or RetryPolicy(max_attempts=8, initial_backoff=1.0, max_backoff=10.0,
                                           max_elapsed=120.0)
        self._timeout = timeout_seconds
        self._rng = random.Random()  # jitter only: it never changes what is proposed

    async def close(self) -> None:
        await self._channel.close()

    async def propose(
        self, request: proposer_pb2.ProposeInstructionsRequest
    ) -> proposer_pb2.ProposeInstructionsResponse:
        """The proposals; raises `JobFailure` naming the proposer when it cannot answer."""
        for attempt in range(1, self._retry.max_attempts + 1):
            try:
                return await self._stub.ProposeInstructions(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code not in _TRANSIENT or attempt == self._retry.max_attempts:
                    raise JobFailure(
                        f"proposer service at {self._address} failed: "
                        f"{code.name}: {exc.details()}"
                    ) from None
                await asyncio.sleep(self._retry.backoff(attempt, self._rng))
        raise AssertionError("unreachable")
