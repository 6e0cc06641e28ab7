"""The orchestrator's client of the proposer service (gRPC).

Retries are gRPC's own (gRFC A6), configured once on the channel as a service-config
`retryPolicy`; this module has no retry loop:

- `UNAVAILABLE` is retried, up to `proposer_retry_attempts` attempts in all, with gRPC's
  jittered exponential backoff: the proposer service is down or restarting, a connection
  broke mid-call, or the proposer answered that every model call failed.
- Calls wait for the channel to be ready (`wait_for_ready`), so a proposer service that is
  restarting is waited for instead of failing at once; the channel reconnects at least every
  `proposer_retry_max_backoff_seconds`.
- Every call carries the service token (`authorization: Bearer <MIPRO_PROPOSER_TOKEN>`).
- `DEADLINE_EXCEEDED` is not retried. The deadline, `proposer_deadline_seconds`, covers the
  whole call, every attempt and the wait for a restarted proposer included (gRFC A6), so once
  it has passed no attempt is left to make; a per-attempt deadline would instead multiply the
  time a job can spend on one proposal request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc

from mipro._settings import Settings
from mipro.v1 import proposer_pb2, proposer_pb2_grpc

from ._errors import JobFailure
from ._redact import Redactor

_SERVICE = proposer_pb2.DESCRIPTOR.services_by_name["ProposerService"].full_name
_RETRYABLE = ("UNAVAILABLE",)


def _duration(seconds: float) -> str:
    """`seconds` as a protobuf JSON duration (`0.5s`, `10s`; never exponent notation)."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


@dataclass(frozen=True)
class ProposerCallPolicy:
    """How the orchestrator calls the proposer service: deadline, attempts, backoff (the
    `MIPRO_PROPOSER_*` settings)."""

    #: Seconds one proposal request may take, all attempts included.
    deadline_seconds: float
    #: Attempts in all, the first one included; gRPC allows at most 5.
    max_attempts: int
    #: The largest wait before the second attempt, in seconds; it doubles per attempt.
    initial_backoff_seconds: float
    #: The largest wait between attempts and between reconnections, in seconds.
    max_backoff_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ProposerCallPolicy:
        return cls(deadline_seconds=settings.proposer_deadline_seconds,
                   max_attempts=settings.proposer_retry_attempts,
                   initial_backoff_seconds=settings.proposer_retry_initial_backoff_seconds,
                   max_backoff_seconds=settings.proposer_retry_max_backoff_seconds)

    def service_config(self) -> dict[str, Any]:
        """The gRPC service config carrying the retry policy of every ProposerService method."""
        return {"methodConfig": [{
            "name": [{"service": _SERVICE}],
            "retryPolicy": {
                "maxAttempts": self.max_attempts,
                "initialBackoff": _duration(self.initial_backoff_seconds),
                "maxBackoff": _duration(self.max_backoff_seconds),
                "backoffMultiplier": 2,
                "retryableStatusCodes": list(_RETRYABLE),
            },
        }]}

    def channel_options(self) -> list[tuple[str, Any]]:
        max_backoff_ms = int(self.max_backoff_seconds * 1000)
        return [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(self.service_config())),
            # A proposer that is back is found within one backoff, not gRPC's default 120 s.
            ("grpc.max_reconnect_backoff_ms", max_backoff_ms),
            ("grpc.initial_reconnect_backoff_ms", min(1000, max_backoff_ms)),
        ]


class ProposerClient:
    """Asks the proposer service for candidate instructions."""

    def __init__(self, address: str, policy: ProposerCallPolicy, *, token: str = "") -> None:
        self._address = address
        #: The service token the proposer service requires (`MIPRO_PROPOSER_TOKEN`).
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._policy = policy
        self._channel = grpc.aio.insecure_channel(address,
                                                  options=self._policy.channel_options())
        self._stub = proposer_pb2_grpc.ProposerServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def propose(
        self, request: proposer_pb2.ProposeInstructionsRequest, *, traceparent: str = ""
    ) -> proposer_pb2.ProposeInstructionsResponse:
        """The proposals; raises `JobFailure` naming the proposer when it cannot answer.
        `traceparent` (W3C) is sent as metadata, so the proposer's spans join the job's."""
        metadata = (*self._metadata, ("traceparent", traceparent)) if traceparent \
            else self._metadata
        try:
            response: proposer_pb2.ProposeInstructionsResponse = (
                await self._stub.ProposeInstructions(
                    request, timeout=self._policy.deadline_seconds, wait_for_ready=True,
                    metadata=metadata))
            return response
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                detail = f"no answer within {self._policy.deadline_seconds:g} s"
            else:
                detail = Redactor().redact(exc.details() or "")  # may quote a provider
            raise JobFailure(
                f"proposer service at {self._address} failed: {code.name}: {detail}"
            ) from None
