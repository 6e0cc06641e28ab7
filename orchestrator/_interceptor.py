"""The interceptor: the OpenAI-compatible endpoint that task apps send their model calls to.

It enforces the job; it does not relay for it. A rollout's `inference_url` is
`<public base>/v1/<token>?cid=<rollout id>`, where the token (`_tokens.py`) is signed and
expiring and names the (job, candidate, rollout) and the opening of the rollout it was minted
for. A call is served only when the token verifies (else 401) and that opening is still in
the rollout book (else 404; `_rollout_book.py`: in this process, or in the store so that any
interceptor replica serves any rollout); nothing refused is ever forwarded. Then, in order:

- the body is read up to `max_body_bytes` (413 past it) and must be JSON without NaN/Infinity;
- the job's environment key must be presented (401);
- the job's policy is applied (`enforce_policy`): the model is forced, `n` must be absent or 1
  and `stream` false (400), the token cap is the job's `max_completion_tokens` or, when it has
  none, at most the server's default cap, and only `PASSED_FIELDS` reach the provider (others
  are dropped and named in the `X-Mipro-Dropped-Fields` response header);
- a job whose spend budget is used up gets 429 (the plan ends it with that
  `termination_reason` at its next check), and at most the job's `max_concurrent` calls are
  forwarded at once (the rest wait);
- for a candidate, its prompt is applied (`_candidate_prompt.apply_prompt`): per stage, its
  instruction replaces the system message and its demos are inserted (the baseline passes
  through). The stage is the URL's `/v1/<token>/<stage_id>/chat/completions` segment, else
  the fingerprint of the call's system message.

The call's provider is resolved by the shared provider factory and the call forwarded by
`_forwarding.ProviderForwarder` (aiohttp; stamina's retries are this hop's one retry layer),
metered against the job's budgets, reported to the ledger, and
the provider's JSON is returned unchanged; a provider's error body is redacted first.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from mipro import _metrics, _tracing
from mipro._pricing import PriceTable
from mipro._providers import ProviderEndpoint, ProviderError, resolve_provider

from ._candidate_prompt import STAGE_ID, CandidatePrompt, apply_prompt, with_instruction
from ._exchanges import CallRefused, Exchange, ExchangeLedger, RolloutGrant
from ._forwarding import ProviderForwarder, ProviderStatusError, ProviderUnreachable
from ._json import dumps, loads_finite
from ._models import PolicySpec
from ._redact import Redactor
from ._rollout_book import RolloutBook, as_book
from ._tokens import RolloutTokens, TokenRefused

log = structlog.get_logger(__name__)

#: Request fields forwarded as the task app sent them.
PASSED_FIELDS = frozenset({
    "messages", "tools", "tool_choice", "response_format", "temperature", "top_p", "stop",
    "seed", "parallel_tool_calls", "presence_penalty", "frequency_penalty"})
#: Request fields the interceptor decides itself (checked, then set or removed).
_CONTROLLED = frozenset({"model", "n", "stream", "max_tokens", "max_completion_tokens"})
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
DEFAULT_MAX_TOKENS = 4096


class _Json(JSONResponse):
    """Starlette's JSON response, written by orjson (`_json.py`)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


Handler = Callable[[Request], Awaitable[JSONResponse]]


class PolicyViolation(Exception):
    """The call asks for what the job does not allow; answered 400."""


def _error(status: int, message: str, *, type_: str = "invalid_request_error",
           headers: dict[str, str] | None = None) -> JSONResponse:
    return _Json({"error": {"message": message, "type": type_, "param": None}}, status,
                        headers=headers)


def _presented_key(request: Request) -> str:
    key = request.headers.get("x-api-key", "")
    if not key:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    return key


