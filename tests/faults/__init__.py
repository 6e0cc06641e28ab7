"""Fault-injection servers for tests that run real processes, and what they share.

Two HTTP proxies, each run as its own process in front of a real server:

- `tests.faults.flaky_task_app`: in front of a task app; makes `POST /rollout` fail with a
  500, hang, or answer garbage, deterministically per (seed, run_id, attempt), and can make
  every rollout fail after N (the task app "going down").
- `tests.faults.rate_limited_model`: in front of an OpenAI-compatible server; answers 429
  with `Retry-After` in deterministic, count-based bursts.

Both serve `GET /_faults/stats` themselves (always 200, no auth), which is also their
readiness probe: `start_fault_server()` starts either one through
`tests._launch.start_http_proxy`, so `Stack.stop()` stops it by pid with the rest.

This module also holds what both proxies share: forwarding one request to the upstream
with one `httpx.AsyncClient`, turning the upstream's answer back into a response, and the
JSON-lines log.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from mipro._stack import Stack

__all__ = [
    "FLAKY_TASK_APP",
    "RATE_LIMITED_MODEL",
    "JsonLines",
    "forward",
    "start_fault_server",
    "upstream_response",
    "upstream_url",
]

#: Module names, for `python -m` and `start_fault_server()`.
FLAKY_TASK_APP = "tests.faults.flaky_task_app"
RATE_LIMITED_MODEL = "tests.faults.rate_limited_model"

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy recomputes; every other
# header, auth included, is forwarded as sent.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length",
})
# httpx decodes the upstream's body, so its encoding and length no longer apply.
_DROP_FROM_UPSTREAM = _HOP_BY_HOP | {"content-encoding"}


class JsonLines:
    """Appends one JSON object per line to a file, or does nothing without a path.

    Each line is written with one `write()` on a file opened in append mode and closed
    straight after, so a reader never sees half a line and a `kill -9` loses nothing
    already written.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        if self._path is None:
            return
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock, self._path.open("a", encoding="utf-8") as f:
            f.write(line)


def upstream_url(upstream: str, request: Request) -> str:
    """The upstream URL for `request`: same raw path and query, under `upstream`."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    url = upstream.rstrip("/") + raw_path.decode("latin-1")
    query: bytes = request.scope.get("query_string", b"")
    return f"{url}?{query.decode('latin-1')}" if query else url


async def forward(client: httpx.AsyncClient, upstream: str, request: Request,
                  body: bytes) -> httpx.Response:
    """Sends `request` (method, path, query, end-to-end headers, `body`) to `upstream`.

    Raises `httpx.HTTPError` when the upstream cannot be reached or does not answer in time.
    """
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
    outgoing = client.build_request(request.method, upstream_url(upstream, request),
                                    headers=headers, content=body)
    return await client.send(outgoing)


def upstream_response(resp: httpx.Response) -> Response:
    """The upstream's answer as a Starlette response: same status, body and headers."""
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in _DROP_FROM_UPSTREAM}
    return Response(resp.content, status_code=resp.status_code, headers=headers)


async def start_fault_server(stack: Stack, module: str, upstream: str, port: int, *,
                             log: Path | None = None, args: Sequence[str] = ()) -> str:
    """Starts a fault server as a process of `stack` (stopped by pid with it), ready once its
    own `/_faults/stats` answers (a task app's `/health` needs a key); returns its URL."""
    from tests._launch import start_http_proxy

    return await start_http_proxy(stack, module, upstream, port, log=log, args=args,
                                  ready_path="/_faults/stats")
