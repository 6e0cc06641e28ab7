"""Our side of the quality benchmark: the real stack on the real local model, and one job per
mode submitted through the gateway's REST API, as a user would.

`start_quality_stack` starts the local model (`mipro.local_model`, or a server given by its
URL), the example task app with its `--record` file, then the proposer service, the
orchestrator and the Envoy gateway, all through `mipro._stack.Stack` (each process stopped by
its pid). `run_job` submits a job, waits for its end within a deadline, and reads what the task
app recorded of that job's rollouts: per seed, the baseline's and the winner's held-out
rewards, and how many rewards the optimization itself consumed (the bootstrap and validation
rollouts: the "metric calls").
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from mipro.examples.support_intents import task_app

from mipro._settings import Settings
from mipro._stack import Stack, free_port, free_ports_env, stack_env

from ._quality_splits import Splits

JOBS_PATH = "/api/policy-optimization/online/jobs"
TERMINAL = ("succeeded", "failed", "cancelled")
#: The demo's job on the real local model: policy and proposer settings come from it.
LOCAL_JOB = Path(task_app.__file__).with_name("job_local_model.json")
#: `<job id>_<phase letter><candidate, 2 digits>s<seed>`, the rollout id (`run_id`).
_ROLLOUT_ID = re.compile(r"^(?P<job>.+)_(?P<phase>[bvt])(?P<candidate>\d+)s(?P<seed>\d+)$")

#: The optimizer's modes: the value of `mipro.proposer.mode` each one submits.
MODES = {
    "instruction-only": "instruction_only",
    "demos-only": "demos_only",
    "joint": "instruction_and_demos",
}


class QualityError(RuntimeError):
    """A job or a process of the benchmark failed; the message says which and why."""


class ModeUnavailable(QualityError):
    """The server refused the job's mode (400 naming `mipro.proposer.mode`)."""


@dataclass
class JobOutcome:
    """What one job did, read from its GetJob answer and the task app's record."""

    mode: str
    job_id: str
    status: str
    seconds: float
    #: Rewards the optimization consumed: bootstrap + validation rollouts the task app scored.
    metric_calls: int
    bootstrap_calls: int
    val_calls: int
    failed_rollouts: int
    winner: int
    instruction: str
    val_score: float | None
    baseline_test: dict[int, float] = field(default_factory=dict)
    winner_test: dict[int, float] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class QualityStack:
    """The running stack; `stop()` stops every process it started."""

    stack: Stack
    api_key: str
    model_url: str
    task_app_url: str
    record: Path
    http: httpx.AsyncClient

    async def stop(self) -> None:
        await self.http.aclose()
        await self.stack.stop()

    async def api(self, method: str, path: str,
                  body: dict[str, Any] | None = None) -> httpx.Response:
        return await self.http.request(method, self.stack.gateway_url + path, json=body,
                                       headers={"Authorization": f"Bearer {self.api_key}"})


async def start_quality_stack(directory: Path, *, model_url: str | None = None) -> QualityStack:
    """Starts everything (the local model unless `model_url` names a server); on a failure,
    what was started is stopped before the error propagates."""
    api_key = "mk_quality_" + secrets.token_hex(8)
    environment_key = "env_quality_" + secrets.token_hex(8)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MIPRO_", "OPENAI_", "PROD_OPENAI_", "GROQ_"))}
    env = {**base, "MIPRO_HOST": "127.0.0.1", "MIPRO_DATA_DIR": str(directory / "data"),
           "MIPRO_API_KEYS": api_key, "MIPRO_TASK_APP_ALLOW": "loopback",
           "MIPRO_LOG_FORMAT": "json"}
    env.update(free_ports_env())
    settings = Settings.from_env(env)
    stack = Stack(settings, stack_env(settings, env), log_dir=directory / "logs")
    record = directory / "task_app_rollouts.jsonl"
    http = httpx.AsyncClient(timeout=60.0)
    try:
        if model_url is None:
            model_url = await stack.start_local_model(
                free_port(), record=directory / "local_model_calls.jsonl")
        stack.env["MIPRO_PROVIDER_LOCAL_BASE_URL"] = model_url
        stack.env.setdefault("MIPRO_PROVIDER_LOCAL_API_KEY", "unused")
        task_app_url = await stack.start_task_app(free_port(), environment_key, record=record)
        await stack.start_core()
        running = QualityStack(stack, api_key, model_url, task_app_url, record, http)
        answer = await running.api("POST", "/api/v1/env-keys",
                                   {"name": "ENVIRONMENT_API_KEY", "value": environment_key})
        answer.raise_for_status()
    except BaseException:
        await http.aclose()
        await stack.stop()
        raise
    return running


def job_request(task_app_url: str, mode: str, splits: Splits, *,
                num_candidates: int, seed: int,
                metric_calls: int | None = None) -> dict[str, Any]:
    """The demo's local-model job (`job_local_model.json`: policy, proposer, concurrency) on
    the benchmark's splits, in `mode` (a key of `MODES`). With `metric_calls`, the job's
    `max_rollouts` is that many bootstrap and validation rollouts plus the held-out test
    rollouts it reserves (the baseline's and the winner's), so every mode optimizes on the
    same number of rewards."""
    job: dict[str, Any] = copy.deepcopy(json.loads(LOCAL_JOB.read_text()))
    settings = job["policy_optimization"]
    settings["task_app_url"] = task_app_url
    mipro = settings["mipro"]
    mipro.update({"bootstrap_train_seeds": list(splits.bootstrap),
                  "val_seeds": list(splits.val), "test_seeds": list(splits.test),
                  "num_candidates": num_candidates, "seed": seed})
    mipro["proposer"]["mode"] = MODES[mode]
    if metric_calls is not None:
        mipro.setdefault("termination_config", {})["max_rollouts"] = (
            metric_calls + 2 * len(splits.test))
    return job


