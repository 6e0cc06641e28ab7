"""The one place that turns a provider name into an OpenAI-compatible client.

Both the proposer service (for the proposer model) and the orchestrator's interceptor (for
the policy model) resolve providers here, so a provider is configured once for both:

- `MIPRO_PROVIDER_<NAME>_BASE_URL` / `MIPRO_PROVIDER_<NAME>_API_KEY` point any provider name
  at any OpenAI-compatible server (vLLM, Ollama, llama.cpp); they win over the rest.
- `openai` reads `OPENAI_API_KEY` (or `PROD_OPENAI_API_KEY`) and honours `OPENAI_BASE_URL`.
- `groq` reads `GROQ_API_KEY` and uses Groq's OpenAI-compatible endpoint.

Any other name without a base URL is unknown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
import openai

from ._retry import Retry, RetryPolicy, parse_retry_after

__all__ = [
    "PROVIDER_RETRY_POLICY",
    "ProviderEndpoint",
    "ProviderError",
    "make_async_client",
    "override_variables",
    "provider_retry_decision",
    "resolve_provider",
]

#: How provider calls are retried (429, 5xx, timeouts, connection errors).
PROVIDER_RETRY_POLICY = RetryPolicy(max_attempts=6, initial_backoff=0.5, max_backoff=30.0,
                                    max_elapsed=180.0)

_BUILTIN_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
}
_BUILTIN_KEY_VARIABLES = {
    "openai": ("OPENAI_API_KEY", "PROD_OPENAI_API_KEY"),
    "groq": ("GROQ_API_KEY",),
}
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
        for variable in _BUILTIN_KEY_VARIABLES.get(name, ()):
            if env.get(variable):
                api_key = env[variable]
                break
    if not api_key:
        if name in _BUILTIN_KEY_VARIABLES:
            names = " or ".join((*_BUILTIN_KEY_VARIABLES[name], prefix + "API_KEY"))
            raise ProviderError(f"provider {name!r} has no API key: set {names}")
        # Self-hosted servers (vLLM, Ollama) often need no key; the client insists on one.
        api_key = "unused"
    return ProviderEndpoint(name=name, base_url=base_url.rstrip("/"), api_key=api_key)


def provider_retry_decision(error: BaseException) -> Retry | None:
    """Whether a failed provider call is worth retrying: 429, 5xx, timeouts, lost connections."""
    if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
        return Retry()
    if isinstance(error, openai.APIStatusError) and (
            error.status_code == 429 or error.status_code >= 500):
        return Retry(parse_retry_after(error.response.headers.get("retry-after")))
    return None


def make_async_client(
    endpoint: ProviderEndpoint, *, timeout_seconds: float = 120.0, max_retries: int = 0
) -> openai.AsyncOpenAI:
    """An `openai.AsyncOpenAI` for `endpoint` with a bounded timeout. The SDK's own retries
    are off by default: callers retry with `PROVIDER_RETRY_POLICY`, one policy for all."""
    return openai.AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        timeout=httpx.Timeout(timeout_seconds, connect=10.0),
        max_retries=max_retries,
    )