def rewrite_messages(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """Replaces the first system message's content with `instruction`, or prepends one; the
    task app's own message objects are left as they were."""
    return with_instruction(messages, instruction)


def _token_cap(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def enforce_policy(body: dict[str, Any], policy: PolicySpec,
                   default_max_tokens: int) -> tuple[dict[str, Any], list[str]]:
    """The body the provider sees, and the names of the fields dropped from it; raises
    `PolicyViolation` for what cannot be made safe by rewriting."""
    if body.get("n") not in (None, 1):
        raise PolicyViolation("n must be absent or 1: one completion per call")
    if body.get("stream"):
        raise PolicyViolation("stream=true is not supported by the interceptor")
    out = {k: v for k, v in body.items() if k in PASSED_FIELDS}
    dropped = sorted(k for k in body if k not in PASSED_FIELDS and k not in _CONTROLLED)
    out["model"] = policy.model
    if policy.temperature is not None:
        out["temperature"] = policy.temperature
    if policy.max_completion_tokens is not None:
        cap = policy.max_completion_tokens
    else:
        asked = [c for c in (_token_cap(body.get("max_tokens")),
                             _token_cap(body.get("max_completion_tokens"))) if c is not None]
        cap = min([default_max_tokens, *asked])
    # One cap, under the name the task app used (local servers often know only max_tokens).
    out["max_tokens" if "max_tokens" in body else "max_completion_tokens"] = cap
    return out, dropped


class Interceptor:
    """The ASGI app serving `/v1/{token}/chat/completions`."""

    def __init__(self, ledger: ExchangeLedger | RolloutBook, *, provider_timeout: float,
                 provider_max_retries: int, provider_connect_timeout: float = 10.0,
                 tokens: RolloutTokens | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS,
                 prices: PriceTable | None = None) -> None:
        #: Open rollouts: in this process, or in the store for stateless replicas.
        self._book = as_book(ledger)
        #: Prices the `mipro_provider_cost_usd_total` metric of answered calls.
        self._prices = prices or PriceTable.load()
        self._forwarder = ProviderForwarder(
            timeout_seconds=provider_timeout, connect_timeout_seconds=provider_connect_timeout,
            max_retries=provider_max_retries)
        self._endpoints: dict[str, ProviderEndpoint] = {}
        self.tokens = tokens or RolloutTokens()
        self._max_body = max_body_bytes
        self._default_max_tokens = default_max_tokens
        #: The ASGI app. Its four routes are matched here rather than by a Starlette
        #: application, whose router and middleware stack cost about 4 % of the
        #: orchestrator's CPU per rollout on the benchmark's stack.
        self.app = self._asgi

    def _route(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | str:
        """The handler of a request and its path parameters, or the error status's reason:
        POST `/v1/{token}/chat/completions`, POST `/v1/{token}/{stage}/chat/completions`,
        POST `/v1/chat/completions` (refused: no token) and GET `/healthz`."""
        handler: Handler | None = None
        params: dict[str, str] = {}
        allowed = "POST"
        parts = path.split("/")
        if path == "/healthz":
            handler, allowed = self._health, "GET"
        elif len(parts) in (4, 5, 6) and parts[1] == "v1" and parts[-2:] == ["chat",
                                                                              "completions"]:
            segments = parts[2:-2]
            if not segments:
                handler = self._no_trial
            elif all(segments):
                handler = self._chat
                params = dict(zip(("token", "stage"), segments, strict=False))
        if handler is None:
            return "not found"
        if method != allowed:
            return f"method not allowed: {path} takes {allowed}"
        return handler, params

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is served
            return
        route = self._route(scope["method"], scope["path"])
        if isinstance(route, str):
            status = 404 if route == "not found" else 405
            await _error(status, route)(scope, receive, send)
            return
        handler, params = route
        scope["path_params"] = params
        try:
            response = await handler(Request(scope, receive))
        except Exception:
            log.exception("interceptor error", path=scope["path"])
            response = _error(500, "internal error in the interceptor", type_="api_error")
        await response(scope, receive, send)

    async def close(self) -> None:
        await self._forwarder.close()

    def _endpoint(self, provider: str) -> ProviderEndpoint:
        """The provider's endpoint, resolved once per process (settings do not change)."""
        endpoint = self._endpoints.get(provider)
        if endpoint is None:
            endpoint = self._endpoints[provider] = resolve_provider(provider)
        return endpoint

    async def _health(self, request: Request) -> JSONResponse:
        return _Json({"status": "ok"})

    async def _no_trial(self, request: Request) -> JSONResponse:
        return _error(404, "the inference URL must carry its token: /v1/<token>/chat/completions")

    async def _read_body(self, request: Request) -> bytes | None:
        """The body, or None when it is longer than `max_body_bytes`."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _chat(self, request: Request) -> JSONResponse:
        try:
            claims = self.tokens.verify(request.path_params["token"])
            grant = await self._book.admit(claims)
        except TokenRefused as refused:
            _metrics.count_refusal("token_invalid")
            return _error(401, str(refused), type_="authentication_error")
        except CallRefused as refused:
            _metrics.count_refusal("rollout_unknown" if refused.status == 404
                                   else "too_many_calls")
            return _error(refused.status, str(refused), type_=refused.kind)
        in_flight = self._book.calls_in_flight(grant.job_id)
        presented = _presented_key(request)
        if not presented or not hmac.compare_digest(presented.encode(),
                                                    grant.environment_key.encode()):
            _metrics.count_refusal("environment_key")
            return _error(401, "X-API-Key must carry the job's environment key",
                          type_="authentication_error")
        raw = await self._read_body(request)
        if raw is None:
            _metrics.count_refusal("body_too_large")
            return _error(413, f"the request body is larger than {self._max_body} bytes")
        try:
            body = loads_finite(raw)
        except ValueError:
            _metrics.count_refusal("invalid_body")
            return _error(400, "the request body is not valid JSON (NaN and Infinity included)")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            _metrics.count_refusal("invalid_body")
            return _error(400, "the request body must be an object with a messages list")
        try:
            body, dropped = enforce_policy(body, grant.policy, self._default_max_tokens)
        except PolicyViolation as violation:
            _metrics.count_refusal("policy_violation")
            return _error(400, str(violation))
        url_stage = request.path_params.get("stage", "")
        if url_stage and not STAGE_ID.match(url_stage):
            return _error(400, "the stage id in the inference URL must be letters, digits, "
                               "'_', '.' or '-', at most 64")
        prompt = grant.prompt or CandidatePrompt.single(grant.instruction)
        body["messages"], stage = apply_prompt(body["messages"], prompt, url_stage)
        headers = {"X-Mipro-Dropped-Fields": ",".join(dropped)} if dropped else {}
        async with in_flight:
            spent = await self._book.spent(grant)
            if spent is not None:
                _metrics.count_refusal("budget_spent")
                return _error(429, f"the job's {spent} budget is spent", type_="rate_limit_error",
                              headers=headers)
            response = await self._traced_forward(grant, body, stage)
        response.headers.update(headers)
        return response

    async def _traced_forward(self, grant: RolloutGrant, body: dict[str, Any],
                              stage: str = "") -> JSONResponse:
        """`_forward`, counted in the metrics and, with tracing on, as a span under the
        rollout's span (its id derived from the token's rollout id and nonce)."""
        started = time.perf_counter()
        model = grant.policy.model
        parent = (_tracing.rollout_context(grant.job_id, grant.rollout_id, grant.nonce)
                  if _tracing.enabled() else None)
        with _tracing.span(f"chat {model}", parent=parent, kind=_tracing.SpanKind.CLIENT,
                           attributes={"gen_ai.operation.name": "chat",
                                       "gen_ai.system": grant.policy.provider,
                                       "gen_ai.request.model": model,
                                       "mipro.job_id": grant.job_id,
                                       "mipro.rollout_id": grant.rollout_id}) as span:
            response, usage = await self._forward(grant, body, stage)
            ok = response.status_code < 300
            if span is not None:
                span.set_attribute("http.response.status_code", response.status_code)
                span.set_attribute("gen_ai.usage.input_tokens", usage[0])
                span.set_attribute("gen_ai.usage.output_tokens", usage[1])
                if not ok:
                    span.set_status(_tracing.Status(_tracing.StatusCode.ERROR))
        _metrics.count_model_call(
            "policy", model, time.perf_counter() - started, ok=ok, prompt_tokens=usage[0],
            completion_tokens=usage[1],
            cost_usd=self._prices.cost_usd(model, usage[0], usage[1]) if ok else 0.0)
        return response

    async def _forward(self, grant: RolloutGrant, body: dict[str, Any],
                       stage: str = "") -> tuple[JSONResponse, tuple[int, int]]:
        """The answer to the task app, and the (prompt, completion) tokens it was metered."""
        started = time.perf_counter()
        # The redactor is made only for an error (it cost ~4 % of the CPU per rollout when
        # made for every call): the job's environment key, and the provider's key once known.
        secrets = [grant.environment_key]
        try:
            endpoint = self._endpoint(grant.policy.provider)
            secrets.append(endpoint.api_key)
            payload = await self._forwarder.chat(endpoint, body)
        except ProviderError as exc:
            message = Redactor(secrets).redact(f"policy provider: {exc}")
            return await self._failed(grant, body, started, 502, message), (0, 0)
        except ProviderStatusError as exc:
            redactor = Redactor(secrets)
            try:
                provider_body = redactor.redact_json(loads_finite(exc.body))
            except ValueError:
                provider_body = {"error": {"message": redactor.redact(exc.text[:500])}}
            await self._record_failure(grant, body, started,
                                       f"policy provider answered {exc.status}")
            return _Json(provider_body, exc.status), (0, 0)
        except (ProviderUnreachable, ValueError) as exc:
            message = Redactor(secrets).redact(
                f"policy provider {grant.policy.provider!r} unreachable: {exc}")
            return await self._failed(grant, body, started, 502, message), (0, 0)
        if not isinstance(payload, dict):
            return await self._failed(grant, body, started, 502,
                                      "policy provider answered JSON that is not an object"), \
                (0, 0)
        usage = payload.get("usage") if isinstance(payload, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        prompt, completion = _count(usage.get("prompt_tokens")), _count(
            usage.get("completion_tokens"))
        await self._book.meter_call(grant, prompt, completion)
        await self._book.record(grant, Exchange(
            messages=body["messages"], response=payload, prompt_tokens=prompt,
            completion_tokens=completion, latency_ms=(time.perf_counter() - started) * 1000,
            stage=stage))
        return _Json(payload), (prompt, completion)

    async def _record_failure(self, grant: RolloutGrant, body: dict[str, Any], started: float,
                              error: str) -> None:
        await self._book.record(grant, Exchange(
            body["messages"], None, 0, 0, (time.perf_counter() - started) * 1000, error))
        log.warning("policy call failed", job_id=grant.job_id, rollout_id=grant.rollout_id,
                    error=error)

    async def _failed(self, grant: RolloutGrant, body: dict[str, Any], started: float,
                      status: int, message: str) -> JSONResponse:
        await self._record_failure(grant, body, started, message)
        return _error(status, message, type_="api_error")


def _count(value: Any) -> int:
    """A token count from a provider's usage, or 0 when it is not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
