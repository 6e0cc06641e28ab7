"""The HTTP surface of the simulated model: a Starlette app speaking the OpenAI API.

Routes: `POST /v1/chat/completions` (also `/chat/completions`), `GET /v1/models` (also
`/models`) and `GET /health`. Every model name is accepted and echoed. Malformed requests
get a 400 in OpenAI's error shape, unknown routes a 404 in the same shape. No API key is
checked: the simulation holds nothing worth protecting.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._model import SimulatedModel
from ._recorder import Recorder
from ._requests import InvalidRequestError, parse_chat_request
from ._responses import chat_completion, error, model_list

log = structlog.get_logger("mipro.simulated_model")

#: The id `GET /v1/models` lists.
MODEL_ID = "simulated"


async def _chat_completions(request: Request) -> JSONResponse:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return JSONResponse(error("We could not parse the JSON body of your request."),
                            status_code=400)
    try:
        chat = parse_chat_request(body)
    except InvalidRequestError as exc:
        log.info("simulated_model.invalid_request", param=exc.param, reason=exc.message)
        return JSONResponse(error(exc.message, param=exc.param), status_code=400)
    model: SimulatedModel = request.app.state.model
    completion = model.complete(chat)
    recorder: Recorder = request.app.state.recorder
    await recorder.record(chat, completion)
    log.debug("simulated_model.completion", model=chat.model, has_tools=bool(chat.tools),
              answer=completion.choices[0].answer[:80])
    return JSONResponse(chat_completion(completion))


async def _models(request: Request) -> JSONResponse:
    return JSONResponse(model_list(MODEL_ID))


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "healthy": True, "model": MODEL_ID,
                         "simulated": True})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    what = "Invalid URL" if exc.status_code == 404 else str(exc.detail)
    return JSONResponse(error(f"{what} ({request.method} {request.url.path})"),
                        status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("simulated_model.internal_error")
    return JSONResponse(error("The simulated model failed on this request.",
                              type="server_error"), status_code=500)


def create_app(record_path: Path | None = None) -> Starlette:
    """The simulated model's ASGI app; `record_path` appends one JSON line per completion."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("simulated_model.started",
                 note="simulated OpenAI-compatible model for tests and the offline demo; "
                      "not a language model",
                 recording=str(record_path) if record_path else None)
        yield

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
    app.state.model = SimulatedModel()
    app.state.recorder = Recorder(record_path)
    return app
