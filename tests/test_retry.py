"""Retries, one layer per hop: the shared policy (task-app calls; bounded attempts and time,
Retry-After honoured, jittered backoff), the openai SDK's retries of provider calls, and
gRPC's retry policy on the orchestrator's channel to the proposer service."""

from __future__ import annotations

import asyncio
import json
import random
import time

import grpc
import httpx
import openai
import pytest

from mipro._providers import ProviderEndpoint, client_options, make_async_client
from mipro._retry import RetryPolicy, parse_retry_after
from mipro._settings import Settings
from mipro._stack import free_port
from mipro.v1 import proposer_pb2, proposer_pb2_grpc
from orchestrator._errors import JobFailure
from orchestrator._proposer_client import ProposerCallPolicy, ProposerClient


def test_backoff_grows_is_jittered_and_capped() -> None:
    policy = RetryPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=5.0)
    rng = random.Random(0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        waits = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100


def test_retry_after_wins_up_to_the_cap() -> None:
    policy = RetryPolicy(max_backoff=20.0)
    assert policy.backoff(1, random.Random(0), retry_after=3.0) == 3.0
    assert policy.backoff(1, random.Random(0), retry_after=600.0) == 20.0
    assert parse_retry_after("2.5") == 2.5 and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None


# --------------------------------------------------------------------------- provider calls


def _counting_client(responses: list[httpx.Response], seen: list[float], *,
                     max_retries: int) -> openai.AsyncOpenAI:
    """A client made by `make_async_client` whose HTTP calls answer `responses` in order."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        return responses[min(len(seen), len(responses)) - 1]

    endpoint = ProviderEndpoint("local", "http://model.invalid/v1", "sk-unit")
    return make_async_client(
        endpoint, max_retries=max_retries,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def _chat_completion() -> httpx.Response:
    return httpx.Response(200, json={
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "ok"}}]})


async def test_provider_calls_are_retried_by_the_sdk_honouring_retry_after() -> None:
    seen: list[float] = []
    limited = httpx.Response(429, json={"error": {"message": "slow down"}},
                             headers={"retry-after": "0.05"})
    client = _counting_client([limited, _chat_completion()], seen, max_retries=2)
    reply = await client.chat.completions.create(model="m", messages=[])
    await client.close()
    assert reply.choices[0].message.content == "ok"
    assert len(seen) == 2
    # The server's 50 ms, not the SDK's own first backoff (0.375-0.5 s).
    assert 0.05 <= seen[1] - seen[0] < 0.3


async def test_provider_retries_are_bounded_by_max_retries() -> None:
    seen: list[float] = []
    down = httpx.Response(503, json={"error": {"message": "down"}},
                          headers={"retry-after-ms": "5"})
    client = _counting_client([down], seen, max_retries=2)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=[])
    assert len(seen) == 3
    seen.clear()
    bad_request = httpx.Response(400, json={"error": {"message": "bad"}})
    client = _counting_client([bad_request], seen, max_retries=2)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="m", messages=[])
    assert len(seen) == 1  # a 4xx other than 408/409/429 is never retried
    await client.close()


def test_provider_client_takes_its_timeouts_and_retries_from_settings() -> None:
    settings = Settings.from_env({"MIPRO_PROVIDER_MAX_RETRIES": "4",
                                  "MIPRO_PROVIDER_TIMEOUT_SECONDS": "7.5",
                                  "MIPRO_PROVIDER_CONNECT_TIMEOUT_SECONDS": "2"})
    endpoint = ProviderEndpoint("local", "http://model.invalid/v1", "sk-unit")
    client = make_async_client(endpoint, **client_options(settings))
    assert client.max_retries == 4
    assert (client.timeout.read, client.timeout.connect) == (7.5, 2.0)  # type: ignore[union-attr]
    defaults = make_async_client(endpoint)
    assert defaults.max_retries == 3  # 4 attempts in all


# ------------------------------------------------------------------ orchestrator -> proposer


class _FlakyProposer(proposer_pb2_grpc.ProposerServiceServicer):
    """Answers `failures` calls with `code`, then succeeds."""

    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
                 delay: float = 0.0) -> None:
        self.failures = failures
        self.code = code
        self.delay = delay
        self.calls = 0

    async def ProposeInstructions(
        self, request: proposer_pb2.ProposeInstructionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> proposer_pb2.ProposeInstructionsResponse:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.calls <= self.failures:
            await context.abort(self.code, f"failure {self.calls}")
        return proposer_pb2.ProposeInstructionsResponse(
            instructions=[proposer_pb2.ProposedInstruction(instruction="Be precise.")])


async def _serve(servicer: _FlakyProposer, port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    proposer_pb2_grpc.add_ProposerServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


def _policy(**overrides: float) -> ProposerCallPolicy:
    values: dict[str, float] = {"deadline_seconds": 10.0, "max_attempts": 4,
                                "initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.05}
    values.update(overrides)
    return ProposerCallPolicy(**values)  # type: ignore[arg-type]


def test_proposer_policy_is_a_grpc_service_config_from_settings() -> None:
    settings = Settings.from_env({"MIPRO_PROPOSER_RETRY_ATTEMPTS": "3",
                                  "MIPRO_PROPOSER_RETRY_INITIAL_BACKOFF_SECONDS": "0.5",
                                  "MIPRO_PROPOSER_DEADLINE_SECONDS": "60"})
    policy = ProposerCallPolicy.from_settings(settings)
    assert policy.deadline_seconds == 60
    (method,) = policy.service_config()["methodConfig"]
    assert method["name"] == [{"service": "mipro.v1.ProposerService"}]
    assert method["retryPolicy"] == {
        "maxAttempts": 3, "initialBackoff": "0.5s", "maxBackoff": "10s",
        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
    tiny = ProposerCallPolicy(1.0, 2, 0.00001, 0.5).service_config()["methodConfig"][0]
    assert tiny["retryPolicy"]["initialBackoff"] == "0.00001s"
    options = dict(policy.channel_options())
    assert options["grpc.enable_retries"] == 1
    assert json.loads(options["grpc.service_config"]) == policy.service_config()


async def test_proposer_unavailable_is_retried_by_grpc_up_to_max_attempts() -> None:
    servicer = _FlakyProposer(failures=3)
    server, port = await _serve(servicer)
    client = ProposerClient(f"127.0.0.1:{port}", _policy(max_attempts=4))
    try:
        reply = await client.propose(proposer_pb2.ProposeInstructionsRequest(job_id="j"))
        assert [i.instruction for i in reply.instructions] == ["Be precise."]
        assert servicer.calls == 4
        servicer.calls, servicer.failures = 0, 10
        with pytest.raises(JobFailure) as caught:
            await client.propose(proposer_pb2.ProposeInstructionsRequest(job_id="j"))
        assert servicer.calls == 4
        assert f"127.0.0.1:{port}" in str(caught.value) and "UNAVAILABLE" in str(caught.value)
    finally:
        await client.close()
        await server.stop(None)


async def test_proposer_errors_other_than_unavailable_are_not_retried() -> None:
    servicer = _FlakyProposer(failures=1, code=grpc.StatusCode.INVALID_ARGUMENT)
    server, port = await _serve(servicer)
    client = ProposerClient(f"127.0.0.1:{port}", _policy())
    try:
        with pytest.raises(JobFailure, match="INVALID_ARGUMENT: failure 1"):
            await client.propose(proposer_pb2.ProposeInstructionsRequest(job_id="j"))
        assert servicer.calls == 1
    finally:
        await client.close()
        await server.stop(None)


async def test_a_proposer_that_starts_late_is_waited_for_within_the_deadline() -> None:
    port = free_port()
    client = ProposerClient(f"127.0.0.1:{port}", _policy(max_backoff_seconds=0.2))
    servicer = _FlakyProposer(failures=0)
    call = asyncio.create_task(
        client.propose(proposer_pb2.ProposeInstructionsRequest(job_id="j")))
    await asyncio.sleep(1.5)  # nothing listens yet: more than every gRPC backoff here
    assert not call.done()
    server, _ = await _serve(servicer, port)
    try:
        reply = await asyncio.wait_for(call, timeout=5)
        assert len(reply.instructions) == 1 and servicer.calls == 1
    finally:
        await client.close()
        await server.stop(None)


async def test_the_proposer_deadline_covers_every_attempt() -> None:
    servicer = _FlakyProposer(failures=10, delay=0.2)
    server, port = await _serve(servicer)
    client = ProposerClient(f"127.0.0.1:{port}", _policy(deadline_seconds=0.5, max_attempts=5))
    started = time.monotonic()
    try:
        with pytest.raises(JobFailure, match="DEADLINE_EXCEEDED: no answer within 0.5 s"):
            await client.propose(proposer_pb2.ProposeInstructionsRequest(job_id="j"))
        assert time.monotonic() - started < 2.0
        assert servicer.calls < 5  # the deadline ended the retries, not max_attempts
    finally:
        await client.close()
        await server.stop(None)
