"""End-to-end tests of the example task app in `examples/support_intents/`.

The task app runs as a real subprocess; a tiny OpenAI-compatible server, run by uvicorn in a
thread of the test process, stands in for the backend's interceptor. The trial id in the
inference URL tells the stub how to answer: `right` (the dataset's label), `wrong` (another
label), `notool` (no tool call) or `error` (HTTP 500).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mipro._stack import free_port

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "examples" / "support_intents"
TASK_APP = APP_DIR / "task_app.py"
DATASET = APP_DIR / "dataset.jsonl"
KEY = "sk-env-test-7f3c1d"
LABELS = [
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
]
BASELINE = "You are a helpful assistant. Classify the customer's message."
START_TIMEOUT_S = 15.0

pytestmark = pytest.mark.timeout(60)


def _dataset() -> list[dict[str, str]]:
    return [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- stub model


@dataclass
class StubModel:
    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    def last(self) -> dict[str, Any]:
        assert self.requests, "the stub model received no request"
        return self.requests[-1]


def _stub_app(stub: StubModel, labels_by_text: dict[str, str]) -> Starlette:
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        trial = request.path_params.get("trial", "")
        stub.requests.append(
            {
                "path": request.url.path,
                "query": request.url.query,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
            }
        )
        if trial == "error":
            return JSONResponse({"error": {"message": "provider exploded"}}, 500)
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        label = labels_by_text[user]
        if trial == "wrong":
            label = LABELS[(LABELS.index(label) + 1) % len(LABELS)]
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if trial == "notool":
            message["content"] = "I think it is about a card."
        else:
            message["tool_calls"] = [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "classify_intent",
                        "arguments": json.dumps({"intent": label}),
                    },
                }
            ]
        return JSONResponse(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    return Starlette(
        routes=[
            Route("/v1/{trial}/chat/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", completions, methods=["POST"]),
        ]
    )


@pytest.fixture(scope="module")
def stub_model() -> Iterator[StubModel]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stub = StubModel(base_url=f"http://127.0.0.1:{port}")
    labels_by_text = {row["text"]: row["label"] for row in _dataset()}
    config = uvicorn.Config(_stub_app(stub, labels_by_text), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the stub model server did not start")
            time.sleep(0.02)
        yield stub
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


# --------------------------------------------------------------------------- task app


@dataclass
class TaskApp:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    record_path: Path | None


def _start_task_app(tmp: Path, name: str, key: str | None, record: bool) -> TaskApp:
    port = free_port()
    log_path = tmp / f"{name}.log"
    record_path = tmp / f"{name}-record.jsonl" if record else None
    env = {k: v for k, v in os.environ.items() if k != "ENVIRONMENT_API_KEY"}
    if key is not None:
        env["ENVIRONMENT_API_KEY"] = key
    cmd = [sys.executable, str(TASK_APP), "--host", "127.0.0.1", "--port", str(port)]
    if record_path is not None:
        cmd += ["--record", str(record_path)]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    app = TaskApp(f"http://127.0.0.1:{port}", proc, log_path, record_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"task app exited early:\n{log_path.read_text()}")
            try:
                if httpx.get(app.base_url + "/", timeout=1.0).status_code == 200:
                    return app
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"task app did not start in time:\n{log_path.read_text()}")
            time.sleep(0.05)
    except BaseException:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def task_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskApp]:
    app = _start_task_app(tmp_path_factory.mktemp("task_app"), "keyed", KEY, record=True)
    try:
        yield app
    finally:
        _stop(app.proc)


@pytest.fixture(scope="module")
def keyless_task_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskApp]:
    app = _start_task_app(tmp_path_factory.mktemp("task_app"), "keyless", None, record=False)
    try:
        yield app
    finally:
        _stop(app.proc)


@pytest.fixture
def client(task_app: TaskApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=task_app.base_url, timeout=10.0) as c:
        yield c


ALL_AUTH = {"X-API-Key": KEY, "X-API-Keys": KEY, "Authorization": f"Bearer {KEY}"}


def _rollout_body(run_id: str, seed: int, inference_url: str) -> dict[str, Any]:
    """The v1 request the backend sends, per the contract."""
    return {
        "run_id": run_id,
        "trace_correlation_id": run_id,
        "env": {"env_name": "support_intents", "config": {"split": "train"}, "seed": seed},
        "policy": {
            "policy_id": "cand_004",
            "policy_name": "mipro",
            "config": {
                "model": "gpt-4o-mini",
                "provider": "openai",
                "temperature": 0.0,
                "max_completion_tokens": 256,
                "inference_url": inference_url,
                "trace_correlation_id": run_id,
            },
        },
        "ops": ["agent", "env"],
        "record": {"trajectories": True, "return_trace": False, "trace_format": "compact"},
        "on_done": "reset",
        "safety": {"max_ops": 100000, "max_time_s": 3600.0},
        "mode": "eval",
    }


def _records(app: TaskApp) -> dict[str, dict[str, Any]]:
    assert app.record_path is not None
    lines = app.record_path.read_text(encoding="utf-8").splitlines()
    return {r["run_id"]: r for r in map(json.loads, lines) if r["run_id"]}


# --------------------------------------------------------------------------- tests


def test_root_needs_no_auth(client: httpx.Client) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "service": "support-intents"}


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": KEY},
        {"X-API-Keys": f"other-key, {KEY}"},
        {"Authorization": f"Bearer {KEY}"},
        ALL_AUTH,
    ],
    ids=["x-api-key", "x-api-keys", "bearer", "all-three"],
)
def test_health_accepts_each_header(client: httpx.Client, headers: dict[str, str]) -> None:
    resp = client.get("/health", headers=headers)
    assert resp.status_code == 200
    assert resp.json() == {"healthy": True, "service": "support-intents"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong"},
        {"X-API-Keys": "a,b"},
        {"Authorization": "Bearer nope"},
        {"Authorization": KEY},
    ],
    ids=["none", "wrong-x-api-key", "wrong-x-api-keys", "wrong-bearer", "no-bearer-scheme"],
)
@pytest.mark.parametrize("path", ["/health", "/task_info"])
def test_bad_or_missing_key_is_400(
    client: httpx.Client, headers: dict[str, str], path: str
) -> None:
    resp = client.get(path, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["detail"]["error"]["code"] == "unauthorised"


def test_rollout_without_key_is_400(client: httpx.Client, stub_model: StubModel) -> None:
    body = _rollout_body("run-noauth", 0, stub_model.base_url + "/v1/right")
    resp = client.post("/rollout", json=body, headers={"X-API-Key": "wrong"})
    assert resp.status_code == 400
    assert resp.json()["detail"]["error"]["code"] == "unauthorised"


def test_no_key_configured_is_503(keyless_task_app: TaskApp) -> None:
    with httpx.Client(base_url=keyless_task_app.base_url, timeout=10.0) as c:
        assert c.get("/").status_code == 200
        for resp in (
            c.get("/health", headers=ALL_AUTH),
            c.get("/task_info", headers=ALL_AUTH),
            c.post("/rollout", json={}, headers=ALL_AUTH),
        ):
            assert resp.status_code == 503
            assert resp.json()["detail"]["error"]["code"] == "missing_environment_api_key"


def test_task_info(client: httpx.Client) -> None:
    resp = client.get("/task_info", headers=ALL_AUTH)
    assert resp.status_code == 200
    assert resp.json() == {
        "taskset": {
            "name": "support_intents",
            "description": "Classify a customer-support message from a banking app into one "
            "of 10 intents.",
            "labels": LABELS,
            "size": len(_dataset()),
        }
    }


def test_dataset_is_balanced_and_shuffled() -> None:
    rows = _dataset()
    counts = {label: sum(r["label"] == label for r in rows) for label in LABELS}
    assert set(r["label"] for r in rows) == set(LABELS)
    assert all(25 <= n <= 35 for n in counts.values()), counts
    assert len({r["text"] for r in rows}) == len(rows)
    # Mixed order: the first 20 lines span several labels.
    assert len({r["label"] for r in rows[:20]}) >= 5


@pytest.mark.parametrize("missing", ["run_id", "ops", "mode"])
def test_rollout_missing_required_field_is_422(
    client: httpx.Client, stub_model: StubModel, missing: str
) -> None:
    body = _rollout_body(f"run-missing-{missing}", 0, stub_model.base_url + "/v1/right")
    del body[missing]
    resp = client.post("/rollout", json=body, headers=ALL_AUTH)
    assert resp.status_code == 422
    assert missing in json.dumps(resp.json()["detail"])


def test_rollout_missing_seed_or_inference_url_is_422(
    client: httpx.Client, stub_model: StubModel
) -> None:
    body = _rollout_body("run-noseed", 0, stub_model.base_url + "/v1/right")
    del body["env"]["seed"]
    resp = client.post("/rollout", json=body, headers=ALL_AUTH)
    assert resp.status_code == 422
    assert "seed" in json.dumps(resp.json()["detail"])

    body = _rollout_body("run-nourl", 0, stub_model.base_url + "/v1/right")
    del body["policy"]["config"]["inference_url"]
    resp = client.post("/rollout", json=body, headers=ALL_AUTH)
    assert resp.status_code == 422
    assert "inference_url" in json.dumps(resp.json()["detail"])


def test_rollout_right_label_scores_one(
    client: httpx.Client, stub_model: StubModel, task_app: TaskApp
) -> None:
    rows = _dataset()
    seed = len(rows) + 5  # wraps around: seed s -> record s % N
    url = stub_model.base_url + "/v1/right?cid=run-right"
    resp = client.post("/rollout", json=_rollout_body("run-right", seed, url), headers=ALL_AUTH)
    assert resp.status_code == 200, resp.text
    data = resp.json()

    assert data["run_id"] == "run-right"
    assert data["aborted"] is False
    assert data["ops_executed"] == 2
    (traj,) = data["trajectories"]
    (step,) = traj["steps"]
    assert step["reward"] == 1.0
    assert step["done"] is True
    assert step["info"]["expected_label"] == rows[5]["label"]
    assert step["info"]["predicted_label"] == rows[5]["label"]
    metrics = data["metrics"]
    assert metrics["episode_returns"] == [1.0]
    assert metrics["mean_return"] == 1.0
    assert metrics["outcome_score"] == 1.0
    assert metrics["num_steps"] == 1
    assert metrics["num_episodes"] == 1
    assert metrics["details"]["correct"] is True

    # What reached the "interceptor": the rewritten URL, only X-API-Key, the baseline messages.
    sent = stub_model.last()
    assert sent["path"] == "/v1/right/chat/completions"
    assert sent["query"] == "cid=run-right"
    assert sent["headers"]["x-api-key"] == KEY
    assert "authorization" not in sent["headers"]
    assert "x-api-keys" not in sent["headers"]
    body = sent["body"]
    assert set(body) == {"model", "messages", "temperature", "max_tokens", "tools", "tool_choice"}
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 256
    assert body["tool_choice"] == "required"
    assert body["messages"] == [
        {"role": "system", "content": BASELINE},
        {"role": "user", "content": rows[5]["text"]},
    ]
    (tool,) = body["tools"]
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "classify_intent"
    params = tool["function"]["parameters"]
    assert params["required"] == ["intent"]
    assert params["properties"]["intent"] == {"type": "string", "enum": LABELS}


def test_rollout_wrong_label_scores_zero(client: httpx.Client, stub_model: StubModel) -> None:
    rows = _dataset()
    url = stub_model.base_url + "/v1/wrong?cid=run-wrong"
    resp = client.post("/rollout", json=_rollout_body("run-wrong", 3, url), headers=ALL_AUTH)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["metrics"]["mean_return"] == 0.0
    assert data["metrics"]["episode_returns"] == [0.0]
    step = data["trajectories"][0]["steps"][0]
    assert step["reward"] == 0.0
    assert step["info"]["expected_label"] == rows[3]["label"]
    assert step["info"]["predicted_label"] != rows[3]["label"]


def test_url_ending_in_v1_and_default_max_tokens(
    client: httpx.Client, stub_model: StubModel
) -> None:
    body = _rollout_body("run-bare-v1", 1, stub_model.base_url + "/v1")
    del body["policy"]["config"]["max_completion_tokens"]
    resp = client.post("/rollout", json=body, headers={"X-API-Key": KEY})
    assert resp.status_code == 200, resp.text
    sent = stub_model.last()
    assert sent["path"] == "/v1/chat/completions"
    assert sent["query"] == ""
    assert sent["body"]["max_tokens"] == 128


@pytest.mark.parametrize(
    ("trial", "code"),
    [("error", "inference_http_error"), ("notool", "inference_no_tool_call")],
)
def test_model_failure_is_502(
    client: httpx.Client, stub_model: StubModel, trial: str, code: str
) -> None:
    url = f"{stub_model.base_url}/v1/{trial}?cid=run-{trial}"
    resp = client.post("/rollout", json=_rollout_body(f"run-{trial}", 2, url), headers=ALL_AUTH)
    assert resp.status_code == 502
    assert resp.json()["detail"]["error"]["code"] == code


def test_model_endpoint_down_is_502(client: httpx.Client) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/gone?cid=run-down"
    resp = client.post("/rollout", json=_rollout_body("run-down", 2, url), headers=ALL_AUTH)
    assert resp.status_code == 502
    error = resp.json()["detail"]["error"]
    assert error["code"] == "inference_unreachable"
    assert error["message"]


def test_record_file(client: httpx.Client, stub_model: StubModel, task_app: TaskApp) -> None:
    url = stub_model.base_url + "/v1/right?cid=run-rec"
    body = _rollout_body("run-rec", 7, url)
    headers = {"X-API-Key": KEY, "X-API-Keys": "stale-key", "Authorization": f"Bearer {KEY}"}
    assert client.post("/rollout", json=body, headers=headers).status_code == 200
    bad = _rollout_body("run-rec-badkey", 7, url)
    assert client.post("/rollout", json=bad, headers={"X-API-Key": "no"}).status_code == 400
    down = _rollout_body("run-rec-down", 7, f"http://127.0.0.1:{free_port()}/v1/x")
    assert client.post("/rollout", json=down, headers=ALL_AUTH).status_code == 502

    records = _records(task_app)
    assert records["run-rec"] == {
        "run_id": "run-rec",
        "trace_correlation_id": "run-rec",
        "seed": 7,
        "policy_id": "cand_004",
        "inference_url": url,
        "auth_headers": {"x-api-key": True, "x-api-keys": False, "authorization": True},
        "body_keys": sorted(body),
        "policy_config_keys": sorted(body["policy"]["config"]),
        "reward": 1.0,
        "status": 200,
    }
    assert records["run-rec-badkey"]["status"] == 400
    assert records["run-rec-badkey"]["reward"] is None
    assert records["run-rec-badkey"]["auth_headers"] == {
        "x-api-key": False,
        "x-api-keys": False,
        "authorization": False,
    }
    assert records["run-rec-down"]["status"] == 502
    assert records["run-rec-down"]["reward"] is None
    assert records["run-rec-down"]["auth_headers"] == {
        "x-api-key": True,
        "x-api-keys": True,
        "authorization": True,
    }
    assert KEY not in task_app.record_path.read_text(encoding="utf-8")


def test_logs_are_json_and_never_hold_the_key(
    client: httpx.Client, stub_model: StubModel, task_app: TaskApp
) -> None:
    url = stub_model.base_url + "/v1/right?cid=run-log"
    assert (
        client.post("/rollout", json=_rollout_body("run-log", 4, url), headers=ALL_AUTH).status_code
        == 200
    )
    deadline = time.monotonic() + 5.0
    while True:
        text = task_app.log_path.read_text(encoding="utf-8")
        if "run-log" in text or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert KEY not in text
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    scored = [e for e in events if e.get("event") == "rollout.scored"]
    assert any(e.get("run_id") == "run-log" for e in scored), text
