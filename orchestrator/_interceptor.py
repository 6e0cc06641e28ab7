"""The interceptor: the OpenAI-compatible endpoint that task apps send their model calls to.

A rollout's `inference_url` is `<public base>/v1/<trial_id>?cid=<rollout id>`. A call is
served only while that rollout is open in the `ExchangeLedger` and names its trial; any other
(unknown, forged or finished rollout) is refused before anything is forwarded. For the
candidate's trial, the interceptor swaps the candidate's instruction into the system message
(the baseline passes messages through), applies the job's policy model settings, forwards the
call to the provider through the shared provider factory (the openai SDK's own retries are
this hop's one retry layer), reports the exchange to the ledger, meters its tokens, and
returns the provider's JSON unchanged.
"""

from __future__ import annotations

import hmac
import inspect
import time
from typing import Any

import openai
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mipro._providers import ProviderError, make_async_client, resolve_provider

from ._exchanges import CallRefused, Exchange, ExchangeLedger, RolloutGrant
from ._models import PolicySpec

log = structlog.get_logger(__name__)

_CREATE_PARAMETERS = frozenset(
    inspect.signature(openai.resources.chat.completions.AsyncCompletions.create).parameters
) - {"self", "extra_headers", "extra_query", "extra_body", "timeout", "stream"}


def _error(status: int, message: str, *, type_: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None}}, status)


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
    for position, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            return [*messages[:position], {**message, "content": instruction},
                    *messages[position + 1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _apply_policy(body: dict[str, Any], policy: PolicySpec) -> dict[str, Any]:
    body = dict(body)
    body["model"] = policy.model
    if policy.temperature is not None:
        body["temperature"] = policy.temperature
    if policy.max_completion_tokens is not None:
        key = "max_tokens" if "max_tokens" in body else "max_completion_tokens"
        body[key] = policy.max_completion_tokens
    return body


class Interceptor:
    """The ASGI app serving `/v1/{trial_id}/chat/completions`."""

    def __init__(self, ledger: ExchangeLedger, *, provider_timeout: float,
                 provider_max_retries: int) -> None:
        self._ledger = ledger
        self._timeout = provider_timeout
        self._max_retries = provider_max_retries
        self._clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}
        self.app = Starlette(
            routes=[
                Route("/v1/{trial_id}/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/chat/completions", self._no_trial, methods=["POST"]),
                Route("/healthz", self._health, methods=["GET"]),
            ]
        )

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    def _client(self, provider: str) -> openai.AsyncOpenAI:
        endpoint = resolve_provider(provider)
        cache_key = (endpoint.name, endpoint.base_url)
        if cache_key not in self._clients:
            self._clients[cache_key] = make_async_client(
                endpoint, timeout_seconds=self._timeout, max_retries=self._max_retries)
        return self._clients[cache_key]

    async def _health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _no_trial(self, request: Request) -> JSONResponse:
        return _error(404, "the inference URL must name a trial: /v1/<trial_id>/chat/completions")

    async def _chat(self, request: Request) -> JSONResponse:
        cid = request.query_params.get("cid", "")
        try:
            grant = self._ledger.admit(cid, request.path_params["trial_id"])
        except CallRefused as refused:
            return _error(refused.status, str(refused), type_=refused.kind)
        presented = _presented_key(request)
        if not presented or not hmac.compare_digest(presented, grant.environment_key):
            return _error(401, "X-API-Key must carry the job's environment key",
                          type_="authentication_error")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "the request body must be an object with a messages list")
        if body.get("stream"):
            return _error(400, "stream=true is not supported by the interceptor")
        if grant.instruction is not None:
            body["messages"] = rewrite_messages(body["messages"], grant.instruction)
        return await self._forward(grant, _apply_policy(body, grant.policy))

    async def _forward(self, grant: RolloutGrant, body: dict[str, Any]) -> JSONResponse:
        known = {k: v for k, v in body.items() if k in _CREATE_PARAMETERS}
        extra = {k: v for k, v in body.items() if k not in _CREATE_PARAMETERS and k != "stream"}
        started = time.perf_counter()
        try:
            client = self._client(grant.policy.provider)
            raw = await client.chat.completions.with_raw_response.create(
                **known, extra_body=extra or None)
            payload: dict[str, Any] = raw.http_response.json()
        except ProviderError as exc:
            return self._failed(grant, body, started, 502, f"policy provider: {exc}")
        except openai.APIStatusError as exc:
            try:
                provider_body = exc.response.json()
            except ValueError:
                provider_body = {"error": {"message": exc.response.text[:500]}}
            self._record_failure(grant, body, started,
                                 f"policy provider answered {exc.status_code}")
            return JSONResponse(provider_body, exc.status_code)
        except openai.APIError as exc:
            message = f"policy provider {grant.policy.provider!r} unreachable: {exc}"
            return self._failed(grant, body, started, 502, message)
        usage = payload.get("usage") if isinstance(payload, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        prompt, completion = _count(usage.get("prompt_tokens")), _count(
            usage.get("completion_tokens"))
        grant.on_usage(prompt, completion)
        self._ledger.record(grant.rollout_id, Exchange(
            messages=body["messages"], response=payload, prompt_tokens=prompt,
            completion_tokens=completion, latency_ms=(time.perf_counter() - started) * 1000))
        return JSONResponse(payload)

    def _record_failure(self, grant: RolloutGrant, body: dict[str, Any], started: float,
                        error: str) -> None:
        self._ledger.record(grant.rollout_id, Exchange(
            body["messages"], None, 0, 0, (time.perf_counter() - started) * 1000, error))
        log.warning("policy call failed", job_id=grant.job_id, rollout_id=grant.rollout_id,
                    error=error)

    def _failed(self, grant: RolloutGrant, body: dict[str, Any], started: float, status: int,
                message: str) -> JSONResponse:
        self._record_failure(grant, body, started, message)
        return _error(status, message, type_="api_error")


def _count(value: Any) -> int:
    """A token count from a provider's usage, or 0 when it is not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
