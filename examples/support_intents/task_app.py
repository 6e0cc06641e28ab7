"""Example task app: classify banking support messages into one of 10 intents.

This file is a **template**. Copy it, swap in your own dataset, baseline messages, tool and
scoring, and keep the HTTP surface: it implements the task app contract the backend speaks
(see `task-app-contract.md`):

- `GET /` answers without auth; every other endpoint needs the environment key
  (`ENVIRONMENT_API_KEY`) in `X-API-Key`, `X-API-Keys` (comma-separated) or
  `Authorization: Bearer`. A wrong or missing key is a 400 `unauthorised`; an app started
  without a key answers 503 `missing_environment_api_key`.
- `GET /health` and `GET /task_info` describe the app and its task set.
- `POST /rollout` turns one seed into one scored episode: seed `s` picks dataset record
  `s % N`, the app posts its own *baseline* messages to `policy.config.inference_url` (the
  backend's interceptor, which swaps in the candidate instruction), reads the label from the
  model's `classify_intent` tool call and scores 1.0 for an exact match, else 0.0. A failed
  model call answers the rollout with a 502, so the backend counts it as a failed rollout,
  never as a zero.

Run it with:

    ENVIRONMENT_API_KEY=... python examples/support_intents/task_app.py \\
        --host 127.0.0.1 --port 8102 [--record rollouts.jsonl]

`--record PATH` appends one JSON line per `/rollout` describing what the caller sent (never
the key itself); tests use it to check the backend's requests.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SERVICE = "support-intents"
TASKSET_NAME = "support_intents"
TASKSET_DESCRIPTION = (
    "Classify a customer-support message from a banking app into one of 10 intents."
)
LABELS: tuple[str, ...] = (
    "card_arrival",
    "lost_or_stolen_card",
    "failed_transfer",
    "refund_request",
    "change_pin",
    "exchange_rate",
    "top_up_failed",
    "close_account",
    "unrecognised_charge",
    "update_personal_details",
)
# The baseline instruction. The backend's interceptor replaces this system message with the
# candidate instruction it is evaluating, so the app never needs to know the candidate.
BASELINE_INSTRUCTION = "You are a helpful assistant. Classify the customer's message."
TOOL_NAME = "classify_intent"
DEFAULT_MAX_TOKENS = 128
DEFAULT_DATASET = Path(__file__).with_name("dataset.jsonl")
DEFAULT_INFERENCE_TIMEOUT = httpx.Timeout(60.0, connect=5.0)

log = structlog.get_logger(SERVICE)


# --------------------------------------------------------------------------- dataset


def load_dataset(path: Path) -> list[dict[str, str]]:
    """Reads `{"text", "label"}` JSON lines; the line order is the seed mapping."""
    records: list[dict[str, str]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            text, label = row.get("text"), row.get("label")
            if not isinstance(text, str) or label not in LABELS:
                raise ValueError(f"{path}:{lineno}: need a text and one of the known labels")
            records.append({"text": text, "label": label})
    if not records:
        raise ValueError(f"{path}: the dataset is empty")
    return records


def classify_tool() -> dict[str, Any]:
    """The one function tool the model must call; its enum is the label set."""
    return {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Report the intent of the customer's message.",
            "parameters": {
                "type": "object",
                "properties": {"intent": {"type": "string", "enum": list(LABELS)}},
                "required": ["intent"],
                "additionalProperties": False,
            },
        },
    }


def chat_completions_url(inference_url: str) -> str:
    """Inserts `/chat/completions` before the query string of the interceptor URL.

    `http://b/v1/t1?cid=x` -> `http://b/v1/t1/chat/completions?cid=x`;
    `http://b/v1` -> `http://b/v1/chat/completions`.
    """
    parts = urlsplit(inference_url)
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


# --------------------------------------------------------------------------- errors


class InferenceError(Exception):
    """The policy model call failed; the rollout answers 502 with `code` and the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"error": {"code": code, "message": message}}}, status)


def missing_field(*loc: str) -> JSONResponse:
    """A FastAPI-style 422, which is what older task apps answer for a missing field."""
    field = ".".join(loc)
    return JSONResponse(
        {"detail": [{"type": "missing", "loc": ["body", *loc], "msg": f"Field required: {field}"}]},
        422,
    )


def invalid_field(loc: tuple[str, ...], msg: str) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"type": "value_error", "loc": ["body", *loc], "msg": msg}]}, 422
    )


# --------------------------------------------------------------------------- auth


def presented_keys(headers: Mapping[str, str]) -> dict[str, list[str]]:
    """The keys a request carries, per header (`X-API-Keys` may hold several)."""
    found: dict[str, list[str]] = {"x-api-key": [], "x-api-keys": [], "authorization": []}
    if (single := headers.get("x-api-key")) is not None:
        found["x-api-key"].append(single.strip())
    if (several := headers.get("x-api-keys")) is not None:
        found["x-api-keys"].extend(k.strip() for k in several.split(",") if k.strip())
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found["authorization"].append(token.strip())
    return found


