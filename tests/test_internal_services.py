"""Internal services: each binds its own address, and the proposer service answers only
callers with its service token (a real proposer process)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mipro._settings import Settings
from mipro._stack import Stack, free_port, gateway_config_yaml, stack_env
from mipro.v1 import proposer_pb2, proposer_pb2_grpc
from orchestrator._proposer_client import ProposerCallPolicy, ProposerClient

TOKEN = "proposer-token-for-tests-0123456789"
WAIT = 10.0


def test_each_service_host_falls_back_to_mipro_host() -> None:
    s = Settings.from_env({"MIPRO_HOST": "10.1.2.3", "MIPRO_GATEWAY_HOST": "0.0.0.0"})
    assert s.gateway_host == "0.0.0.0"
    assert (s.orchestrator_host, s.interceptor_host, s.proposer_host) == ("10.1.2.3",) * 3
    assert s.proposer_address == "10.1.2.3:50061"
    assert s.public_base_url == "http://0.0.0.0:8082"  # the inference gateway, on the same host
    defaults = Settings.from_env({})
    assert {defaults.gateway_host, defaults.orchestrator_host, defaults.interceptor_host,
            defaults.proposer_host} == {"127.0.0.1"}
    own = Settings.from_env({"MIPRO_PROPOSER_HOST": "10.9.9.9"})
    assert own.proposer_address == "10.9.9.9:50061" and own.orchestrator_host == "127.0.0.1"


def test_stack_env_passes_every_bind_address_and_the_token() -> None:
    s = Settings.from_env({"MIPRO_GATEWAY_HOST": "0.0.0.0", "MIPRO_PROPOSER_TOKEN": TOKEN})
    env = stack_env(s, {})
    assert env["MIPRO_GATEWAY_HOST"] == "0.0.0.0"
    assert env["MIPRO_ORCHESTRATOR_HOST"] == env["MIPRO_PROPOSER_HOST"] == "127.0.0.1"
    assert env["MIPRO_PROPOSER_TOKEN"] == TOKEN
    assert TOKEN not in repr(s)
    assert (env["MIPRO_INFERENCE_GATEWAY"], env["MIPRO_INFERENCE_GATEWAY_PORT"],
            env["MIPRO_PUBLIC_BASE_URL"]) == ("true", "8082", "http://0.0.0.0:8082")


def test_gateway_rendering_binds_the_gateway_host_and_dials_internal_hosts() -> None:
    settings = Settings.from_env({"MIPRO_GATEWAY_HOST": "0.0.0.0",
                                  "MIPRO_ORCHESTRATOR_HOST": "0.0.0.0",
                                  "MIPRO_INTERCEPTOR_HOST": "10.0.0.5"})
    config = yaml.safe_load(gateway_config_yaml(settings))
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener["address"] == "0.0.0.0"
    clusters = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                ["address"]["socket_address"]["address"]
                for c in config["static_resources"]["clusters"]}
    # A wildcard bind is dialled on loopback; the interceptor keeps its own host.
    assert clusters == {"orchestrator_grpc": "127.0.0.1", "interceptor_http": "10.0.0.5"}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


@pytest.fixture(scope="module")
async def proposer(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    tmp = tmp_path_factory.mktemp("proposer")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MIPRO_")}
    env = {**base, "MIPRO_PROPOSER_PORT": str(free_port()), "MIPRO_PROPOSER_TOKEN": TOKEN,
           "MIPRO_LOG_FORMAT": "json"}
    settings = Settings.from_env(env)
    stack = Stack(settings, stack_env(settings, env), log_dir=tmp)
    try:
        await stack.start_proposer()
        yield settings.proposer_address
    finally:
        await asyncio.shield(stack.stop())


async def _propose(address: str, metadata: tuple[tuple[str, str], ...]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await proposer_pb2_grpc.ProposerServiceStub(channel).ProposeInstructions(
            proposer_pb2.ProposeInstructionsRequest(job_id="j"), timeout=WAIT,
            metadata=metadata)


@pytest.mark.parametrize("metadata", [
    (),
    (("authorization", "Bearer wrong-token"),),
    (("authorization", TOKEN),),  # without the scheme
    (("authorization", f"Bearer {TOKEN}x"),),
], ids=["missing", "wrong", "no-scheme", "longer"])
async def test_proposer_refuses_calls_without_the_right_token(
    proposer: str, metadata: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _propose(proposer, metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "service token" in (caught.value.details() or "")


async def test_proposer_accepts_the_token_and_leaves_health_open(proposer: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _propose(proposer, (("authorization", f"Bearer {TOKEN}"),))
    # Past authentication: the empty request itself is refused, naming a field.
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with grpc.aio.insecure_channel(proposer) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                                timeout=WAIT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_orchestrators_client_sends_the_token(proposer: str) -> None:
    policy = ProposerCallPolicy(deadline_seconds=WAIT, max_attempts=2,
                                initial_backoff_seconds=0.1, max_backoff_seconds=0.5)
    for token, words in ((TOKEN, "INVALID_ARGUMENT"), ("", "UNAUTHENTICATED")):
        client = ProposerClient(proposer, policy, token=token)
        try:
            with pytest.raises(Exception) as caught:
                await client.propose(proposer_pb2.ProposeInstructionsRequest(job_id="j"))
            assert words in str(caught.value)
        finally:
            await client.close()


async def test_proposer_will_not_start_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIPRO_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-m", "proposer_service", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), timeout=WAIT)
    assert process.returncode == 1
    assert b"MIPRO_PROPOSER_TOKEN is empty" in err
