"""`python -m proposer_service`: serves the proposer on
`MIPRO_PROPOSER_HOST:MIPRO_PROPOSER_PORT` until SIGINT or SIGTERM; it needs
`MIPRO_PROPOSER_TOKEN`."""

from __future__ import annotations

import asyncio

from mipro._grpc import serve_until_signal
from mipro._logging import configure_logging
from mipro._settings import Settings
from mipro._tracing import traced_process

from ._server import ProposerServer


def main() -> None:
    settings = Settings.from_env()
    if not settings.proposer_token:
        raise SystemExit("MIPRO_PROPOSER_TOKEN is empty: the proposer service accepts calls "
                         "only with that shared secret (mipro up makes one per run)")
    configure_logging("proposer", level=settings.log_level, fmt=settings.log_format)
    with traced_process("proposer", settings):
        asyncio.run(serve_until_signal(lambda: ProposerServer(settings),
                                       grace=settings.shutdown_grace_seconds))


if __name__ == "__main__":
    main()
