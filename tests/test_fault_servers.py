"""Tests of the fault-injection servers in `tests/faults/` themselves, with real processes.

One module-wide set of processes on free ports: the fake model, the example task app,
three flaky task apps in front of it (default rates; the same seed again; zero rates with
`--fail-all-after 3`), one with `--fail-all-after 0 --fail-all-mode drop`, and a rate-limited
model in front of the fake model. All are stopped by pid at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from mipro._settings import Settings
from mipro._stack import Stack, free_port
from tests._launch import start_fake_model
from tests.conftest import REPO_ROOT
from tests.faults import FLAKY_TASK_APP, RATE_LIMITED_MODEL, start_fault_server
from tests.faults.flaky_task_app import GARBAGE_BODY, FaultRates, decide_fault

pytestmark = pytest.mark.timeout(60)

SEED = 0
RATES = FaultRates(fail=0.2, hang=0.05, garbage=0.05)
BURST_EVERY, BURST_LENGTH, RETRY_AFTER = 5, 2, 0.3
HANG_PROBE_TIMEOUT = 1.0
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass(frozen=True)
class Servers:
    """Addresses, key and log files of the processes under test."""

    task_app: str
    model: str
    flaky: str
    flaky_twin: str
    flaky_down: str
    flaky_drop: str
    limited: str
    environment_key: str
    flaky_log: Path
    flaky_twin_log: Path
    flaky_down_log: Path
    limited_log: Path

    @property
    def auth(self) -> dict[str, str]:
        key = self.environment_key
        return {"X-API-Key": key, "X-API-Keys": key, "Authorization": f"Bearer {key}"}

    def rollout_body(self, run_id: str, seed: int) -> dict[str, Any]:
        """A v1 rollout request whose policy calls the fake model directly."""
        return {
            "run_id": run_id,
            "trace_correlation_id": run_id,
            "env": {"env_name": "support_intents", "config": {"split": "train"}, "seed": seed},
            "policy": {"policy_id": "p1", "policy_name": "mipro",
                       "config": {"model": "fake", "provider": "openai",
                                  "temperature": 0.0, "max_completion_tokens": 64,
                                  "inference_url": f"{self.model}/v1"}},
            "ops": ["agent", "env"],
            "record": {"trajectories": True},
            "mode": "eval",
        }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    tmp = tmp_path_factory.mktemp("faults")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIPRO_", "OPENAI_"))}
    env["MIPRO_LOG_FORMAT"] = "json"
    stack = Stack(Settings(), env, log_dir=tmp / "logs")
    key = "env_test_" + secrets.token_hex(8)
    try:
        model_v1, task_app = await asyncio.gather(
            start_fake_model(stack, free_port()),
            stack.start_task_app(free_port(), key))
        model = model_v1.removesuffix("/v1")
        rates = ["--fail-rate", str(RATES.fail), "--hang-rate", str(RATES.hang),
                 "--garbage-rate", str(RATES.garbage), "--seed", str(SEED)]
        zero = ["--fail-rate", "0", "--hang-rate", "0", "--garbage-rate", "0"]
        logs = {name: tmp / f"{name}.jsonl" for name in ("flaky", "twin", "down", "limited")}
        flaky, twin, down, drop, limited = await asyncio.gather(
            start_fault_server(stack, FLAKY_TASK_APP, task_app, free_port(),
                               log=logs["flaky"], args=rates),
            start_fault_server(stack, FLAKY_TASK_APP, task_app, free_port(),
                               log=logs["twin"], args=rates),
            start_fault_server(stack, FLAKY_TASK_APP, task_app, free_port(),
                               log=logs["down"], args=[*zero, "--fail-all-after", "3"]),
            start_fault_server(stack, FLAKY_TASK_APP, task_app, free_port(),
                               args=[*zero, "--fail-all-after", "0",
                                     "--fail-all-mode", "drop"]),
            start_fault_server(stack, RATE_LIMITED_MODEL, model, free_port(),
                               log=logs["limited"],
                               args=["--burst-every", str(BURST_EVERY),
                                     "--burst-length", str(BURST_LENGTH),
                                     "--retry-after", str(RETRY_AFTER)]),
        )
        yield Servers(task_app=task_app, model=model, flaky=flaky, flaky_twin=twin,
                      flaky_down=down, flaky_drop=drop, limited=limited,
                      environment_key=key, flaky_log=logs["flaky"],
                      flaky_twin_log=logs["twin"], flaky_down_log=logs["down"],
                      limited_log=logs["limited"])
    finally:
        await asyncio.shield(stack.stop())


@pytest_asyncio.fixture(loop_scope="session")
async def client(servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends the environment key on every request, as the backend does."""
    async with httpx.AsyncClient(timeout=TIMEOUT, headers=servers.auth, trust_env=False) as c:
        yield c


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def _eventually(check: Callable[[], Any], *, timeout: float = 5.0) -> None:
    """Waits until the async `check()` returns true, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _run_id_with(fault: str | None, prefix: str, attempt: int = 1) -> str:
    """The first `prefix-i` whose attempt `attempt` gets `fault`."""
    return next(f"{prefix}-{i}" for i in range(10_000)
                if decide_fault(SEED, f"{prefix}-{i}", attempt, RATES) == fault)


async def _outcome(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                   expect_hang: bool) -> tuple[str | None, httpx.Response | None]:
    """Posts one rollout and classifies what came back as the fault it looks like."""
    try:
        resp = await client.post(f"{url}/rollout", json=body,
                                 timeout=HANG_PROBE_TIMEOUT if expect_hang else TIMEOUT)
    except httpx.ReadTimeout:
        return "hang", None
    if resp.status_code == 500:
        assert resp.json()["detail"]["error"]["code"] == "injected_fault"
        return "500", resp
    assert resp.status_code == 200, resp.text
    try:
        resp.json()
    except ValueError:
        assert resp.content == GARBAGE_BODY
        return "garbage", resp
    return None, resp


# --------------------------------------------------------------------------- decisions


def test_decide_fault_is_deterministic_and_follows_the_rates() -> None:
    n = 20_000
    decided = [decide_fault(SEED, f"run-{i}", 1, RATES) for i in range(n)]
    assert decided == [decide_fault(SEED, f"run-{i}", 1, RATES) for i in range(n)]
    for kind, rate in (("500", RATES.fail), ("hang", RATES.hang),
                       ("garbage", RATES.garbage)):
        assert abs(decided.count(kind) / n - rate) < 0.015, kind
    # Another attempt or another seed draws again.
    assert decided != [decide_fault(SEED, f"run-{i}", 2, RATES) for i in range(n)]
    assert decided != [decide_fault(SEED + 1, f"run-{i}", 1, RATES) for i in range(n)]
    assert all(decide_fault(SEED, f"run-{i}", 1, FaultRates(0, 0, 0)) is None for i in range(99))


def test_bad_rates_are_refused_on_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", FLAKY_TASK_APP, "--port", "1", "--upstream", "http://x",
         "--fail-rate", "0.8", "--hang-rate", "0.5"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "sum to at most 1" in result.stderr


# --------------------------------------------------------------------------- flaky task app


async def test_fault_rates_over_200_run_ids(servers: Servers,
                                            client: httpx.AsyncClient) -> None:
    run_ids = [f"rates-{i:03d}" for i in range(200)]
    predicted = {r: decide_fault(SEED, r, 1, RATES) for r in run_ids}
    before = (await client.get(f"{servers.flaky}/_faults/stats")).json()
    limit = asyncio.Semaphore(40)

    async def one(i: int, run_id: str) -> tuple[str | None, httpx.Response | None]:
        async with limit:
            return await _outcome(client, servers.flaky, servers.rollout_body(run_id, i),
                                  predicted[run_id] == "hang")

    outcomes = await asyncio.gather(*(one(i, r) for i, r in enumerate(run_ids)))
    observed = {r: fault for r, (fault, _) in zip(run_ids, outcomes, strict=True)}
    assert observed == predicted

    # Within three binomial standard deviations of the requested rates.
    for kind, rate in (("500", RATES.fail), ("hang", RATES.hang), ("garbage", RATES.garbage),
                       (None, 1 - RATES.fail - RATES.hang - RATES.garbage)):
        count = list(observed.values()).count(kind)
        assert abs(count - 200 * rate) <= 3 * (200 * rate * (1 - rate)) ** 0.5, (kind, count)

    after = (await client.get(f"{servers.flaky}/_faults/stats")).json()
    for kind in ("500", "hang", "garbage"):
        assert after["faults"][kind] - before["faults"][kind] == \
            list(predicted.values()).count(kind)
    assert after["received"] - before["received"] == 200

    # Each forwarded rollout returns the upstream's answer, with its reward.
    rewards = {}
    for run_id, (fault, resp) in zip(run_ids, outcomes, strict=True):
        if fault is None:
            assert resp is not None
            rewards[run_id] = resp.json()["metrics"]["mean_return"]
            assert resp.json()["run_id"] == run_id

    # The hangs end when their clients go away.
    async def no_hang() -> bool:
        return (await client.get(f"{servers.flaky}/_faults/stats")).json()["hanging_now"] == 0
    await _eventually(no_hang)

    lines = [e for e in _lines(servers.flaky_log) if e["run_id"] in predicted]
    assert len(lines) == 200
    for entry in lines:
        run_id = entry["run_id"]
        assert entry["attempt"] == 1
        assert entry["fault"] == predicted[run_id]
        assert entry["seed"] == run_ids.index(run_id)
        assert isinstance(entry["t"], float) and entry["t"] >= entry["t_received"]
        if predicted[run_id] is None:
            assert entry["completed"] is True
            assert entry["upstream_status"] == 200 and entry["status"] == 200
            assert entry["reward"] == rewards[run_id]
        else:
            assert entry["completed"] is False
            assert entry["upstream_status"] is None and entry["reward"] is None


async def test_same_run_id_and_attempt_get_the_same_fault(servers: Servers,
                                                          client: httpx.AsyncClient) -> None:
    # Run ids whose first three attempts include no hang, so nothing waits.
    run_ids = [r for r in (f"same-{i}" for i in range(60))
               if all(decide_fault(SEED, r, a, RATES) != "hang" for a in (1, 2, 3))][:12]
    seen: dict[str, list[list[str | None]]] = {}
    for url in (servers.flaky, servers.flaky_twin):
        faults: list[list[str | None]] = []
        for run_id in run_ids:
            per_attempt = []
            for _ in range(3):
                fault, _resp = await _outcome(client, url, servers.rollout_body(run_id, 5),
                                              expect_hang=False)
                per_attempt.append(fault)
            faults.append(per_attempt)
        seen[url] = faults
    expected = [[decide_fault(SEED, r, a, RATES) for a in (1, 2, 3)] for r in run_ids]
    assert seen[servers.flaky] == seen[servers.flaky_twin] == expected
    assert any(len(set(f)) > 1 for f in expected), "want a run id whose attempts differ"

    twin = [e for e in _lines(servers.flaky_twin_log) if e["run_id"] in run_ids]
    assert [(e["run_id"], e["attempt"]) for e in twin] == \
        [(r, a) for r in run_ids for a in (1, 2, 3)]


async def test_a_hang_does_not_block_other_requests(servers: Servers,
                                                    client: httpx.AsyncClient) -> None:
    hung_id = _run_id_with("hang", "hang-probe")
    ok_id = _run_id_with(None, "hang-ok")
    async with httpx.AsyncClient(timeout=TIMEOUT, headers=servers.auth,
                                 trust_env=False) as hung_client:
        hung = asyncio.create_task(
            hung_client.post(f"{servers.flaky}/rollout", json=servers.rollout_body(hung_id, 1)))

        async def hanging() -> bool:
            stats = (await client.get(f"{servers.flaky}/_faults/stats")).json()
            return stats["hanging_now"] >= 1
        await _eventually(hanging)

        started = time.monotonic()
        health = await client.get(f"{servers.flaky}/health")
        done = await client.post(f"{servers.flaky}/rollout",
                                 json=servers.rollout_body(ok_id, 2))
        assert health.status_code == 200 and done.status_code == 200
        assert "mean_return" in done.json()["metrics"]
        assert time.monotonic() - started < 5.0
        assert not hung.done()
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung

    async def released() -> bool:
        stats = (await client.get(f"{servers.flaky}/_faults/stats")).json()
        return stats["hanging_now"] == 0
    await _eventually(released)
    entry = next(e for e in _lines(servers.flaky_log) if e["run_id"] == hung_id)
    assert entry["fault"] == "hang" and entry["status"] is None


async def test_forwarded_requests_match_the_upstream(servers: Servers,
                                                     client: httpx.AsyncClient) -> None:
    run_id = _run_id_with(None, "forward")
    via_proxy = await client.post(f"{servers.flaky}/rollout",
                                  json=servers.rollout_body(run_id, 7))
    direct = await client.post(f"{servers.task_app}/rollout",
                               json=servers.rollout_body(run_id, 7))
    assert via_proxy.status_code == direct.status_code == 200
    assert via_proxy.json() == direct.json()
    entry = [e for e in _lines(servers.flaky_log) if e["run_id"] == run_id][-1]
    assert entry["reward"] == direct.json()["metrics"]["mean_return"]

    # Health, task_info (with its query) and the root pass through, auth headers included.
    for path in ("/health", "/task_info?seed=3", "/"):
        proxied = await client.get(f"{servers.flaky}{path}")
        upstream = await client.get(f"{servers.task_app}{path}")
        assert proxied.status_code == upstream.status_code == 200, path
        assert proxied.json() == upstream.json(), path
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as bare:
        for headers in ({}, {"X-API-Key": "wrong"}):
            denied = await bare.get(f"{servers.flaky}/health", headers=headers)
            assert denied.status_code == 400
            assert denied.json()["detail"]["error"]["code"] == "unauthorised"


async def test_fail_all_after_n(servers: Servers, client: httpx.AsyncClient) -> None:
    statuses = []
    for i in range(6):
        resp = await client.post(f"{servers.flaky_down}/rollout",
                                 json=servers.rollout_body(f"down-{i}", i))
        statuses.append(resp.status_code)
    assert statuses == [200, 200, 200, 503, 503, 503]
    health = await client.get(f"{servers.flaky_down}/health")
    assert health.status_code == 200
    stats = (await client.get(f"{servers.flaky_down}/_faults/stats")).json()
    assert stats["faults"]["fail_all"] == 3 and stats["completed"] == 3
    assert [e["fault"] for e in _lines(servers.flaky_down_log)] == [None] * 3 + ["fail_all"] * 3

    with pytest.raises(httpx.TransportError):
        await client.post(f"{servers.flaky_drop}/rollout",
                          json=servers.rollout_body("drop-0", 0))
    stats = (await client.get(f"{servers.flaky_drop}/_faults/stats")).json()
    assert stats["faults"]["fail_all"] == 1 and stats["forwarded"] == 0


# --------------------------------------------------------------------------- rate-limited model


def _chat(i: int) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": f"hello {i}"}]}


async def test_429_bursts_at_the_configured_positions(servers: Servers,
                                                      client: httpx.AsyncClient) -> None:
    health = await client.get(f"{servers.limited}/health")
    assert health.status_code == 200 and health.json()["healthy"] is True
    start = (await client.get(f"{servers.limited}/_faults/stats")).json()["requests"]
    bodies = [json.dumps(_chat(i)).encode() for i in range(12)]
    statuses = []
    for k, body in enumerate(bodies, start=start):
        resp = await client.post(f"{servers.limited}/v1/chat/completions", content=body,
                                 headers={"Content-Type": "application/json",
                                          "X-Request-ID": f"req-{k}"})
        statuses.append(resp.status_code)
        if k % BURST_EVERY < BURST_LENGTH:
            assert resp.status_code == 429, k
            assert resp.headers["retry-after"] == f"{RETRY_AFTER:g}"
            assert resp.headers["retry-after-ms"] == str(round(RETRY_AFTER * 1000))
            error = resp.json()["error"]
            assert error["message"] == "Rate limit reached"
            assert error["type"] == "rate_limit_exceeded"
        else:
            assert resp.status_code == 200, (k, resp.text)
            assert resp.json()["choices"][0]["message"]["role"] == "assistant"
    assert statuses.count(429) >= 4
    # /health is forwarded and never counted.
    assert (await client.get(f"{servers.limited}/health")).status_code == 200
    assert (await client.get(f"{servers.limited}/_faults/stats")).json()["requests"] == \
        start + 12

    lines = [e for e in _lines(servers.limited_log) if start <= e["n"] < start + 12]
    assert [e["n"] for e in lines] == list(range(start, start + 12))
    assert [e["status"] for e in lines] == statuses
    assert [e["body_sha"] for e in lines] == [hashlib.sha256(b).hexdigest() for b in bodies]
    assert [e["request_id"] for e in lines] == [f"req-{k}" for k in range(start, start + 12)]
    assert all(a["t"] <= b["t"] for a, b in zip(lines, lines[1:], strict=False))


async def test_log_pairs_a_retry_with_its_429(servers: Servers,
                                              client: httpx.AsyncClient) -> None:
    """A client that honours Retry-After: the log shows each retry, same body, at least
    Retry-After after its 429."""
    start = (await client.get(f"{servers.limited}/_faults/stats")).json()["requests"]
    # Skip ahead to the start of the next burst, then send 3 requests, retrying each.
    for i in range((-start) % BURST_EVERY):
        await client.get(f"{servers.limited}/v1/models", params={"skip": i})
    for i in range(3):
        while True:
            resp = await client.post(f"{servers.limited}/v1/chat/completions",
                                     json=_chat(100 + i))
            if resp.status_code != 429:
                break
            await asyncio.sleep(float(resp.headers["retry-after"]))
        assert resp.status_code == 200
    lines = _lines(servers.limited_log)
    limited = [e for e in lines if e["status"] == 429 and e["path"] == "/v1/chat/completions"
               and e["n"] >= start]
    assert len(limited) == BURST_LENGTH
    by_n = {e["n"]: e for e in lines}
    for e in limited:
        nxt = by_n[e["n"] + 1]
        assert nxt["body_sha"] == e["body_sha"]
        assert nxt["t"] - e["t"] >= RETRY_AFTER
