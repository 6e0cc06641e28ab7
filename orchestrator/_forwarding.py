"""The interceptor's calls to the policy provider: one aiohttp session, stamina's retries.

The interceptor already has the request as JSON and returns the provider's JSON unchanged, so
it forwards the body as it is rather than through the openai SDK: measured at 64 calls in
flight against a loopback server, the SDK (on httpx) cost about 3.3 ms of CPU per call, on
aiohttp 1.75 ms, and a plain aiohttp POST about 0.2 ms (BENCHMARKS.md). This hop's one retry
layer is stamina: 408, 409, 429, 5xx, timeouts and lost connections are retried with
exponential backoff and jitter, and a `Retry-After` (or OpenAI's `retry-after-ms`) the
provider sends is honoured as the wait.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import stamina

from mipro._providers import ProviderEndpoint
from mipro._retry import parse_retry_after

from ._json import dumps, loads_finite

_RETRYABLE_STATUS = frozenset({408, 409, 429})
#: The longest `Retry-After` honoured, in seconds; a longer one waits this long.
MAX_RETRY_AFTER = 30.0


class ProviderStatusError(Exception):
    """The provider answered with an error status (after any retries)."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(f"policy provider answered {status}")
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class ProviderUnreachable(Exception):
    """No answer from the provider (connection refused or lost, timeout), after retries."""


def _retry_wait(error: Exception) -> bool | float:
    """stamina's backoff hook: whether to retry `error`, or how long to wait first."""
    if isinstance(error, ProviderStatusError):
        if error.status not in _RETRYABLE_STATUS and error.status < 500:
            return False
        after_ms = error.headers.get("retry-after-ms", "")
        if after_ms.replace(".", "", 1).isdigit():
            return min(float(after_ms) / 1000, MAX_RETRY_AFTER)
        after = parse_retry_after(error.headers.get("retry-after"))
        return min(after, MAX_RETRY_AFTER) if after is not None else True
    return isinstance(error, aiohttp.ClientConnectionError | TimeoutError)


class ProviderForwarder:
    """Posts chat completions to OpenAI-compatible providers."""

    def __init__(self, *, timeout_seconds: float, connect_timeout_seconds: float,
                 max_retries: int, max_connections: int = 512) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds,
                                              connect=connect_timeout_seconds)
        self._attempts = max_retries + 1
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # made inside the running loop, on first use
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                cookie_jar=aiohttp.DummyCookieJar(), timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def chat(self, endpoint: ProviderEndpoint, body: dict[str, Any]) -> Any:
        """The provider's JSON answer to `body`; raises `ProviderStatusError` or
        `ProviderUnreachable` when, after the retries, it did not answer 2xx.

        The first attempt is a plain call. Only when it fails does stamina take over, and its
        first attempt re-raises that failure, so stamina alone decides whether and when to
        retry, and counts the attempts as if it had made all of them. A retry context is a
        few dozen objects in reference cycles (tenacity's state): made for every call, they
        were most of the orchestrator's cyclic garbage under load, and full collections of it
        held the interpreter lock for 0.6-1 s every ~10 s (BENCHMARKS.md, 20 jobs)."""
        url = f"{endpoint.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {endpoint.api_key}",
                   "Content-Type": "application/json"}
        data = dumps(body)
        first_failure: Exception | None = None
        try:
            try:
                return await self._post(url, data, headers)
            except Exception as error:
                first_failure = error
            async for attempt in stamina.retry_context(
                    on=_retry_wait, attempts=self._attempts, timeout=None, wait_initial=0.5,
                    wait_max=MAX_RETRY_AFTER, wait_jitter=0.5):
                with attempt:
                    if first_failure is not None:
                        failure, first_failure = first_failure, None
                        raise failure
                    return await self._post(url, data, headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderUnreachable(f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable: stamina re-raises the last error")

    async def _post(self, url: str, data: bytes, headers: dict[str, str]) -> Any:
        """One attempt: the provider's JSON answer, or `ProviderStatusError` for a status
        of 300 or more."""
        async with self._http().post(url, data=data, headers=headers,
                                     allow_redirects=False) as response:
            content = await response.read()
            if response.status >= 300:
                raise ProviderStatusError(
                    response.status, content,
                    {k.lower(): v for k, v in response.headers.items()})
            return loads_finite(content)
