"""structlog set-up shared by every process: JSON lines to stderr, or console on a terminal.

Standard-library loggers (grpc, httpx, uvicorn) go through the same formatter, so one process
prints one format. Job code binds `job_id` (and a rollout's `rollout_id`) with
`structlog.contextvars`, so lines say which job; with tracing on, lines also carry the current
span's `trace_id` and `span_id`.
"""

from __future__ import annotations

import logging
import sys

import structlog

from ._tracing import current_ids

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def add_trace_ids(_logger: object, _name: str, event: structlog.types.EventDict
                  ) -> structlog.types.EventDict:
    """Adds `trace_id` and `span_id` of the current span (when tracing is on)."""
    for key, value in current_ids().items():
        event.setdefault(key, value)
    return event


def configure_logging(component: str, *, level: str = "info", fmt: str = "auto") -> None:
    """Routes structlog and stdlib logging through one renderer tagged with `component`."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        lambda _logger, _name, event: {"component": component, **event},
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            # In JSON, an exception's traceback becomes the line's `exception` text (the
            # console renderer prints it itself): without it a crash logs only its message.
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        *(() if use_console else (structlog.processors.format_exc_info,)),
                        renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # httpx logs every request URL at INFO; keep them at debug so logs stay about jobs.
    for noisy in ("httpx", "httpcore", "openai", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
