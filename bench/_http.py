"""A minimal HTTP/1.1 server and keep-alive client on asyncio, for the benchmark's own servers.

The performance benchmark (`bench.perf`) measures the backend's CPU on a 2-core machine where
the fake task app and the fake model share the cores with it, so they must cost as little CPU
per request as can be had. A framework (uvicorn + starlette, httpx) spends several times more
per request than the few lines here, so this module speaks just the HTTP/1.1 those two servers
need, and no more:

- requests and responses framed by `Content-Length` or `Transfer-Encoding: chunked`;
- persistent connections (HTTP/1.1 keep-alive), requests on one connection answered in order,
  one at a time; `Connection: close` honoured;
- no TLS, no `Expect: 100-continue`, no upgrades, no streaming bodies.

`serve(handler, host, port)` runs a server whose handler returns a `Response`, or a coroutine
of one. `HttpClient.post(url, body, headers)` reuses idle connections per host and port.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import urlsplit

#: A request head larger than this is refused (431).
MAX_HEAD_BYTES = 64 * 1024
#: A body larger than this is refused (413).
MAX_BODY_BYTES = 16 * 1024 * 1024


class HttpError(Exception):
    """A message could not be parsed or framed; the message says why."""


@dataclass(slots=True)
class Request:
    """One parsed request. Header names are lower-case."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


