"""The transport-free core: `Proposer.propose(request)` writes candidate instructions.

For a request it validates the fields, resolves the provider through the shared factory
(`mipro._providers`), and then:

1. when the request asks for it (once per job), writes the job's dataset summary with one
   call that shows the model the bootstrap traces (`build_summary_messages`);
2. makes one call per `ReplyRules.instructions_per_call` candidates, concurrently (at most
   `max_concurrent_calls` at once), call `i` under its own tip with the sampling seed
   `request.seed * SEED_STRIDE + i`; each asks for JSON (`response_format` with a JSON
   schema, `{"instructions": [...]}`), and a provider that refuses `response_format` is
   asked again in plain text, once per endpoint and process (`plain_text_fallbacks`);
3. parses every reply (`_replies.parse_reply`: JSON, fenced, quoted or plain), cuts an
   echo of the meta-prompt off the end of an instruction (`_replies.trim_echo`), and rejects,
   with a counted reason, what is not an instruction (`_replies.rejection`) or copies the
   baseline, an earlier candidate or another proposal (`_dedup.duplicate_reasons`);
4. when fewer than `num_candidates` survive, calls again for the missing ones (new seeds,
   the next tips), at most `ReplyRules.refill_passes` times.

Whatever order the calls finish in, the result is assembled in call order, so the same
request and the same replies give the same proposals. Calls that fail are logged and left
out; when every call fails the request fails with `ProposalsFailed`, naming the provider and
the cause. API keys never reach a log line or an error message.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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

from ._dedup import duplicate_reasons
from ._errors import InvalidRequest, ProposalsFailed, UnknownProvider
from ._meta_prompt import build_messages, build_summary_messages, fixed_texts
from ._models import (
    DEFAULT_MAX_TOKENS,
    INSTRUCTION_ONLY,
    Proposal,
    ProposeRequest,
    ProposeResult,
    TokenUsage,
)
from ._replies import Echoes, parse_reply, rejection, sentences_of, trim_echo
from ._rules import DUPLICATE_REASONS, REJECT_EMPTY, ReplyRules
from ._tips import TIPS, Tip, assign_tips

log = structlog.get_logger(__name__)

#: Candidates one request may ask for.
MIN_CANDIDATES, MAX_CANDIDATES = 1, 64
#: The largest completion token cap of one call.
MAX_TOKENS_LIMIT = 32768
#: The sampling seed of call `index` is `request.seed * SEED_STRIDE + index`.
SEED_STRIDE = 1000
#: The dataset-summary call's index (its seed is `request.seed * SEED_STRIDE + 999`).
SUMMARY_INDEX = SEED_STRIDE - 1
#: The `response_format` schema names.
INSTRUCTIONS_SCHEMA_NAME, SUMMARY_SCHEMA_NAME = "proposed_instructions", "dataset_summary"


def instructions_schema(count: int) -> dict[str, Any]:
    """The JSON schema of a reply holding 1 to `count` instructions."""
    return {"type": "object",
            "properties": {"instructions": {"type": "array", "items": {"type": "string"},
                                            "minItems": 1, "maxItems": count}},
            "required": ["instructions"], "additionalProperties": False}


SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"summary": {"type": "string"}},
    "required": ["summary"], "additionalProperties": False}

_SECRET_LIKE = re.compile(r"\b(?:sk|gsk)-[A-Za-z0-9_\-*.]{6,}")


@dataclass(frozen=True)
class _Call:
    """One model call: its index (which fixes its seed), tip and instructions asked for."""

    index: int
    tip: Tip
    count: int


@dataclass(frozen=True)
class _Reply:
    call: _Call
    text: str
    prompt_tokens: int
    completion_tokens: int
    plain_fallback: bool = False


@dataclass(frozen=True)
class _Failure:
    call: _Call
    cause: str


@dataclass
class _Tally:
    """What a request's calls produced so far."""

    kept: list[Proposal] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    replies: list[_Reply] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    surplus: int = 0


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
    timeouts; `Retry-After` honoured); this class adds no retries of its own. `rules` holds
    every threshold of reply handling (`_rules.py`).
    """

    def __init__(self, *, env: Mapping[str, str] | None = None, max_concurrent_calls: int = 4,
                 settings: Settings | None = None,
                 client_factory: ClientFactory | None = None,
                 rules: ReplyRules | None = None) -> None:
        if max_concurrent_calls < 1:
            raise ValueError("max_concurrent_calls must be at least 1")
        self._env = env
        self._max_concurrent_calls = max_concurrent_calls
        self._rules = rules or ReplyRules()
        settings = settings or Settings.from_env({})
        options = client_options(settings)
        #: Prices the `mipro_provider_cost_usd_total` metric (`MIPRO_PRICES_FILE`).
        self.prices = PriceTable.load(settings.prices_file)
        self._client_factory: ClientFactory = client_factory or (
            lambda endpoint: make_async_client(endpoint, **options))
        self._clients: dict[ProviderEndpoint, openai.AsyncOpenAI] = {}
        #: Endpoints that refused `response_format`: asked in plain text from then on.
        self._plain_endpoints: set[ProviderEndpoint] = set()

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
            log.info("proposing", provider=endpoint.name, model=request.model.model,
                     num_candidates=request.num_candidates, seed=request.seed,
                     examples=len(request.examples),
                     previous_candidates=len(request.previous_candidates),
                     summarize_dataset=request.summarize_dataset)
            tally = _Tally()
            written = ""
            if request.summarize_dataset and request.examples:
                written = await self._summarize(client, endpoint, request, tally)
            summary = written or request.dataset_summary
            per_call = self._rules.instructions_per_call
            echoes = Echoes.of(sentences_of(fixed_texts(TIPS)),
                               (e.input for e in request.examples), self._rules)
            first, passes = 0, 0
            while True:
                missing = request.num_candidates - len(tally.kept)
                counts = [per_call] * (missing // per_call) + (
                    [missing % per_call] if missing % per_call else [])
                tips = assign_tips(request.seed, first + len(counts))
                calls = [_Call(first + n, tips[first + n], count)
                         for n, count in enumerate(counts)]
                first += len(calls)
                outcomes = await self._run_calls(client, endpoint, request, calls, summary)
                answered = self._fold(request, outcomes, tally, echoes)
                passes += 1
                if not answered or len(tally.kept) >= request.num_candidates \
                        or passes > self._rules.refill_passes:
                    break
            return self._result(endpoint, tally, written)

    async def _run_calls(self, client: openai.AsyncOpenAI, endpoint: ProviderEndpoint,
                         request: ProposeRequest, calls: Sequence[_Call],
                         summary: str) -> list[_Reply | _Failure]:
        semaphore = asyncio.Semaphore(self._max_concurrent_calls)

        async def one(call: _Call) -> _Reply | _Failure:
            messages = build_messages(request, call.tip, count=call.count,
                                      dataset_summary=summary)
            async with semaphore:
                return await self._call(client, endpoint, request, call, messages,
                                        (INSTRUCTIONS_SCHEMA_NAME,
                                         instructions_schema(call.count)))

        return list(await asyncio.gather(*(one(call) for call in calls)))

    async def _summarize(self, client: openai.AsyncOpenAI, endpoint: ProviderEndpoint,
                         request: ProposeRequest, tally: _Tally) -> str:
        """The job's dataset summary from one call; "" when it failed or is no summary."""
        call = _Call(SUMMARY_INDEX, TIPS[0], 1)
        outcome = await self._call(client, endpoint, request, call,
                                   build_summary_messages(request),
                                   (SUMMARY_SCHEMA_NAME, SUMMARY_SCHEMA))
        if isinstance(outcome, _Failure):
            log.warning("dataset summary call failed", provider=endpoint.name,
                        cause=outcome.cause)
            return ""
        tally.replies.append(outcome)
        texts = parse_reply(outcome.text)
        text = " ".join(" ".join(texts).split())
        echoes = Echoes.of((), (e.input for e in request.examples), self._rules)
        reason = rejection(text, self._rules, echoes)
        if reason is not None:
            log.warning("dataset summary rejected", reason=reason, text=text[:200])
            return ""
        log.info("dataset summary written", chars=len(text))
        return text

    async def _call(self, client: openai.AsyncOpenAI, endpoint: ProviderEndpoint,
                    request: ProposeRequest, call: _Call, messages: Any,
                    schema: tuple[str, dict[str, Any]]) -> _Reply | _Failure:
        model = request.model
        started = time.perf_counter()
        with _tracing.span(f"chat {model.model}", kind=_tracing.SpanKind.CLIENT,
                           attributes={"gen_ai.operation.name": "chat",
                                       "gen_ai.system": endpoint.name,
                                       "gen_ai.request.model": model.model,
                                       "mipro.tip": call.tip.id,
                                       "mipro.purpose": ("dataset_summary"
                                                         if call.index == SUMMARY_INDEX
                                                         else "instructions")}) as span:
            outcome = await self._complete(client, endpoint, request, call, messages, schema)
            if span is not None and isinstance(outcome, _Failure):
                span.set_status(_tracing.Status(_tracing.StatusCode.ERROR, outcome.cause))
            elif span is not None and isinstance(outcome, _Reply):
                span.set_attribute("gen_ai.usage.input_tokens", outcome.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", outcome.completion_tokens)
        elapsed = time.perf_counter() - started
        if isinstance(outcome, _Failure):
            _metrics.count_model_call("proposer", model.model, elapsed, ok=False)
        else:
            _metrics.count_model_call(
                "proposer", model.model, elapsed, ok=True, prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                cost_usd=self.prices.cost_usd(model.model, outcome.prompt_tokens,
                                              outcome.completion_tokens))
        return outcome

    async def _complete(self, client: openai.AsyncOpenAI, endpoint: ProviderEndpoint,
                        request: ProposeRequest, call: _Call, messages: Any,
                        schema: tuple[str, dict[str, Any]]) -> _Reply | _Failure:
        """One chat completion, asked for JSON (`schema`) unless the endpoint refused it."""
        model = request.model
        options: dict[str, Any] = dict(
            model=model.model, messages=messages, temperature=model.temperature,
            max_tokens=model.max_tokens or DEFAULT_MAX_TOKENS,
            seed=request.seed * SEED_STRIDE + call.index)
        fell_back = False
        try:
            if self._rules.structured_output and endpoint not in self._plain_endpoints:
                name, body = schema
                response_format: Any = {"type": "json_schema", "json_schema": {
                    "name": name, "schema": body, "strict": True}}
                try:
                    completion = await client.chat.completions.create(
                        **options, response_format=response_format)
                except (openai.BadRequestError, openai.UnprocessableEntityError) as refusal:
                    completion = await client.chat.completions.create(**options)
                    fell_back = True
                    if endpoint not in self._plain_endpoints:
                        self._plain_endpoints.add(endpoint)
                        log.warning("provider refused response_format; asking in plain text "
                                    "from now on", provider=endpoint.name,
                                    cause=describe_error(refusal, endpoint))
            else:
                completion = await client.chat.completions.create(**options)
        except openai.OpenAIError as error:
            return _Failure(call, describe_error(error, endpoint))
        choices = getattr(completion, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        usage = getattr(completion, "usage", None)
        return _Reply(call, getattr(message, "content", None) or "",
                      prompt_tokens=getattr(usage, "prompt_tokens", None) or 0,
                      completion_tokens=getattr(usage, "completion_tokens", None) or 0,
                      plain_fallback=fell_back)

    def _fold(self, request: ProposeRequest, outcomes: Sequence[_Reply | _Failure],
              tally: _Tally, echoes: Echoes) -> bool:
        """Screens one pass's replies into `tally`, in call order; False when none answered."""
        replies = [o for o in outcomes if isinstance(o, _Reply)]
        tally.replies.extend(replies)
        for outcome in outcomes:
            if isinstance(outcome, _Failure):
                tally.failures.append(outcome)
                log.warning("proposal call failed", index=outcome.call.index,
                            tip=outcome.call.tip.id, cause=outcome.cause)
        parsed = []
        for reply in replies:
            texts = parse_reply(reply.text)  # all of them: a list is several candidates
            if not texts:
                tally.rejected[REJECT_EMPTY] += 1
                log.info("reply rejected", reason=REJECT_EMPTY, index=reply.call.index)
            parsed.append((reply, texts))
        # Interleaved: every call's first instruction, then every call's second, ...
        longest = max((len(texts) for _, texts in parsed), default=0)
        ordered = [(reply, texts[position]) for position in range(longest)
                   for reply, texts in parsed if position < len(texts)]
        screened = []
        for reply, text in ordered:
            text = trim_echo(text, self._rules)
            reason = rejection(text, self._rules, echoes)
            if reason is None:
                screened.append(Proposal(text, reply.call.tip.id))
            else:
                tally.rejected[reason] += 1
                log.info("reply rejected", reason=reason, index=reply.call.index,
                         tip=reply.call.tip.id, text=text[:200])
        known = [p.instruction for p in tally.kept]
        reasons = duplicate_reasons([*known, *(p.instruction for p in screened)],
                                    request.baseline_instruction,
                                    (c.instruction for c in request.previous_candidates),
                                    self._rules.near_duplicate_jaccard)[len(known):]
        for proposal, reason in zip(screened, reasons, strict=True):
            if reason is not None:
                tally.rejected[reason] += 1
                log.info("reply rejected", reason=reason, tip=proposal.tip,
                         text=proposal.instruction[:200])
            elif len(tally.kept) < request.num_candidates:
                tally.kept.append(proposal)
            else:
                tally.surplus += 1
        return bool(replies)

    def _result(self, endpoint: ProviderEndpoint, tally: _Tally, written: str) -> ProposeResult:
        if not tally.replies:
            failures = tally.failures
            raise ProposalsFailed(endpoint.name, failures[0].cause if failures else
                                  "no call was made", calls=len(failures))
        replies = tally.replies
        usage = TokenUsage(prompt_tokens=sum(r.prompt_tokens for r in replies),
                           completion_tokens=sum(r.completion_tokens for r in replies),
                           calls=len(replies))
        rejected = dict(sorted(tally.rejected.items()))
        duplicates = sum(n for reason, n in rejected.items() if reason in DUPLICATE_REASONS)
        fallbacks = sum(r.plain_fallback for r in replies)
        log.info("proposals ready", kept=len(tally.kept), rejected=rejected,
                 duplicates_dropped=duplicates, surplus=tally.surplus,
                 failed=len(tally.failures), plain_text_fallbacks=fallbacks,
                 dataset_summary_written=bool(written), calls=usage.calls,
                 prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        return ProposeResult(tuple(tally.kept), usage, duplicates, rejected=rejected,
                             dataset_summary=written, plain_text_fallbacks=fallbacks)
