"""The interceptor's provider calls: how many attempts each answer costs. The first attempt
is a plain call and stamina makes the retries, so the count must be exactly what
`max_retries` says, whatever the provider answers."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from mipro._providers import ProviderEndpoint
from mipro._stack import free_port
from orchestrator._forwarding import ProviderForwarder, ProviderStatusError

OK = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}


@dataclass
class Provider:
    """Answers the statuses of `script` in turn, then 200."""

    url: str
    script: list[int] = field(default_factory=list)
    calls: int = 0


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    port = free_port()
    state = Provider(f"http://127.0.0.1:{port}/v1")

    async def chat(request: web.Request) -> web.Response:
        state.calls += 1
        if state.script:
            return web.json_response({"error": "scripted"}, status=state.script.pop(0),
                                     headers={"Retry-After": "0"})
        return web.json_response(OK)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield state
    await runner.cleanup()


@contextlib.asynccontextmanager
async def _forwarding(max_retries: int) -> AsyncIterator[ProviderForwarder]:
    forwarder = ProviderForwarder(timeout_seconds=5, connect_timeout_seconds=2,
                                  max_retries=max_retries)
    try:
        yield forwarder
    finally:
        await forwarder.close()


def _endpoint(provider: Provider) -> ProviderEndpoint:
    return ProviderEndpoint(name="test", base_url=provider.url, api_key="sk-test")


@pytest.mark.parametrize(("script", "calls"), [
    ([], 1),  # a good answer takes one call
    ([429], 2),  # a rate limit, then the answer
])
async def test_an_answer_costs_one_call_per_attempt_it_took(
        provider: Provider, script: list[int], calls: int) -> None:
    provider.script = list(script)
    async with _forwarding(max_retries=3) as forwarder:
        assert await forwarder.chat(_endpoint(provider), {"model": "m"}) == OK
    assert provider.calls == calls


@pytest.mark.parametrize(("script", "max_retries", "calls"), [
    ([503] * 10, 2, 3),  # down: max_retries + 1 attempts, then its status
    ([400], 3, 1),  # a refusal is not retried
])
async def test_an_error_costs_the_attempts_its_status_allows(
        provider: Provider, script: list[int], max_retries: int, calls: int) -> None:
    provider.script = list(script)
    async with _forwarding(max_retries=max_retries) as forwarder:
        with pytest.raises(ProviderStatusError) as raised:
            await forwarder.chat(_endpoint(provider), {"model": "m"})
    assert raised.value.status == script[0]
    assert provider.calls == calls


async def test_good_answers_leave_no_reference_cycles(provider: Provider) -> None:
    """Cyclic garbage is freed only by a full collection, which holds the interpreter lock
    for as long as it takes (BENCHMARKS.md, "GetJob with 20 jobs"): a call that succeeds
    must leave none behind (a retry context per call left 45 objects)."""
    async with _forwarding(max_retries=3) as forwarder:
        await forwarder.chat(_endpoint(provider), {"model": "m"})  # the session, made once
        gc.collect()
        gc.disable()
        try:
            for _ in range(100):
                await forwarder.chat(_endpoint(provider), {"model": "m"})
            left = gc.collect()
        finally:
            gc.enable()
    assert left < 100, f"{left} objects in reference cycles after 100 calls"
