"""Where a job's task app may be: the address policy checked at create, and the pinned
transport every request of the job goes through.

A tenant names its task app by URL, and the orchestrator calls it from inside the operator's
network, so the URL must not reach what only that network can: `AddressPolicy.pin(url)`
resolves the host and refuses loopback, private (RFC 1918, ULA), link-local (169.254.0.0/16,
where cloud metadata answers), CGNAT (100.64.0.0/10), multicast, unspecified and every other
address that is not globally routable, unless `MIPRO_TASK_APP_ALLOW` opens it. Every address
the name resolves to must pass, and the first one is pinned: `PinnedResolver` connects the
job's requests to it (the URL, so the `Host` header and TLS name, keep the original name),
so a DNS answer that changes after the check (rebinding) cannot move the job to another
address, and a request
for any other host is refused. The job's client never follows redirects.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
from aiohttp.abc import ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host, port -> the addresses the host resolves to.
Resolver = Callable[[str, int], Awaitable[list[str]]]

#: Names `MIPRO_TASK_APP_ALLOW` accepts for a group of networks.
NAMED_NETWORKS: dict[str, tuple[str, ...]] = {
    "loopback": ("127.0.0.0/8", "::1/128"),
    "private": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
#: Addresses where cloud providers serve instance metadata and credentials.
_METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))
_DNS_TIMEOUT_SECONDS = 5.0


class AddressRefused(ValueError):
    """The task app's URL or address is not allowed; the message says why."""


def refusal(address: IPAddress) -> str | None:
    """Why `address` is refused by default, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped)
    if address in _METADATA:
        return "a cloud metadata address"
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.version == 4 and address in _CGNAT, "a CGNAT (shared) address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a globally routable address"),
    )
    return next((reason for refused, reason in checks if refused), None)


async def _system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class PinnedTarget:
    """A task app URL with the address its requests connect to."""

    url: str
    host: str
    address: str


class AddressPolicy:
    """Which task-app addresses jobs may use: public ones, plus `allow` (hosts, CIDRs, or
    the names in `NAMED_NETWORKS`)."""

    def __init__(self, allow: Iterable[str] = (), *, resolver: Resolver | None = None) -> None:
        self._hosts: set[str] = set()
        self._networks: list[IPNetwork] = []
        for entry in (e.strip().lower() for e in allow):
            if not entry:
                continue
            for item in NAMED_NETWORKS.get(entry, (entry,)):
                try:
                    self._networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    self._hosts.add(item.rstrip("."))
        self._resolve = resolver or _system_resolver

    def _allowed(self, host: str, address: IPAddress) -> str | None:
        """None when `address` (of `host`) may be used, else why not."""
        if host in self._hosts or any(address in net for net in self._networks
                                      if net.version == address.version):
            return None
        return refusal(address)

    async def pin(self, url: str) -> PinnedTarget:
        """Checks `url` and resolves its host; raises `AddressRefused` saying why not."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AddressRefused(f"must be an http(s) URL with a host, got {parts.scheme!r}")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise AddressRefused("must not carry credentials (user:password@) in the URL")
        host = parts.hostname.rstrip(".").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                async with asyncio.timeout(_DNS_TIMEOUT_SECONDS):
                    addresses = await self._resolve(host, port)
            except (OSError, TimeoutError, UnicodeError):
                raise AddressRefused(f"host {host!r} does not resolve") from None
        if not addresses:
            raise AddressRefused(f"host {host!r} does not resolve")
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            reason = self._allowed(host, address)
            if reason is not None:
                shown = f"{host!r} resolves to {address}" if literal is None else f"{address}"
                raise AddressRefused(
                    f"{shown}, {reason}; task apps must be on public addresses unless "
                    f"MIPRO_TASK_APP_ALLOW opens it")
        return PinnedTarget(url=url, host=host, address=addresses[0].split("%", 1)[0])


class PinnedResolver(aiohttp.abc.AbstractResolver):
    """Resolves the pinned host to the pinned address, whatever DNS says now, and refuses
    every other host: the job's client can reach its task app and nothing else."""

    def __init__(self, target: PinnedTarget) -> None:
        self._target = target

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        name = host.rstrip(".").lower()
        if name != self._target.host:
            raise OSError(errno.EPERM, f"the job may only reach its task app host, not {name!r}")
        address = ipaddress.ip_address(self._target.address)
        return [ResolveResult(
            hostname=host, host=str(address), port=port,
            family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
            proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None


def job_http_session(target: PinnedTarget, *, max_connections: int) -> aiohttp.ClientSession:
    """A job's own HTTP session for its task app: pinned (the name keeps its `Host` header
    and TLS name, the connection goes to the checked address), no cookies kept, at most
    `max_connections` connections; callers never follow redirects.

    aiohttp rather than httpx on this hop for a measured reason: at 64 requests in flight,
    httpx spent about 2.9 ms of CPU per request in its connection pool, aiohttp 0.16 ms
    (BENCHMARKS.md)."""
    connector = aiohttp.TCPConnector(limit=max_connections, resolver=PinnedResolver(target),
                                     use_dns_cache=False)
    # No session-wide time limit: each call is bounded by its own deadline (a rollout's may be
    # longer than aiohttp's default of 5 minutes).
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 trust_env=False, auto_decompress=True,
                                 timeout=aiohttp.ClientTimeout(total=None))