async def run_job(stack: QualityStack, mode: str, splits: Splits, *, num_candidates: int,
                  seed: int, timeout: float, metric_calls: int | None = None) -> JobOutcome:
    """Submits the job of `mode` and waits for its end (cancelled after `timeout` s)."""
    body = job_request(stack.task_app_url, mode, splits, num_candidates=num_candidates,
                       seed=seed, metric_calls=metric_calls)
    started = time.monotonic()
    answer = await stack.api("POST", JOBS_PATH, body)
    if answer.status_code == 400 and "proposer.mode" in answer.text:
        raise ModeUnavailable(f"the server refused mode {MODES[mode]!r}: "
                              f"{_message(answer)}")
    if answer.status_code != 200:
        raise QualityError(f"submitting the {mode} job answered {answer.status_code}: "
                           f"{answer.text[:300]}")
    job_id = str(answer.json()["job_id"])
    job = await _wait(stack, job_id, deadline=started + timeout)
    seconds = time.monotonic() - started
    if job["status"] != "succeeded":
        raise QualityError(f"job {job_id} ({mode}) ended {job['status']}: "
                           f"{job.get('error') or job.get('termination_reason')}")
    return outcome_from_record(mode, job, read_record(stack.record, job_id), seconds)


def _message(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("message", answer.text))
    except ValueError:
        return answer.text[:300]


async def _wait(stack: QualityStack, job_id: str, *, deadline: float) -> dict[str, Any]:
    while True:
        answer = await stack.api("GET", f"{JOBS_PATH}/{job_id}")
        answer.raise_for_status()
        job: dict[str, Any] = answer.json()
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            await stack.api("POST", f"{JOBS_PATH}/{job_id}/cancel",
                            {"reason": "quality benchmark deadline"})
            raise QualityError(f"job {job_id} did not finish within its deadline; cancelled "
                               f"(phase {job.get('phase')}, "
                               f"{job.get('rollouts_completed')} rollouts)")
        await asyncio.sleep(2.0)


@dataclass(frozen=True)
class RecordedRollout:
    """One `/rollout` the task app answered, as its `--record` line says."""

    phase: str
    candidate: int
    seed: int
    reward: float | None


def read_record(path: Path, job_id: str) -> list[RecordedRollout]:
    """The task app's record of `job_id`'s rollouts; an attempt retried after a failure
    keeps its last answer."""
    last: dict[tuple[str, int, int], RecordedRollout] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        match = _ROLLOUT_ID.match(str(entry.get("run_id") or ""))
        if match is None or match["job"] != job_id:
            continue
        reward = entry.get("reward") if entry.get("status") == 200 else None
        rollout = RecordedRollout(match["phase"], int(match["candidate"]), int(match["seed"]),
                                  None if reward is None else float(reward))
        last[(rollout.phase, rollout.candidate, rollout.seed)] = rollout
    return list(last.values())


def outcome_from_record(mode: str, job: dict[str, Any], rollouts: list[RecordedRollout],
                        seconds: float) -> JobOutcome:
    """The job's figures from its recorded rollouts, checked against what GetJob says."""
    scored = [r for r in rollouts if r.reward is not None]
    test = [r for r in scored if r.phase == "t"]
    winners = {r.candidate for r in test} - {0}
    if len(winners) > 1:
        raise QualityError(f"job {job['job_id']}: test rollouts of several candidates "
                           f"{sorted(winners)}")
    winner = winners.pop() if winners else 0
    outcome = JobOutcome(
        mode=mode, job_id=str(job["job_id"]), status=str(job["status"]), seconds=seconds,
        metric_calls=sum(1 for r in scored if r.phase in "bv"),
        bootstrap_calls=sum(1 for r in scored if r.phase == "b"),
        val_calls=sum(1 for r in scored if r.phase == "v"),
        failed_rollouts=len(rollouts) - len(scored), winner=winner,
        instruction=str(job.get("best_instruction", "")),
        val_score=job.get("best_score"),
        baseline_test={r.seed: r.reward for r in test if r.candidate == 0 and r.reward is not None},
        winner_test={r.seed: r.reward for r in test
                     if r.candidate == winner and r.reward is not None},
        job=job)
    _check_against_job(outcome, job, scored=len(scored))
    return outcome


def _check_against_job(outcome: JobOutcome, job: dict[str, Any], *, scored: int) -> None:
    """The record and the API must tell the same story, else the figures are not trusted."""
    if job.get("rollouts_completed") != scored:
        raise QualityError(f"job {outcome.job_id}: {job.get('rollouts_completed')} rollouts "
                           f"completed, but the task app recorded {scored} rewards")
    for name, scores in (("baseline_test_score", outcome.baseline_test),
                         ("best_test_score", outcome.winner_test)):
        reported = job.get(name)
        measured = sum(scores.values()) / len(scores) if scores else None
        if (reported is None) != (measured is None) or (
                reported is not None and measured is not None
                and abs(reported - measured) > 1e-9):
            raise QualityError(f"job {outcome.job_id}: {name} is {reported} but the task "
                               f"app recorded a mean of {measured}")
