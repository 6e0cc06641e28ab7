"""Example two-stage task app: a router picks the department, then an answerer the intent.

The same banking support messages as `support_intents` (its dataset and HTTP surface), in two
model calls per rollout, each with its own system message and tool:

1. **router**: "which department handles this message?", answered by a `route_message` tool
   call whose `department` is one of `cards`, `payments`, `account`;
2. **answerer**: given the department and the message, a `classify_intent` tool call whose
   `intent` is one of that department's intents (so a wrong route cannot end right).

The reward is 0.5 for the right department plus 0.5 for the right intent.

Each call goes to its stage's inference URL, `policy.config.stage_inference_urls[stage]`,
which the backend offers when the job declares the stages (`mipro.modules[].stages[]`: here
`router` and `answerer`), so the backend's interceptor gives each stage its own candidate
instruction and demos. Without that map both calls go to `policy.config.inference_url`, and
the interceptor tells the stages apart by their system messages.

    ENVIRONMENT_API_KEY=... python -m mipro.examples.support_triage.task_app --port 8103
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import structlog
import uvicorn
from mipro.examples.support_intents.task_app import (
    DEFAULT_DATASET,
    DEFAULT_INFERENCE_TIMEOUT,
    DEFAULT_MAX_TOKENS,
    InferenceError,
    RolloutRecorder,
    chat_completions_url,
    check_auth,
    error_response,
    invalid_field,
    load_dataset,
    record_entry,
    validate_rollout,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SERVICE = "support-triage"
TASKSET_NAME = "support_triage"
TASKSET_DESCRIPTION = (
    "Route a customer-support message from a banking app to its department, then classify "
    "its intent within that department."
)
DEPARTMENTS: dict[str, tuple[str, ...]] = {
    "cards": ("card_arrival", "lost_or_stolen_card", "change_pin"),
    "payments": ("failed_transfer", "refund_request", "exchange_rate", "top_up_failed",
                 "unrecognised_charge"),
    "account": ("close_account", "update_personal_details"),
}
DEPARTMENT_OF = {label: name for name, labels in DEPARTMENTS.items() for label in labels}
#: The stages, in the order each rollout calls them.
ROUTER, ANSWERER = "router", "answerer"
ROUTER_INSTRUCTION = "You route banking support messages. Pick the department for the message."
ANSWERER_INSTRUCTION = "You are a banking support agent. Classify the customer's intent."

log = structlog.get_logger(SERVICE)


def _tool(name: str, description: str, argument: str, values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object",
                       "properties": {argument: {"type": "string", "enum": list(values)}},
                       "required": [argument], "additionalProperties": False}}}


def stage_url(config: dict[str, Any], stage: str) -> str:
    """The chat completions URL of `stage`: its own when the backend offers one."""
    urls = config.get("stage_inference_urls")
    url = urls.get(stage) if isinstance(urls, dict) else None
    return chat_completions_url(url if isinstance(url, str) else config["inference_url"])


async def call_stage(client: httpx.AsyncClient, key: str, config: dict[str, Any], stage: str,
                     messages: list[dict[str, Any]], tool: dict[str, Any],
                     argument: str) -> tuple[str, list[dict[str, Any]]]:
    """One stage's model call; its tool call's `argument`, and the tool calls."""
    max_tokens = config.get("max_completion_tokens", config.get("max_tokens"))
    payload = {
        "model": config.get("model"), "messages": messages,
        "temperature": config.get("temperature", 0.0),
        "max_tokens": max_tokens if isinstance(max_tokens, int) else DEFAULT_MAX_TOKENS,
        "tools": [tool], "tool_choice": "required",
    }
    try:
        resp = await client.post(stage_url(config, stage), json=payload,
                                 headers={"X-API-Key": key})
    except httpx.HTTPError as exc:
        raise InferenceError("inference_unreachable", f"{stage} call failed: {exc!r}") from exc
    if not resp.is_success:
        raise InferenceError("inference_http_error",
                             f"{stage} call answered {resp.status_code}: {resp.text[:500]}")
    try:
        calls = resp.json()["choices"][0]["message"]["tool_calls"]
        raw = calls[0]["function"]["arguments"]
        value = (json.loads(raw) if isinstance(raw, str) else raw)[argument]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InferenceError("inference_bad_response",
                             f"{stage} answer has no {argument} tool call: {exc!r}") from exc
    if not isinstance(value, str):
        raise InferenceError("inference_bad_response", f"{stage}: {argument} is not text")
    return value.strip(), calls


async def health(request: Request) -> JSONResponse:
    if (denied := check_auth(request)) is not None:
        return denied
    return JSONResponse({"healthy": True, "service": SERVICE})


async def root(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "service": SERVICE})


async def task_info(request: Request) -> JSONResponse:
    if (denied := check_auth(request)) is not None:
        return denied
    return JSONResponse({"taskset": {
        "name": TASKSET_NAME, "description": TASKSET_DESCRIPTION,
        "departments": {k: list(v) for k, v in DEPARTMENTS.items()},
        "stages": [ROUTER, ANSWERER], "size": len(request.app.state.dataset)}})


async def rollout(request: Request) -> JSONResponse:
    try:
        body: Any = await request.json()
    except ValueError:
        body = None
    response, reward = await _rollout(request, body)
    request.app.state.recorder.write(
        record_entry(request, body, status=response.status_code, reward=reward))
    return response


async def _rollout(request: Request, body: Any) -> tuple[JSONResponse, float | None]:
    if (denied := check_auth(request)) is not None:
        return denied, None
    if body is None:
        return invalid_field((), "The request body is not valid JSON."), None
    if (invalid := validate_rollout(body)) is not None:
        return invalid, None
    state = request.app.state
    config: dict[str, Any] = body["policy"]["config"]
    seed: int = body["env"]["seed"]
    record = state.dataset[seed % len(state.dataset)]
    key = state.environment_key
    try:
        department, routed = await call_stage(
            state.http, key, config, ROUTER,
            [{"role": "system", "content": ROUTER_INSTRUCTION},
             {"role": "user", "content": record["text"]}],
            _tool("route_message", "Send the message to a department.", "department",
                  tuple(DEPARTMENTS)), "department")
        if department not in DEPARTMENTS:
            raise InferenceError("inference_bad_response", f"unknown department {department!r}")
        intent, classified = await call_stage(
            state.http, key, config, ANSWERER,
            [{"role": "system", "content": ANSWERER_INSTRUCTION},
             {"role": "user", "content": f"Department: {department}\n"
                                         f"Message: {record['text']}"}],
            _tool("classify_intent", "Report the intent of the customer's message.", "intent",
                  DEPARTMENTS[department]), "intent")
    except InferenceError as exc:
        log.warning("rollout.inference_failed", code=exc.code, error=exc.message, seed=seed)
        return error_response(502, exc.code, exc.message), None
    expected = record["label"]
    reward = 0.5 * (department == DEPARTMENT_OF[expected]) + 0.5 * (intent == expected)
    info = {"department": department, "predicted_label": intent, "expected_label": expected}
    run_id = body["run_id"]
    return JSONResponse({
        "run_id": run_id, "trace_correlation_id": body.get("trace_correlation_id") or run_id,
        "trajectories": [{"env_id": f"{TASKSET_NAME}::{seed}", "policy_id": "policy",
                          "steps": [{"obs": {"seed": seed}, "tool_calls": routed + classified,
                                     "reward": reward, "done": True, "info": info}],
                          "final": {"observation": {}, "reward": reward}, "length": 2}],
        "metrics": {"episode_returns": [reward], "mean_return": reward,
                    "outcome_score": reward, "num_steps": 2, "num_episodes": 1,
                    "details": info},
        "aborted": False, "ops_executed": len(body["ops"]),
    }), reward


def create_app(dataset_path: Path | str, environment_key: str | None,
               record_path: Path | str | None = None) -> Starlette:
    """Builds the app; `environment_key` None or empty makes every authed call answer 503."""
    dataset = load_dataset(Path(dataset_path))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=DEFAULT_INFERENCE_TIMEOUT) as client:
            app.state.http = client
            yield

    app = Starlette(routes=[
        Route("/", root, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/task_info", task_info, methods=["GET"]),
        Route("/rollout", rollout, methods=["POST"]),
    ], lifespan=lifespan)
    app.state.dataset = dataset
    app.state.environment_key = environment_key or None
    app.state.recorder = RolloutRecorder(Path(record_path) if record_path else None)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8103)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--record", type=Path, default=None, help="append rollout records here")
    args = parser.parse_args(argv)
    key = os.environ.get("ENVIRONMENT_API_KEY", "").strip() or None
    uvicorn.run(create_app(args.dataset, key, args.record), host=args.host, port=args.port,
                log_config=None, access_log=False)


if __name__ == "__main__":
    main()
