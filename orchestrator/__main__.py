"""`python -m orchestrator`: runs the orchestrator until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable

import structlog

from mipro._grpc import serve_until_signal
from mipro._logging import configure_logging
from mipro._settings import Settings
from mipro._tracing import traced_process

from ._migrations import SchemaError
from ._server import OrchestratorServer

#: How long a thread holding the interpreter lock keeps it when another thread wants it: the
#: gRPC API's thread (`_api_loop.py`) waits at most this per step of a call while the jobs'
#: loop is busy. Python's default is 5 ms; 1 ms halved GetJob's p99 under a 10k-rollout job,
#: and 0.2 ms took it with 20 jobs running from 59-62 to 45-51 ms (p90 33 → 19-21 ms) on the
#: idle machine, with no change of CPU per rollout beyond noise (BENCHMARKS.md).
SWITCH_INTERVAL_SECONDS = 0.0002
#: Full collections run at most every this many younger ones (Python's default is 10). The
#: startup objects are frozen out of them, so Python's own brake on full collections (a
#: quarter of the long-lived objects must be new) no longer holds them back. Under load the
#: objects of rollouts in flight outlive the young collections, so the brake let a full one
#: run every ~10 s with 20 jobs running, 0.3-0.5 s each with the interpreter lock held, and
#: finding nothing to free once the provider calls stopped making reference cycles
#: (`_forwarding.py`): at 1000, 3-4 ran in the same two minutes, and GetJob's p99 fell from
#: 99 to 64 ms (BENCHMARKS.md). Cyclic garbage that reaches the oldest generation waits
#: longer; the memory figures of `bench.perf` did not grow.
FULL_COLLECTION_THRESHOLD = 1000


class _Tuned(OrchestratorServer):
    """The orchestrator process's server: once started, its startup objects (modules,
    descriptors, settings: about 130k) are frozen out of the garbage collector, which
    otherwise walked them on every full collection (up to 300 ms with the interpreter lock
    held, several times a minute under load)."""

    async def start(self) -> None:
        await super().start()
        gc.collect()
        gc.freeze()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop for the jobs' loop where it is installed (not on Windows): its
    transports and scheduling are C, and they carry every hop of every rollout."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main() -> None:
    settings = Settings.from_env()
    configure_logging("orchestrator", level=settings.log_level, fmt=settings.log_format)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
    try:
        with traced_process("orchestrator", settings):
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(serve_until_signal(lambda: _Tuned(settings),
                                              grace=settings.shutdown_grace_seconds))
    except SchemaError as error:  # e.g. a Postgres store that `mipro db upgrade` has not seen
        structlog.get_logger("orchestrator").error("cannot use the job store", reason=str(error))
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
