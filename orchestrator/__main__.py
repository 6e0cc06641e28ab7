"""`python -m orchestrator`: runs the orchestrator until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio

from mipro._grpc import serve_until_signal
from mipro._logging import configure_logging
from mipro._settings import Settings
from mipro._tracing import traced_process

from ._server import OrchestratorServer


def main() -> None:
    settings = Settings.from_env()
    configure_logging("orchestrator", level=settings.log_level, fmt=settings.log_format)
    with traced_process("orchestrator", settings):
        asyncio.run(serve_until_signal(lambda: OrchestratorServer(settings),
                                       grace=settings.shutdown_grace_seconds))


if __name__ == "__main__":
    main()
