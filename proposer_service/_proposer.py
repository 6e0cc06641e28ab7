"""The transport-free core: `Proposer.propose(request)` writes candidate instructions.

For a request it validates the fields, resolves the provider through the shared factory
(`mipro._providers`), makes one model call per candidate (concurrently, at most
`max_concurrent_calls` at once), each with its own tip and sampling seed
`request.seed * 1000 + index`, parses the replies, drops duplicates (see `_dedup.py`) and
sums the token usage. Calls that fail are logged and left out; when every call fails the
request fails with `ProposalsFailed`, naming the provider and the cause. API keys never
reach a log line or an error message.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import openai
import structlog

from mipro import _metrics, _tracing
from mipro._pricing import PriceTable
from mipro._providers import (
    ProviderEndpoint,
    ProviderError,
    client_options,
    make_async_client,
    resolve_provider,
)
from mipro._settings import Settings

from ._dedup import clean_reply, dedupe
from ._errors import InvalidRequest, ProposalsFailed, UnknownProvider
from ._meta_prompt import build_messages
from ._models import (
    DEFAULT_MAX_TOKENS,
    INSTRUCTION_ONLY,
    Proposal,
    ProposeRequest,
    ProposeResult,
    TokenUsage,
)
from ._tips import Tip, assign_tips

log = structlog.get_logger(__name__)

#: Candidates one request may ask for.
MIN_CANDIDATES, MAX_CANDIDATES = 1, 64
#: The largest completion token cap of one call.
MAX_TOKENS_LIMIT = 32768
#: The sampling seed of call `index` is `request.seed * SEED_STRIDE + index`.
SEED_STRIDE = 1000

_SECRET_LIKE = re.compile(r"\b(?:sk|gsk)-[A-Za-z0-9_\-*.]{6,}")


@dataclass(frozen=True)
class _Reply:
    index: int
    tip: Tip
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class _Failure:
    index: int
    tip: Tip
    cause: str


def validate_request(request: ProposeRequest) -> None:
    """Raises `InvalidRequest` naming the first field that is missing or out of range."""
    if not MIN_CANDIDATES <= request.num_candidates <= MAX_CANDIDATES:
        raise InvalidRequest("num_candidates", f"must be between {MIN_CANDIDATES} and "
                             f"{MAX_CANDIDATES}, got {request.num_candidates}")
    if request.mode != INSTRUCTION_ONLY:
        raise InvalidRequest("mode", f"must be {INSTRUCTION_ONLY!r}, got {request.mode!r}")
    model = request.model
    if not model.provider.strip():
        raise InvalidRequest("model.provider", "is required")
    if not model.model.strip():
        raise InvalidRequest("model.model", "is required")
    if not (math.isfinite(model.temperature) and 0.0 <= model.temperature <= 2.0):
        raise InvalidRequest("model.temperature", f"must be between 0 and 2, got "
                             f"{model.temperature}")
    if not 0 <= model.max_tokens <= MAX_TOKENS_LIMIT:
        raise InvalidRequest("model.max_tokens", f"must be between 1 and {MAX_TOKENS_LIMIT} "
                             f"(0 for the default {DEFAULT_MAX_TOKENS}), got {model.max_tokens}")
    if request.seed < 0:
        raise InvalidRequest("seed", f"must be non-negative, got {request.seed}")


def _redact(text: str, secret: str) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return _SECRET_LIKE.sub("***", text)


def _where(endpoint: ProviderEndpoint) -> str:
    """The endpoint's host and port, without any credentials in the URL."""
    parts = urlsplit(endpoint.base_url)
    host = parts.hostname or endpoint.base_url
    return f"{host}:{parts.port}" if parts.port else host


def describe_error(error: Exception, endpoint: ProviderEndpoint) -> str:
    """A one-line cause for a failed call, with the API key redacted."""
    where = _where(endpoint)
    if isinstance(error, openai.APITimeoutError):
        cause = f"timed out waiting for {where}"
    elif isinstance(error, openai.APIConnectionError):
        detail = str(error.__cause__ or "") or error.message
        cause = f"cannot connect to {where}: {detail}"
    elif isinstance(error, openai.APIStatusError):
        cause = f"{where} answered HTTP {error.status_code}: {error.message}"
    else:
        cause = f"{type(error).__name__}: {error}"
    return _redact(" ".join(cause.split())[:500], endpoint.api_key)


ClientFactory = Callable[[ProviderEndpoint], openai.AsyncOpenAI]


