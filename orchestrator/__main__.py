"""`python -m orchestrator`: runs the orchestrator until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio

import structlog

from mipro._grpc import serve_until_signal
from mipro._logging import configure_logging
from mipro._settings import Settings
from mipro._tracing import traced_process

from ._migrations import SchemaError
from ._server import OrchestratorServer


def main() -> None:
    settings = Settings.from_env()
    configure_logging("orchestrator", level=settings.log_level, fmt=settings.log_format)
    try:
        with traced_process("orchestrator", settings):
            asyncio.run(serve_until_signal(lambda: OrchestratorServer(settings),
                                           grace=settings.shutdown_grace_seconds))
    except SchemaError as error:  # e.g. a Postgres store that `mipro db upgrade` has not seen
        structlog.get_logger("orchestrator").error("cannot use the job store", reason=str(error))
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