def header_matches(headers: Mapping[str, str], key: str | None) -> dict[str, bool]:
    """Per header: was it present and did it carry the right key."""
    return {
        name: bool(key) and any(hmac.compare_digest(k.encode(), key.encode()) for k in keys)
        for name, keys in presented_keys(headers).items()
    }


def check_auth(request: Request) -> JSONResponse | None:
    """None when the request may proceed, else the 503/400 answer."""
    key: str | None = request.app.state.environment_key
    if not key:
        return error_response(
            503,
            "missing_environment_api_key",
            "The task app has no ENVIRONMENT_API_KEY configured.",
        )
    if not any(header_matches(request.headers, key).values()):
        return error_response(
            400,
            "unauthorised",
            "Missing or invalid environment key: send it in X-API-Key, X-API-Keys "
            "or Authorization: Bearer.",
        )
    return None


# --------------------------------------------------------------------------- recording


class RolloutRecorder:
    """Appends one JSON line per `/rollout` to a file; never writes the key itself."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        if self._path is None:
            return
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock, self._path.open("a", encoding="utf-8") as f:
            f.write(line)


def record_entry(
    request: Request, body: Any, *, status: int, reward: float | None
) -> dict[str, Any]:
    body_dict = body if isinstance(body, dict) else {}
    env = body_dict.get("env") if isinstance(body_dict.get("env"), dict) else {}
    policy = body_dict.get("policy") if isinstance(body_dict.get("policy"), dict) else {}
    config = policy.get("config") if isinstance(policy.get("config"), dict) else {}
    return {
        "run_id": body_dict.get("run_id"),
        "trace_correlation_id": body_dict.get("trace_correlation_id"),
        "seed": env.get("seed"),
        "policy_id": policy.get("policy_id"),
        "inference_url": config.get("inference_url"),
        "auth_headers": header_matches(request.headers, request.app.state.environment_key),
        "body_keys": sorted(body_dict),
        "policy_config_keys": sorted(config),
        "reward": reward,
        "status": status,
    }


# --------------------------------------------------------------------------- handlers


async def root(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "service": SERVICE})


async def health(request: Request) -> JSONResponse:
    if (denied := check_auth(request)) is not None:
        return denied
    return JSONResponse({"healthy": True, "service": SERVICE})


async def task_info(request: Request) -> JSONResponse:
    # Ignores any `?seed=`: the backend never depends on the per-seed form.
    if (denied := check_auth(request)) is not None:
        return denied
    return JSONResponse(
        {
            "taskset": {
                "name": TASKSET_NAME,
                "description": TASKSET_DESCRIPTION,
                "labels": list(LABELS),
                "size": len(request.app.state.dataset),
            }
        }
    )


def validate_rollout(body: Any) -> JSONResponse | None:
    """None when the v1 request has what this app needs, else a 422."""
    if not isinstance(body, dict):
        return invalid_field((), "The request body must be a JSON object.")
    for field in ("run_id", "ops", "mode"):
        if field not in body or body[field] is None:
            return missing_field(field)
    if not isinstance(body["run_id"], str) or not body["run_id"]:
        return invalid_field(("run_id",), "run_id must be a non-empty string.")
    if not isinstance(body["ops"], list):
        return invalid_field(("ops",), "ops must be a list.")
    env = body.get("env")
    if not isinstance(env, dict) or "seed" not in env:
        return missing_field("env", "seed")
    seed = env["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        return invalid_field(("env", "seed"), "env.seed must be an integer.")
    policy = body.get("policy")
    config = policy.get("config") if isinstance(policy, dict) else None
    if not isinstance(config, dict) or not config.get("inference_url"):
        return missing_field("policy", "config", "inference_url")
    url = config["inference_url"]
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        return invalid_field(
            ("policy", "config", "inference_url"), "inference_url must be an http(s) URL."
        )
    return None


async def call_policy(
    client: httpx.AsyncClient, key: str, config: dict[str, Any], text: str
) -> tuple[str, list[dict[str, Any]]]:
    """Posts the baseline messages to the interceptor; returns the label and the tool calls."""
    url = chat_completions_url(config["inference_url"])
    max_tokens = config.get("max_completion_tokens", config.get("max_tokens"))
    payload = {
        "model": config.get("model"),
        "messages": [
            {"role": "system", "content": BASELINE_INSTRUCTION},
            {"role": "user", "content": text},
        ],
        "temperature": config.get("temperature", 0.0),
        "max_tokens": max_tokens if isinstance(max_tokens, int) else DEFAULT_MAX_TOKENS,
        "tools": [classify_tool()],
        "tool_choice": "required",
    }
    try:
        resp = await client.post(url, json=payload, headers={"X-API-Key": key})
    except httpx.TimeoutException as exc:
        raise InferenceError("inference_timeout", f"model call timed out: {exc!r}") from exc
    except httpx.HTTPError as exc:
        raise InferenceError("inference_unreachable", f"model call failed: {exc!r}") from exc
    if not resp.is_success:
        raise InferenceError(
            "inference_http_error",
            f"model endpoint answered {resp.status_code}: {resp.text[:500]}",
        )
    try:
        message = resp.json()["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InferenceError(
            "inference_bad_response", f"model response has no choices[0].message: {exc!r}"
        ) from exc
    tool_calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not tool_calls or not isinstance(tool_calls, list):
        raise InferenceError("inference_no_tool_call", "the model did not call a tool")
    try:
        arguments = tool_calls[0]["function"]["arguments"]
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
        label = args["intent"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InferenceError(
            "inference_bad_tool_arguments", f"cannot read the tool call's intent: {exc!r}"
        ) from exc
    if not isinstance(label, str):
        raise InferenceError("inference_bad_tool_arguments", "the tool call's intent is not text")
    return label.strip(), tool_calls


async def rollout(request: Request) -> JSONResponse:
    try:
        body: Any = await request.json()
    except ValueError:
        body = None
    response, reward = await _rollout(request, body)
    request.app.state.recorder.write(
        record_entry(request, body, status=response.status_code, reward=reward)
    )
    return response


async def _rollout(request: Request, body: Any) -> tuple[JSONResponse, float | None]:
    if (denied := check_auth(request)) is not None:
        return denied, None
    if body is None:
        return invalid_field((), "The request body is not valid JSON."), None
    if (invalid := validate_rollout(body)) is not None:
        return invalid, None

    state = request.app.state
    run_id: str = body["run_id"]
    config: dict[str, Any] = body["policy"]["config"]
    trace_id = body.get("trace_correlation_id") or config.get("trace_correlation_id") or run_id
    seed: int = body["env"]["seed"]
    index = seed % len(state.dataset)
    record = state.dataset[index]
    bound = log.bind(run_id=run_id, trace_correlation_id=trace_id, seed=seed, index=index)

    try:
        predicted, tool_calls = await call_policy(
            state.http, state.environment_key, config, record["text"]
        )
    except InferenceError as exc:
        bound.warning("rollout.inference_failed", code=exc.code, error=exc.message)
        return error_response(502, exc.code, exc.message), None

    expected = record["label"]
    correct = predicted == expected
    reward = 1.0 if correct else 0.0
    bound.info("rollout.scored", predicted=predicted, expected=expected, reward=reward)
    info = {"predicted_label": predicted, "expected_label": expected, "correct": correct}
    env_config = body["env"].get("config")
    split = env_config.get("split", "default") if isinstance(env_config, dict) else "default"
    policy_id = body["policy"].get("policy_id") or body["policy"].get("policy_name") or "policy"
    payload = {
        "run_id": run_id,
        "trace_correlation_id": trace_id,
        "trajectories": [
            {
                "env_id": f"{TASKSET_NAME}::{split}::{index}",
                "policy_id": policy_id,
                "steps": [
                    {
                        "obs": {"seed": seed, "index": index, "text": record["text"]},
                        "tool_calls": tool_calls,
                        "reward": reward,
                        "done": True,
                        "info": info,
                    }
                ],
                "final": {"observation": {}, "reward": reward},
                "length": 1,
            }
        ],
        "metrics": {
            "episode_returns": [reward],
            "mean_return": reward,
            "outcome_score": reward,
            "num_steps": 1,
            "num_episodes": 1,
            "details": info,
        },
        "aborted": False,
        "ops_executed": len(body["ops"]),
    }
    return JSONResponse(payload), reward


# --------------------------------------------------------------------------- app


def create_app(
    dataset_path: Path | str,
    environment_key: str | None,
    record_path: Path | str | None = None,
    *,
    inference_timeout: httpx.Timeout = DEFAULT_INFERENCE_TIMEOUT,
) -> Starlette:
    """Builds the app; `environment_key` None or empty makes every authed call answer 503."""
    dataset = load_dataset(Path(dataset_path))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=inference_timeout) as client:
            app.state.http = client
            log.info(
                "task_app.started",
                dataset_size=len(dataset),
                key_configured=bool(environment_key),
                recording=record_path is not None,
            )
            yield

    app = Starlette(
        routes=[
            Route("/", root, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/task_info", task_info, methods=["GET"]),
            Route("/rollout", rollout, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.dataset = dataset
    app.state.environment_key = environment_key or None
    app.state.recorder = RolloutRecorder(Path(record_path) if record_path else None)
    return app


def _configure_logging() -> None:
    try:
        from mipro._logging import configure_logging
    except ImportError:  # running outside the backend's virtualenv
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ]
        )
    else:
        configure_logging("support-intents-task-app", fmt="json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--record", type=Path, default=None, help="append rollout records here")
    args = parser.parse_args(argv)

    _configure_logging()
    key = os.environ.get("ENVIRONMENT_API_KEY", "").strip() or None
    if key is None:
        log.warning("task_app.no_environment_api_key", hint="set ENVIRONMENT_API_KEY")
    app = create_app(args.dataset, key, args.record)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
