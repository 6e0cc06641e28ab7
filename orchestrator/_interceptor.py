"""The interceptor: the OpenAI-compatible endpoint that task apps send their model calls to.

A rollout's `inference_url` is `<public base>/v1/<trial_id>?cid=<rollout id>`. For the trial,
the interceptor swaps the candidate's instruction into the system message (the baseline trial
passes messages through), applies the job's policy model settings, forwards the call to the
provider through the shared provider factory, records the exchange under the rollout id, and
returns the provider's JSON unchanged.
"""

from __future__ import annotations

import copy
import hmac
import inspect
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mipro._providers import (
    PROVIDER_RETRY_POLICY,
    ProviderError,
    make_async_client,
    provider_retry_decision,
    resolve_provider,
)
from mipro._retry import call_with_retries

from ._models import PolicySpec

log = structlog.get_logger(__name__)

_CREATE_PARAMETERS = frozenset(
    inspect.signature(openai.resources.chat.completions.AsyncCompletions.create).parameters
) - {"self", "extra_headers", "extra_query", "extra_body", "timeout", "stream"}


@dataclass(frozen=True)
class Exchange:
    """One model call made through the interceptor."""

    messages: list[dict[str, Any]]
    response: dict[str, Any] | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    error: str = ""


@dataclass
class Trial:
    """What the interceptor needs to serve one candidate's calls."""

    job_id: str
    candidate_index: int
    #: The candidate's instruction; None passes the task app's messages through (baseline).
    instruction: str | None
    policy: PolicySpec
    environment_key: str = field(repr=False)
    #: Called with (rollout id, exchange) after each call; the engine collects them.
    on_exchange: Callable[[str, Exchange], None] = field(repr=False, default=lambda c, e: None)


class TrialRegistry:
    """Trials in flight, by unguessable id; the id in a URL is the capability to use it."""

    def __init__(self) -> None:
        self._trials: dict[str, Trial] = {}

    def register(self, trial: Trial) -> str:
        trial_id = f"t_{secrets.token_urlsafe(12)}"
        self._trials[trial_id] = trial
        return trial_id

    def get(self, trial_id: str) -> Trial | None:
        return self._trials.get(trial_id)

    def remove_job(self, job_id: str) -> None:
        for trial_id in [t for t, trial in self._trials.items() if trial.job_id == job_id]:
            del self._trials[trial_id]


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
    """Replaces the first system message's content with `instruction`, or prepends one."""
    rewritten = copy.deepcopy(messages)
    for message in rewritten:
        if message.get("role") in ("system", "developer"):
            message["content"] = instruction
            return rewritten
    return [{"role": "system", "content": instruction}, *rewritten]


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

    def __init__(self, registry: TrialRegistry, *, provider_timeout: float = 120.0) -> None:
        self._registry = registry
        self._timeout = provider_timeout
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
            self._clients[cache_key] = make_async_client(endpoint, timeout_seconds=self._timeout)
        return self._clients[cache_key]

    async def _health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _no_trial(self, request: Request) -> JSONResponse:
        return _error(404, "the inference URL must name a trial: /v1/<trial_id>/chat/completions")

    async def _chat(self, request: Request) -> JSONResponse:
        trial = self._registry.get(request.path_params["trial_id"])
        if trial is None:
            return _error(404, "unknown or finished trial", type_="not_found_error")
        presented = _presented_key(request)
        if not presented or not hmac.compare_digest(presented, trial.environment_key):
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
        if trial.instruction is not None:
            body["messages"] = rewrite_messages(body["messages"], trial.instruction)
        body = _apply_policy(body, trial.policy)
        cid = request.query_params.get("cid", "")
        return await self._forward(trial, cid, body)

    async def _forward(self, trial: Trial, cid: str, body: dict[str, Any]) -> JSONResponse:
        known = {k: v for k, v in body.items() if k in _CREATE_PARAMETERS}
        extra = {k: v for k, v in body.items() if k not in _CREATE_PARAMETERS and k != "stream"}
        started = time.perf_counter()
        try:
            client = self._client(trial.policy.provider)
            raw = await call_with_retries(
                lambda: client.chat.completions.with_raw_response.create(
                    **known, extra_body=extra or None),
                PROVIDER_RETRY_POLICY, provider_retry_decision,
                on_retry=lambda attempt, error, delay: log.info(
                    "retrying policy call", job_id=trial.job_id, rollout_id=cid,
                    attempt=attempt, delay_s=round(delay, 2), error=type(error).__name__))
            payload: dict[str, Any] = raw.http_response.json()
        except ProviderError as exc:
            return self._failed(trial, cid, body, started, 502, f"policy provider: {exc}")
        except openai.APIStatusError as exc:
            try:
                provider_body = exc.response.json()
            except ValueError:
                provider_body = {"error": {"message": exc.response.text[:500]}}
            self._record_failure(trial, cid, body, started, f"provider answered {exc.status_code}")
            return JSONResponse(provider_body, exc.status_code)
        except openai.APIError as exc:
            message = f"policy provider {trial.policy.provider!r} unreachable: {exc}"
            return self._failed(trial, cid, body, started, 502, message)
        usage = payload.get("usage") or {}
        exchange = Exchange(
            messages=body["messages"],
            response=payload,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        trial.on_exchange(cid, exchange)
        return JSONResponse(payload)

    def _record_failure(
        self, trial: Trial, cid: str, body: dict[str, Any], started: float, error: str
    ) -> None:
        exchange = Exchange(body["messages"], None, 0, 0,
                            (time.perf_counter() - started) * 1000, error)
        trial.on_exchange(cid, exchange)
        log.warning("policy call failed", job_id=trial.job_id, rollout_id=cid, error=error)

    def _failed(
        self, trial: Trial, cid: str, body: dict[str, Any], started: float, status: int,
        message: str,
    ) -> JSONResponse:
        self._record_failure(trial, cid, body, started, message)
        return _error(status, message, type_="api_error")
