"""Where a task app may be: the address policy and the pinned client, against real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from mipro._stack import free_port
from orchestrator._ssrf import AddressPolicy, AddressRefused, PinnedTarget, job_http_session


def _resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]
    return resolve


@pytest.mark.parametrize(("url", "reason"), [
    ("http://169.254.169.254/latest/meta-data#", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://127.0.0.1:8000", "loopback"),
    ("http://[::ffff:127.0.0.1]:8000", "loopback"),
    ("http://10.1.2.3", "private"),
    ("http://192.168.1.1", "private"),
    ("http://100.64.0.7", "CGNAT"),
    ("http://169.254.10.10", "link-local"),
    ("http://0.0.0.0:80", "unspecified"),
    ("http://224.0.0.1", "multicast"),
    ("http://internal.example/", "private"),  # a name that resolves to a private address
    ("http://mixed.example/", "loopback"),  # one bad address among good ones is enough
    ("http://alice:pw@example.com/", "credentials"),
    ("http://nowhere.example/", "does not resolve"),
])
async def test_the_default_policy_refuses_internal_addresses(url: str, reason: str) -> None:
    policy = AddressPolicy(resolver=_resolver({
        "internal.example": ["10.0.0.5"], "mixed.example": ["93.184.216.34", "127.0.0.1"],
        "example.com": ["93.184.216.34"]}))
    with pytest.raises(AddressRefused, match=reason):
        await policy.pin(url)


async def test_public_addresses_pass_and_the_allowlist_opens_hosts_and_networks() -> None:
    resolve = _resolver({"app.example": ["93.184.216.34"], "lab.internal": ["10.9.9.9"]})
    target = await AddressPolicy(resolver=resolve).pin("https://app.example/x")
    assert (target.host, target.address) == ("app.example", "93.184.216.34")
    dev = AddressPolicy(["loopback"], resolver=resolve)
    assert (await dev.pin("http://127.0.0.1:9")).address == "127.0.0.1"
    with pytest.raises(AddressRefused, match="private"):  # loopback only, not private
        await dev.pin("http://lab.internal/")
    assert (await AddressPolicy(["lab.internal"], resolver=resolve).pin(
        "http://lab.internal/")).address == "10.9.9.9"
    assert (await AddressPolicy(["10.0.0.0/8"], resolver=resolve).pin(
        "http://lab.internal/")).address == "10.9.9.9"
    with pytest.raises(AddressRefused, match="metadata"):
        await AddressPolicy(["10.0.0.0/8"]).pin("http://169.254.169.254/")


# -- the pinned client, against a real server on 127.0.0.1 -----------------------------------

async def _echo(request: Request) -> JSONResponse:
    response = JSONResponse({"host": request.headers.get("host"),
                             "cookie": request.headers.get("cookie")})
    response.set_cookie("session", "tenant-a")
    return response


async def _redirect(request: Request) -> RedirectResponse:
    return RedirectResponse("http://169.254.169.254/latest/meta-data", status_code=302)


@pytest_asyncio.fixture
async def local_server() -> AsyncIterator[int]:
    app = Starlette(routes=[Route("/echo", _echo), Route("/redirect", _redirect)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield port
    server.should_exit = True
    await task


async def test_the_pinned_client_connects_to_the_checked_address_only(local_server: int) -> None:
    # The name now resolves elsewhere (rebinding); the pin still sends it to 127.0.0.1,
    # with the name the tenant gave in the Host header.
    target = PinnedTarget(url=f"http://rebind.example:{local_server}",
                          host="rebind.example", address="127.0.0.1")
    async with job_http_session(target, max_connections=2) as client:
        async with client.get(f"http://rebind.example:{local_server}/echo") as first:
            assert (await first.json())["host"] == f"rebind.example:{local_server}"
        async with client.get(f"http://rebind.example:{local_server}/echo") as second:
            assert (await second.json())["cookie"] is None  # Set-Cookie is never sent back
        async with client.get(f"http://rebind.example:{local_server}/redirect",
                              allow_redirects=False) as redirect:
            assert redirect.status == 302  # answered, not followed
        with pytest.raises(aiohttp.ClientConnectorError, match="only reach its task app"):
            await client.get("http://metadata.example/latest/meta-data")