class Proposer:
    """Writes candidate instructions with the request's proposer model.

    `env` is where providers are resolved (default: the process environment, read on each
    request). At most `max_concurrent_calls` calls of one request run at once. Clients come
    from `client_factory` (default: `mipro._providers.make_async_client` with the provider
    timeouts and retries of `settings`, default values if none); one is kept per endpoint until
    `aclose()`. Failed calls are retried by the client itself, the openai SDK (429, 5xx,
    timeouts; `Retry-After` honoured); this class adds no retries of its own.
    """

    def __init__(self, *, env: Mapping[str, str] | None = None, max_concurrent_calls: int = 4,
                 settings: Settings | None = None,
                 client_factory: ClientFactory | None = None) -> None:
        if max_concurrent_calls < 1:
            raise ValueError("max_concurrent_calls must be at least 1")
        self._env = env
        self._max_concurrent_calls = max_concurrent_calls
        settings = settings or Settings.from_env({})
        options = client_options(settings)
        #: Prices the `mipro_provider_cost_usd_total` metric (`MIPRO_PRICES_FILE`).
        self.prices = PriceTable.load(settings.prices_file)
        self._client_factory: ClientFactory = client_factory or (
            lambda endpoint: make_async_client(endpoint, **options))
        self._clients: dict[ProviderEndpoint, openai.AsyncOpenAI] = {}

    def _client(self, endpoint: ProviderEndpoint) -> openai.AsyncOpenAI:
        client = self._clients.get(endpoint)
        if client is None:
            client = self._clients[endpoint] = self._client_factory(endpoint)
        return client

    async def aclose(self) -> None:
        """Closes the cached clients."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    def _resolve(self, provider: str) -> ProviderEndpoint:
        try:
            return resolve_provider(provider, self._env)
        except ProviderError as error:
            raise UnknownProvider(provider, str(error)) from None

    async def propose(self, request: ProposeRequest) -> ProposeResult:
        """Up to `request.num_candidates` distinct instructions, none equal to the baseline."""
        with structlog.contextvars.bound_contextvars(job_id=request.job_id):
            validate_request(request)
            endpoint = self._resolve(request.model.provider)
            client = self._client(endpoint)
            tips = assign_tips(request.seed, request.num_candidates)
            log.info("proposing", provider=endpoint.name, model=request.model.model,
                     num_candidates=request.num_candidates, seed=request.seed,
                     examples=len(request.examples),
                     previous_candidates=len(request.previous_candidates))
            semaphore = asyncio.Semaphore(self._max_concurrent_calls)
            outcomes = await asyncio.gather(*(
                self._call(client, endpoint, request, index, tip, semaphore)
                for index, tip in enumerate(tips)))
            return self._collect(request, endpoint, outcomes)

    async def _call(self, client: openai.AsyncOpenAI, endpoint: ProviderEndpoint,
                    request: ProposeRequest, index: int, tip: Tip,
                    semaphore: asyncio.Semaphore) -> _Reply | _Failure:
        model = request.model
        messages: Any = build_messages(request, tip)
        async with semaphore:
            started = time.perf_counter()
            with _tracing.span(f"chat {model.model}", kind=_tracing.SpanKind.CLIENT,
                               attributes={"gen_ai.operation.name": "chat",
                                           "gen_ai.system": endpoint.name,
                                           "gen_ai.request.model": model.model,
                                           "mipro.tip": tip.id}) as span:
                try:
                    completion = await client.chat.completions.create(
                        model=model.model, messages=messages, temperature=model.temperature,
                        max_tokens=model.max_tokens or DEFAULT_MAX_TOKENS,
                        seed=request.seed * SEED_STRIDE + index)
                except openai.OpenAIError as error:
                    cause = describe_error(error, endpoint)
                    if span is not None:
                        span.set_status(_tracing.Status(_tracing.StatusCode.ERROR, cause))
                    _metrics.count_model_call("proposer", model.model,
                                              time.perf_counter() - started, ok=False)
                    return _Failure(index, tip, cause)
                choices = getattr(completion, "choices", None) or []
                message = getattr(choices[0], "message", None) if choices else None
                usage = getattr(completion, "usage", None)
                reply = _Reply(index, tip, getattr(message, "content", None) or "",
                               prompt_tokens=getattr(usage, "prompt_tokens", None) or 0,
                               completion_tokens=getattr(usage, "completion_tokens", None) or 0)
                if span is not None:
                    span.set_attribute("gen_ai.usage.input_tokens", reply.prompt_tokens)
                    span.set_attribute("gen_ai.usage.output_tokens", reply.completion_tokens)
        _metrics.count_model_call(
            "proposer", model.model, time.perf_counter() - started, ok=True,
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
            cost_usd=self.prices.cost_usd(model.model, reply.prompt_tokens,
                                          reply.completion_tokens))
        return reply

    def _collect(self, request: ProposeRequest, endpoint: ProviderEndpoint,
                 outcomes: list[_Reply | _Failure]) -> ProposeResult:
        replies = [o for o in outcomes if isinstance(o, _Reply)]
        failures = [o for o in outcomes if isinstance(o, _Failure)]
        for failure in failures:
            log.warning("proposal call failed", provider=endpoint.name, index=failure.index,
                        tip=failure.tip.id, cause=failure.cause)
        if not replies:
            raise ProposalsFailed(endpoint.name, failures[0].cause, calls=len(failures))
        proposals: list[Proposal] = []
        for reply in replies:
            instruction = clean_reply(reply.text)
            if instruction:
                proposals.append(Proposal(instruction, reply.tip.id))
            else:
                log.warning("empty proposal dropped", index=reply.index, tip=reply.tip.id)
        known = [request.baseline_instruction,
                 *(c.instruction for c in request.previous_candidates)]
        kept, dropped = dedupe(proposals, known)
        usage = TokenUsage(prompt_tokens=sum(r.prompt_tokens for r in replies),
                           completion_tokens=sum(r.completion_tokens for r in replies),
                           calls=len(replies))
        log.info("proposals ready", kept=len(kept), duplicates_dropped=dropped,
                 empty=len(replies) - len(proposals), failed=len(failures),
                 prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        return ProposeResult(tuple(kept), usage, dropped)