@dataclass(slots=True)
class Response:
    """One response to send; `body` is sent with a `Content-Length`."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"


def json_response(status: int, payload: Any) -> Response:
    """A JSON response, compactly encoded."""
    return Response(status, json.dumps(payload, separators=(",", ":")).encode())


Handler = Callable[[Request], "Response | Awaitable[Response]"]


@dataclass(slots=True)
class _Head:
    start: str
    headers: dict[str, str]
    body_start: int
    length: int | None  # None: chunked


def _parse_head(buffer: bytearray, end: int, *, is_response: bool) -> _Head:
    lines = buffer[:end].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(f"malformed header line {line!r}")
        headers[name.lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        length = None
    elif "content-length" in headers:
        raw = headers["content-length"]
        if not raw.isdigit():
            raise HttpError(f"Content-Length must be a non-negative integer, got {raw!r}")
        length = int(raw)
    elif is_response:
        status = lines[0].split(" ", 2)[1] if lines[0].count(" ") >= 1 else ""
        if status not in ("204", "304") and not status.startswith("1"):
            raise HttpError("the response has neither Content-Length nor chunked encoding")
        length = 0
    else:
        length = 0
    if length is not None and length > MAX_BODY_BYTES:
        raise HttpError(f"the body of {length} bytes exceeds {MAX_BODY_BYTES}")
    return _Head(lines[0], headers, end + 4, length)


def _take_chunked(buffer: bytearray, position: int) -> tuple[bytes, int] | None:
    """The de-chunked body starting at `position` and the offset after it, or None when
    the buffer does not hold all of it yet."""
    parts: list[bytes] = []
    total = 0
    while True:
        eol = buffer.find(b"\r\n", position)
        if eol < 0:
            return None
        size_text = bytes(buffer[position:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"malformed chunk size {size_text!r}") from None
        position = eol + 2
        if size == 0:
            if buffer[position:position + 2] == b"\r\n":
                return b"".join(parts), position + 2
            trailers_end = buffer.find(b"\r\n\r\n", position)
            if trailers_end < 0:
                return None
            return b"".join(parts), trailers_end + 4
        total += size
        if total > MAX_BODY_BYTES:
            raise HttpError(f"the chunked body exceeds {MAX_BODY_BYTES} bytes")
        if len(buffer) < position + size + 2:
            return None
        parts.append(bytes(buffer[position:position + size]))
        position += size + 2


class _Framer:
    """Cuts complete messages (start line, headers, body) out of a byte stream."""

    def __init__(self, *, is_response: bool) -> None:
        self.buffer = bytearray()
        self._is_response = is_response
        self._head: _Head | None = None

    def take(self) -> tuple[str, dict[str, str], bytes] | None:
        """The next complete message, removed from the buffer, or None."""
        buffer = self.buffer
        head = self._head
        if head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise HttpError(f"the message head exceeds {MAX_HEAD_BYTES} bytes")
                return None
            head = self._head = _parse_head(buffer, end, is_response=self._is_response)
        if head.length is None:
            taken = _take_chunked(buffer, head.body_start)
            if taken is None:
                return None
            body, after = taken
        else:
            after = head.body_start + head.length
            if len(buffer) < after:
                return None
            body = bytes(buffer[head.body_start:after])
        del buffer[:after]
        self._head = None
        return head.start, head.headers, body


def _keep_alive(version: str, headers: Mapping[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.1":
        return "close" not in connection
    return "keep-alive" in connection


def _encode(response: Response, *, keep_alive: bool) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    head = (f"HTTP/1.1 {response.status} {reason}\r\n"
            f"content-type: {response.content_type}\r\n"
            f"content-length: {len(response.body)}\r\n"
            + ("" if keep_alive else "connection: close\r\n") + "\r\n")
    return head.encode("latin-1") + response.body


class _ServerProtocol(asyncio.Protocol):
    """One server connection: parses requests, calls the handler, writes answers in order."""

    def __init__(self, handler: Handler, tasks: set[asyncio.Future[Response]]) -> None:
        self._handler = handler
        self._tasks = tasks
        self._framer = _Framer(is_response=False)
        self._transport: asyncio.Transport | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._framer.buffer += data
        if not self._busy:
            self._serve_buffered()

    def _serve_buffered(self) -> None:
        while not self._busy and self._transport is not None:
            try:
                message = self._framer.take()
            except HttpError as error:
                self._send(json_response(400, {"error": str(error)}), keep_alive=False)
                return
            if message is None:
                return
            start, headers, body = message
            parts = start.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                self._send(json_response(400, {"error": f"bad request line {start!r}"}),
                           keep_alive=False)
                return
            method, target, version = parts
            keep_alive = _keep_alive(version, headers)
            try:
                result = self._handler(Request(method, target, headers, body))
            except Exception as error:  # a handler bug answers 500, the server lives on
                result = json_response(500, {"error": f"{type(error).__name__}: {error}"})
            if isinstance(result, Response):
                self._send(result, keep_alive=keep_alive)
                continue
            self._busy = True
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, keep_alive=keep_alive))

    def _finished(self, task: asyncio.Future[Response], keep_alive: bool) -> None:
        self._tasks.discard(task)
        self._busy = False
        if task.cancelled():
            response = json_response(503, {"error": "the server is shutting down"})
            keep_alive = False
        elif (error := task.exception()) is not None:
            response = json_response(500, {"error": f"{type(error).__name__}: {error}"})
        else:
            response = task.result()
        self._send(response, keep_alive=keep_alive)
        self._serve_buffered()

    def _send(self, response: Response, *, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(_encode(response, keep_alive=keep_alive))
        if not keep_alive:
            transport.close()
            self._transport = None


@dataclass
class Server:
    """A running server; `close()` stops listening and cancels requests in progress."""

    server: asyncio.Server
    tasks: set[asyncio.Future[Response]] = field(default_factory=set)

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await self.server.wait_closed()


async def serve(handler: Handler, host: str, port: int) -> Server:
    """Starts serving `handler` on `host:port` (0: any free port)."""
    tasks: set[asyncio.Future[Response]] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _ServerProtocol(handler, tasks), host, port,
                                      backlog=2048, reuse_address=True)
    return Server(server, tasks)


class _ClientProtocol(asyncio.Protocol):
    """One client connection, carrying one request at a time."""

    def __init__(self) -> None:
        self._framer = _Framer(is_response=True)
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[str, dict[str, str], bytes]] | None = None
        self.received_any = False

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"the connection closed: {exc or 'EOF'}"))

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self._framer.buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            message = self._framer.take()
        except HttpError as error:
            waiter.set_exception(error)
            return
        if message is not None:
            waiter.set_result(message)

    def request(self, data: bytes) -> asyncio.Future[tuple[str, dict[str, str], bytes]]:
        assert self.transport is not None
        self.received_any = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class HttpClient:
    """POSTs over persistent connections, kept idle per (host, port) between requests."""

    def __init__(self, *, timeout: float = 60.0) -> None:
        self._timeout = timeout
        self._idle: dict[tuple[str, int], list[_ClientProtocol]] = {}

    async def post(self, url: str, body: bytes,
                   headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and body of POST `url`. A request that finds its
        reused connection closed before any answer is sent again on a new connection."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise HttpError(f"only http:// URLs with a host are supported, got {url!r}")
        key = (parts.hostname, parts.port or 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        data = (f"POST {target} HTTP/1.1\r\nhost: {parts.netloc}\r\n{head}"
                f"content-length: {len(body)}\r\n\r\n").encode("latin-1") + body
        async with asyncio.timeout(self._timeout):
            while True:
                connection, reused = await self._checkout(key)
                try:
                    start, response_headers, response_body = await connection.request(data)
                except ConnectionError:
                    connection.close()
                    if reused and not connection.received_any:
                        continue
                    raise
                except BaseException:
                    connection.close()
                    raise
                break
        status_parts = start.split(" ", 2)
        if len(status_parts) < 2 or not status_parts[1].isdigit():
            connection.close()
            raise HttpError(f"bad status line {start!r}")
        if connection.open and _keep_alive(status_parts[0], response_headers):
            self._idle.setdefault(key, []).append(connection)
        else:
            connection.close()
        return int(status_parts[1]), response_headers, response_body

    async def _checkout(self, key: tuple[str, int]) -> tuple[_ClientProtocol, bool]:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.open:
                return connection, True
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_ClientProtocol, key[0], key[1])
        return protocol, False

    def close(self) -> None:
        """Closes every idle connection."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


def run_forever(make_handler: Callable[[], Handler], host: str, port: int, *,
                name: str) -> None:
    """Serves the handler `make_handler()` builds (inside the event loop) until SIGTERM or
    SIGINT, or until this process's parent dies. Runs on uvloop when it is installed (the
    `bench` extra), the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_until_stopped(make_handler, host, port, name))
    else:
        uvloop.run(_serve_until_stopped(make_handler, host, port, name))


async def _serve_until_stopped(make_handler: Callable[[], Handler], host: str, port: int,
                               name: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    handler = make_handler()
    server = await serve(handler, host, port)
    print(json.dumps({"event": "listening", "service": name, "host": host, "port": server.port,
                      "loop": type(loop).__module__}), flush=True)
    parent = os.getppid()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            if os.getppid() != parent:  # the parent died: nobody will stop us by pid
                break
    await server.close()
    close = getattr(handler, "close", None)
    if close is not None:
        close()
