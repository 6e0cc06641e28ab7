"""The public gRPC API on its own event loop, in its own thread.

The main loop runs the jobs: every rollout's task-app call, the interceptor's HTTP server
and its provider calls, the store writes. A running job keeps it busy (hundreds of rollouts
a second), and a gRPC call queued behind that work waited for several of its turns: GetJob's
p99 was 270 ms while one job ran, seconds while 20 did (BENCHMARKS.md, "Engine
performance"). Here the gRPC server, its health service and the servicers run on a second
loop that is idle between calls, so a call waits only for the interpreter lock, which a busy
thread hands over every `sys.getswitchinterval()` seconds.

- `ApiLoop`: the thread and its loop; `call(fn, ...)` runs a coroutine function there from
  the main loop, `run_sync(fn)` a plain function (to build the gRPC server, which binds to
  the loop it is made on).
- `OnLoop(target, loop)`: what the servicers hold instead of the job manager (and the
  authenticator's store). Its coroutine methods run on `loop`, the main loop that owns the
  jobs, the store and their connections; its async-generator methods are iterated there, one
  item at a time. Plain methods are the target's own, called on the API thread: they must
  only read (`JobManager.peek`, a running job's published snapshot).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: How long `stop()` waits for the thread to end.
_JOIN_SECONDS = 10.0


async def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Runs `coro` on `loop` (another thread's) and awaits its result here; cancelling the
    caller cancels it there."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


class ApiLoop:
    """A daemon thread running its own asyncio event loop."""

    def __init__(self, name: str = "mipro-api") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def run_sync(self, fn: Callable[[], T]) -> T:
        """`fn()` called on the loop's thread, from any other thread (blocking it)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as error:
                future.set_exception(error)

        self._loop.call_soon_threadsafe(call)
        return future.result()

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """`await fn(*args)` on this loop, awaited from the caller's loop."""
        return await run_on(self._loop, fn(*args))

    def stop(self) -> None:
        """Stops the loop and waits for the thread (callers stop their servers first)."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_JOIN_SECONDS)


async def _bridged(loop: asyncio.AbstractEventLoop,
                   items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """`items` (an async generator living on `loop`) iterated from another loop."""
    done = object()

    async def step() -> Any:
        try:
            return await items.__anext__()
        except StopAsyncIteration:
            return done

    async def close() -> None:
        aclose: Callable[[], Awaitable[None]] | None = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()

    try:
        while (item := await run_on(loop, step())) is not done:
            yield item
    finally:
        await run_on(loop, close())


class OnLoop:
    """`target` seen from another thread: its coroutine methods run on `loop`."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        loop = self._loop
        if inspect.isasyncgenfunction(value):
            def iterate(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                return _bridged(loop, value(*args, **kwargs))
            return iterate
        if inspect.iscoroutinefunction(value):
            async def call(*args: Any, **kwargs: Any) -> Any:
                return await run_on(loop, value(*args, **kwargs))
            return call
        return value
