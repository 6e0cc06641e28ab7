"""The one client the orchestrator uses to talk to a user's task app.

It sends the registered environment key in all three headers task apps read, builds the v1
rollout request from a `RolloutCall`, extracts the reward in the contract's order, and turns
every way a rollout can go wrong into a `RolloutOutcome` with a `FailureCause`: a failure is
never a score of 0. It is also the task-app hop's one retry layer: transient failures
(connection errors, timeouts, 429, 5xx) are retried per its `RetryPolicy`, unless the caller
says the failure came from a model call the interceptor already retried.

Everything it reads is bounded: a response body is streamed and cut off at
`max_response_bytes` (a larger one is a `response_too_large` failure), each attempt has a
total deadline (`timeout`, not only per read, so a task app dripping a byte at a time cannot
hold a rollout), JSON with NaN or Infinity is refused as invalid, and every text it quotes
from the task app goes through the job's `Redactor` first.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from multidict import CIMultiDictProxy

from mipro._retry import RetryPolicy, parse_retry_after

from ._errors import TaskAppRejected, TaskAppUnavailable
from ._json import dumps, loads_finite
from ._redact import Redactor

log = structlog.get_logger(__name__)

#: How much of a task app answer is read at a time.
_CHUNK_BYTES = 65_536
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_QUOTED_BODY = 300
#: The default cap of a task-app response body.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class FailureCause(enum.StrEnum):
    """Why a rollout produced no reward."""

    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    AUTH_REJECTED = "auth_rejected"
    HTTP_STATUS = "http_status"
    """A non-2xx answer; reported as `http_<status>`."""
    INVALID_JSON = "invalid_json"
    NO_REWARD = "no_reward"
    POLICY_MODEL = "policy_model_error"
    """The policy model call failed in the interceptor (after its own retries)."""
    TOO_LARGE = "response_too_large"
    """The task app's answer was longer than the client reads."""


@dataclass(frozen=True)
class RolloutOutcome:
    """What one rollout call produced: a reward, or a failure cause and detail."""

    reward: float | None
    cause: FailureCause | None = None
    failure_detail: str = ""
    status: int = 0
    """The task app's HTTP status, when it answered."""

    @property
    def failure_cause(self) -> str:
        """The cause as reported in `failures_by_cause`: `http_502`, `timeout`, ..."""
        if self.cause is None:
            return ""
        if self.cause is FailureCause.HTTP_STATUS:
            return f"http_{self.status}"
        return self.cause.value


@dataclass(frozen=True)
class RolloutCall:
    """One rollout to run: what the v1 request says."""

    rollout_id: str
    seed: int
    candidate_index: int
    inference_url: str
    model: str
    provider: str
    timeout_seconds: float
    temperature: float | None = None
    max_completion_tokens: int | None = None
    #: The candidate's instruction, offered to task apps that apply prompts themselves.
    instruction: str | None = None
    env_name: str = ""
    env_config: dict[str, Any] = field(default_factory=dict)
    #: The W3C `traceparent` of the rollout's span, sent as a header; "" sends none.
    traceparent: str = ""
    #: Declared stage id -> its inference URL (`/v1/<token>/<stage_id>?cid=...`).
    stage_inference_urls: dict[str, str] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The v1 rollout request (both `trace_correlation_id` and `run_id`/`ops`/`mode`)."""
        config: dict[str, Any] = {
            "model": self.model,
            "provider": self.provider,
            "inference_url": self.inference_url,
            "trace_correlation_id": self.rollout_id,
        }
        if self.temperature is not None:
            config["temperature"] = self.temperature
        if self.max_completion_tokens is not None:
            config["max_completion_tokens"] = self.max_completion_tokens
        if self.instruction is not None:
            config["prompt_template"] = {"system": self.instruction}
        if self.stage_inference_urls:
            config["stage_inference_urls"] = dict(self.stage_inference_urls)
        env: dict[str, Any] = {"config": self.env_config, "seed": self.seed}
        if self.env_name:
            env["env_name"] = self.env_name
        return {
            "run_id": self.rollout_id,
            "trace_correlation_id": self.rollout_id,
            "env": env,
            "policy": {"policy_id": f"cand_{self.candidate_index:03d}", "policy_name": "mipro",
                       "config": config},
            "ops": ["agent", "env"],
            "record": {"trajectories": True, "return_trace": False, "trace_format": "compact"},
            "on_done": "reset",
            "safety": {"max_ops": 100000, "max_time_s": self.timeout_seconds},
            "mode": "eval",
        }


def _quote(text: str, redactor: Redactor) -> str:
    text = redactor.redact(" ".join(text.split()))
    return text if len(text) <= _MAX_QUOTED_BODY else text[:_MAX_QUOTED_BODY] + "…"




class ResponseTooLarge(Exception):
    """A task app's answer was longer than the cap."""


