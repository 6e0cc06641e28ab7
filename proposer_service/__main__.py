"""`python -m proposer_service`: serves the proposer on `MIPRO_HOST:MIPRO_PROPOSER_PORT`
until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from mipro._logging import configure_logging
from mipro._settings import Settings

from ._server import ProposerServer


async def _serve(settings: Settings) -> None:
    server = ProposerServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=5.0)


def main() -> None:
    settings = Settings.from_env()
    configure_logging("proposer", level=settings.log_level, fmt=settings.log_format)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
