"""The one place that turns a provider name into an OpenAI-compatible client.

Both the proposer service (for the proposer model) and the orchestrator's interceptor (for
the policy model) resolve providers here, so a provider is configured once for both:

- `MIPRO_PROVIDER_<NAME>_BASE_URL` / `MIPRO_PROVIDER_<NAME>_API_KEY` point any provider name
  at any OpenAI-compatible server (vLLM, Ollama, llama.cpp); they win over the rest.
- `openai` reads `OPENAI_API_KEY` (or `PROD_OPENAI_API_KEY`) and honours `OPENAI_BASE_URL`.
- `groq` reads `GROQ_API_KEY` and uses Groq's OpenAI-compatible endpoint.

A key is required only for the built-in endpoints of `openai` and `groq`. A provider pointed
at another server needs none (keyless vLLM, Ollama, llama.cpp): the client then sends a
placeholder key. Any other name without a base URL is unknown.

Retries are the openai SDK's own (429, 5xx, timeouts, lost connections; `Retry-After`
honoured): `make_async_client` sets how many, from `MIPRO_PROVIDER_MAX_RETRIES`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from ._settings import Settings

if TYPE_CHECKING:  # the SDK takes about a second to import; only the proposer calls it
    import openai

__all__ = [
    "KEYLESS_PLACEHOLDER",
    "ClientOptions",
    "ProviderEndpoint",
    "ProviderError",
    "client_options",
    "make_async_client",
    "override_variables",
    "resolve_provider",
]

_BUILTIN_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
}
_BUILTIN_KEY_VARIABLES = {
    "openai": ("OPENAI_API_KEY", "PROD_OPENAI_API_KEY"),
    "groq": ("GROQ_API_KEY",),
}
#: The key sent to a keyless server: the openai client insists on having one.
KEYLESS_PLACEHOLDER = "unused"
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ProviderError(ValueError):
    """A provider name cannot be resolved to an endpoint; the message says which and why."""


@dataclass(frozen=True)
class ProviderEndpoint:
    """An OpenAI-compatible endpoint. The key is kept out of `repr` so it never reaches logs."""

    name: str
    base_url: str
    api_key: str = field(repr=False)


def _override_prefix(name: str) -> str:
    return "MIPRO_PROVIDER_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_"


def override_variables(name: str) -> tuple[str, str]:
    """The variables that point provider `name` elsewhere: its base URL's and its key's."""
    prefix = _override_prefix(name)
    return prefix + "BASE_URL", prefix + "API_KEY"


def resolve_provider(name: str, env: Mapping[str, str] | None = None) -> ProviderEndpoint:
    """Resolves `name` to its base URL and key, or raises `ProviderError` saying why not."""
    env = os.environ if env is None else env
    if not _NAME_PATTERN.match(name):
        raise ProviderError(f"provider {name!r} is not a valid provider name")
    prefix = _override_prefix(name)
    base_url = env.get(prefix + "BASE_URL", "")
    api_key = env.get(prefix + "API_KEY", "")
    if name == "openai" and not base_url:
        base_url = env.get("OPENAI_BASE_URL", "")
    base_url = base_url or _BUILTIN_BASE_URLS.get(name, "")
    if not base_url:
        raise ProviderError(
            f"unknown provider {name!r}: set {prefix}BASE_URL to an OpenAI-compatible server"
        )
    if not api_key:
        api_key = next((env[v] for v in _BUILTIN_KEY_VARIABLES.get(name, ()) if env.get(v)), "")
    if not api_key and base_url.rstrip("/") == _BUILTIN_BASE_URLS.get(name):
        names = " or ".join((*_BUILTIN_KEY_VARIABLES[name], prefix + "API_KEY"))
        raise ProviderError(
            f"provider {name!r} has no API key: set {names}, or set {prefix}BASE_URL "
            "to an OpenAI-compatible server that needs none")
    # A server of one's own (vLLM, Ollama) often needs no key; the client insists on one.
    api_key = api_key or KEYLESS_PLACEHOLDER
    return ProviderEndpoint(name=name, base_url=base_url.rstrip("/"), api_key=api_key)


_DEFAULTS = Settings.model_fields


def make_async_client(
    endpoint: ProviderEndpoint,
    *,
    timeout_seconds: float = _DEFAULTS["provider_timeout_seconds"].default,
    connect_timeout_seconds: float = _DEFAULTS["provider_connect_timeout_seconds"].default,
    max_retries: int = _DEFAULTS["provider_max_retries"].default,
    http_client: Any = None,
) -> openai.AsyncOpenAI:
    """An `openai.AsyncOpenAI` for `endpoint`. Each attempt is bounded by `timeout_seconds`
    (`MIPRO_PROVIDER_TIMEOUT_SECONDS`); a failed call (429, 5xx, timeout, lost connection) is
    retried `max_retries` times (`MIPRO_PROVIDER_MAX_RETRIES`) by the SDK, with exponential
    backoff and jitter, honouring `Retry-After`, so a call makes at most `max_retries + 1`
    attempts. Pass the process's settings through `client_options(settings)`; `http_client`
    replaces the SDK's own connection pool (tests pass a mock transport)."""
    import openai

    return openai.AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        timeout=openai.Timeout(timeout_seconds, connect=connect_timeout_seconds),
        max_retries=max_retries,
        http_client=http_client,
    )


class ClientOptions(TypedDict):
    """The keyword arguments of `make_async_client` that settings decide."""

    timeout_seconds: float
    connect_timeout_seconds: float
    max_retries: int


def client_options(settings: Settings) -> ClientOptions:
    """The `make_async_client` keyword arguments that `settings` sets."""
    return ClientOptions(timeout_seconds=settings.provider_timeout_seconds,
                         connect_timeout_seconds=settings.provider_connect_timeout_seconds,
                         max_retries=settings.provider_max_retries)