@dataclass(frozen=True)
class Answer:
    """A task app's HTTP answer, read in full up to the cap."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return loads_finite(self.content)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def extract_reward(body: Any) -> float | None:
    """The reward per the contract: the first number among the known places, else None."""
    if not isinstance(body, dict):
        return None
    raw_metrics, raw_info = body.get("metrics"), body.get("reward_info")
    metrics: dict[str, Any] = raw_metrics if isinstance(raw_metrics, dict) else {}
    reward_info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    for candidate in (
        metrics.get("outcome_reward"),
        metrics.get("mean_return"),
        metrics.get("outcome_score"),
        reward_info.get("outcome_reward"),
    ):
        if (number := _number(candidate)) is not None:
            return number
    for key in ("episode_returns", "episode_rewards"):
        values = metrics.get(key)
        if isinstance(values, list) and values:
            numbers = [_number(v) for v in values]
            if all(n is not None for n in numbers):
                return sum(numbers) / len(numbers)  # type: ignore[arg-type]
    return None


def _is_auth_rejection(response: Answer, redactor: Redactor) -> str | None:
    """A cause when the task app refused the environment key, else None."""
    text = response.text.lower()
    if response.status_code == 503 and "missing_environment_api_key" in text:
        return (
            "the task app has no ENVIRONMENT_API_KEY configured (503 missing_environment_api_key)"
        )
    if response.status_code in (400, 401, 403) and (
        "unauthorised" in text or "unauthorized" in text or response.status_code != 400
    ):
        return (
            f"the task app rejected the registered environment key ({response.status_code}: "
            f"{_quote(response.text, redactor)})"
        )
    return None


class TaskAppClient:
    """Calls one task app on behalf of one job."""

    def __init__(
        self,
        base_url: str,
        environment_key: str,
        *,
        http: aiohttp.ClientSession,
        retry: RetryPolicy,
        rng: random.Random,
        timeout: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        redactor: Redactor | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._max_bytes = max_response_bytes
        self._redactor = redactor or Redactor([environment_key])
        self._timeout = timeout
        self._http = http
        self._retry = retry
        self._rng = rng
        self._headers = {
            "X-API-Key": environment_key,
            "X-API-Keys": environment_key,
            "Authorization": f"Bearer {environment_key}",
        }

    @property
    def base_url(self) -> str:
        return self._base_url

    def rollout_deadline(self, timeout: float) -> float:
        """The longest one `rollout()` with per-attempt `timeout` can take, retries and
        back-off included."""
        attempts = self._retry.max_attempts
        return attempts * timeout + (attempts - 1) * self._retry.max_backoff

    async def _send(self, method: str, path: str, timeout: float,
                    payload: dict[str, Any] | None = None,
                    headers: dict[str, str] | None = None) -> Answer:
        """One request, its whole answer read within `timeout` and `max_response_bytes`."""
        headers = headers or self._headers
        body: bytes | None = None
        if payload is not None:
            body, headers = dumps(payload), {**headers, "Content-Type": "application/json"}
        async with asyncio.timeout(timeout):
            async with self._http.request(method, f"{self._base_url}{path}", data=body,
                                          headers=headers,
                                          allow_redirects=False) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    raise ResponseTooLarge(declared)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise ResponseTooLarge(str(size))
                    chunks.append(chunk)
                return Answer(response.status, response.headers, b"".join(chunks))

    def _error_text(self, exc: BaseException) -> str:
        return self._redactor.redact(f"{type(exc).__name__}: {exc}")

    async def check_health(self) -> None:
        """Raises `TaskAppUnavailable`/`TaskAppRejected` unless `/health` answers healthy."""
        try:
            response = await self._send("GET", "/health", self._timeout)
        except TimeoutError:
            raise TaskAppUnavailable(
                f"task app at {self._base_url} did not answer /health within "
                f"{self._timeout:g} s") from None
        except ResponseTooLarge:
            raise TaskAppUnavailable(
                f"task app at {self._base_url} answered /health with more than "
                f"{self._max_bytes} bytes") from None
        except aiohttp.ClientError as exc:
            raise TaskAppUnavailable(
                f"task app at {self._base_url} is unreachable: {self._error_text(exc)}"
            ) from None
        if (cause := _is_auth_rejection(response, self._redactor)) is not None:
            raise TaskAppRejected(f"task app at {self._base_url}: {cause}")
        body: Any = None
        try:
            body = response.json()
        except ValueError:
            pass
        healthy = isinstance(body, dict) and body.get("healthy") is not False
        if response.status_code != 200 or not healthy:
            raise TaskAppUnavailable(
                f"task app at {self._base_url} failed its health check: GET /health answered "
                f"{response.status_code} {_quote(response.text, self._redactor)}"
            )

    async def task_info(self) -> dict[str, Any] | None:
        """The task app's `/task_info` answer, or None when it gives none."""
        try:
            response = await self._send("GET", "/task_info", self._timeout)
            if response.status_code != 200:
                return None
            body = response.json()
        except (aiohttp.ClientError, ValueError, TimeoutError, ResponseTooLarge):
            return None
        return body if isinstance(body, dict) else None

    async def rollout(self, call: RolloutCall, *,
                      may_retry: Callable[[], bool | Awaitable[bool]] = lambda: True
                      ) -> RolloutOutcome:
        """Runs one rollout, retrying transient failures while `may_retry()` says so (it
        says no when the failure came from a model call already retried); never raises for
        HTTP errors."""
        payload = call.payload()
        headers = ({**self._headers, "traceparent": call.traceparent} if call.traceparent
                   else self._headers)
        outcome = RolloutOutcome(None, FailureCause.CONNECT_ERROR, "not attempted")
        for attempt in range(1, self._retry.max_attempts + 1):
            outcome, retry_after, retryable = await self._rollout_once(
                payload, call.timeout_seconds, headers)
            if outcome.reward is not None or not retryable:
                return outcome
            allowed = may_retry()
            if not (await allowed if inspect.isawaitable(allowed) else allowed):
                return outcome
            if attempt < self._retry.max_attempts:
                await asyncio.sleep(self._retry.backoff(attempt, self._rng, retry_after))
        return outcome

    async def _rollout_once(
        self, payload: dict[str, Any], timeout: float, headers: dict[str, str] | None = None
    ) -> tuple[RolloutOutcome, float | None, bool]:
        try:
            response = await self._send("POST", "/rollout", timeout, payload, headers)
        except TimeoutError:
            return RolloutOutcome(None, FailureCause.TIMEOUT,
                                  f"no answer within {timeout:g} s"), None, True
        except ResponseTooLarge:
            detail = f"the answer is longer than {self._max_bytes} bytes"
            return RolloutOutcome(None, FailureCause.TOO_LARGE, detail), None, False
        except aiohttp.ClientError as exc:
            return RolloutOutcome(None, FailureCause.CONNECT_ERROR,
                                  self._error_text(exc)), None, True
        if (cause := _is_auth_rejection(response, self._redactor)) is not None:
            return RolloutOutcome(None, FailureCause.AUTH_REJECTED, cause,
                                  response.status_code), None, False
        if response.status_code >= 300:
            outcome = RolloutOutcome(None, FailureCause.HTTP_STATUS,
                                     _quote(response.text, self._redactor), response.status_code)
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return outcome, retry_after, response.status_code in _RETRYABLE_STATUS
        try:
            body = response.json()
        except ValueError:
            return RolloutOutcome(None, FailureCause.INVALID_JSON,
                                  _quote(response.text, self._redactor)), None, False
        reward = extract_reward(body)
        if reward is None:
            detail = "the response carries no finite reward in metrics or reward_info"
            return RolloutOutcome(None, FailureCause.NO_REWARD, detail), None, False
        return RolloutOutcome(reward), None, False
