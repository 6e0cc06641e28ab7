"""`python -m mipro.simulated_model`: runs the simulated OpenAI-compatible model server.

    python -m mipro.simulated_model --host 127.0.0.1 --port 8090 [--record PATH]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from mipro._logging import configure_logging

from ._server import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mipro.simulated_model",
        description="A simulated OpenAI-compatible model server (no weights, no key) for "
                    "tests and the offline demo.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (default 8090)")
    parser.add_argument("--record", type=Path, default=None,
                        help="append one JSON line per chat completion to this file")
    args = parser.parse_args(argv)
    configure_logging("simulated-model", level=os.environ.get("MIPRO_LOG_LEVEL", "info"),
                      fmt=os.environ.get("MIPRO_LOG_FORMAT", "auto"))
    uvicorn.run(create_app(args.record), host=args.host, port=args.port, log_config=None,
                access_log=False)


if __name__ == "__main__":
    main()
