"""Create-request validation: defaults, and a clear error naming the field for bad input."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict

from mipro.v1 import jobs_pb2
from orchestrator._errors import InvalidArgument
from orchestrator._validation import validate_create_request

from .conftest import REPO_ROOT

ENV = {"OPENAI_API_KEY": "sk-test", "MIPRO_PROVIDER_LOCAL_BASE_URL": "http://127.0.0.1:1/v1"}
BASE: dict[str, Any] = json.loads(
    (REPO_ROOT / "examples" / "support_intents" / "job.json").read_text())


def _validate(job: dict[str, Any], env: dict[str, str] = ENV) -> Any:
    return validate_create_request(ParseDict(job, jobs_pb2.CreateJobRequest()), env)


def _with(path: str, value: Any) -> dict[str, Any]:
    job = copy.deepcopy(BASE)
    *parents, leaf = path.split(".")
    node = job
    for part in parents:
        node = node[part]
    if value is None:
        node.pop(leaf)
    else:
        node[leaf] = value
    return job


def test_documented_request_gets_documented_defaults() -> None:
    spec = _validate(BASE)
    assert spec.task_app_url == "https://your-task-app.example.com"
    assert spec.bootstrap_train_seeds == (0, 1, 2, 3, 4)
    assert spec.val_seeds == (100, 101, 102)
    assert spec.proposer.max_tokens == 512 and spec.proposer.temperature == 0.7
    assert spec.policy.temperature == 0.0 and spec.policy.max_completion_tokens == 256
    assert spec.num_candidates == 6 and spec.max_concurrent == 8 and spec.seed == 0


def test_proposer_defaults_apply_when_omitted() -> None:
    job = _with("policy_optimization.mipro.proposer.max_tokens", None)
    job["policy_optimization"]["mipro"]["proposer"].pop("temperature")
    spec = _validate(job)
    assert spec.proposer.max_tokens == 512 and spec.proposer.temperature == 0.7


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        ("policy_optimization.mipro.mode", "online", "policy_optimization.mipro.mode", "offline"),
        ("policy_optimization.mipro.mode", None, "policy_optimization.mipro.mode", "required"),
        ("policy_optimization.mipro.val_seeds", [], "policy_optimization.mipro.val_seeds",
         "non-empty"),
        ("policy_optimization.mipro.val_seeds", [1, 1], "policy_optimization.mipro.val_seeds[1]",
         "repeats"),
        ("policy_optimization.mipro.bootstrap_train_seeds", [-1],
         "policy_optimization.mipro.bootstrap_train_seeds[0]", "non-negative"),
        ("policy_optimization.task_app_url", "ftp://x", "policy_optimization.task_app_url",
         "http"),
        ("policy_optimization.algorithm", "gepa", "policy_optimization.algorithm", "mipro"),
        ("policy_optimization.mipro.proposer.mode", "few_shot",
         "policy_optimization.mipro.proposer.mode", "instruction_only"),
        ("policy_optimization.mipro.proposer.provider", "acme",
         "policy_optimization.mipro.proposer.provider", "MIPRO_PROVIDER_ACME_BASE_URL"),
        ("policy_optimization.mipro.proposer.temperature", 3.5,
         "policy_optimization.mipro.proposer.temperature", "[0, 2]"),
        ("policy_optimization.mipro.num_candidates", 0,
         "policy_optimization.mipro.num_candidates", "[1, 64]"),
        ("policy_optimization.mipro.max_concurrent", 1000,
         "policy_optimization.mipro.max_concurrent", "[1, 256]"),
        ("policy_optimization.policy", None, "policy_optimization.policy", "required"),
    ],
)
def test_bad_fields_are_named(path: str, value: Any, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _validate(_with(path, value))
    assert caught.value.field == field
    assert words in str(caught.value)


def test_openai_without_a_key_is_refused_at_submit() -> None:
    with pytest.raises(InvalidArgument) as caught:
        _validate(BASE, env={})
    assert caught.value.field == "policy_optimization.policy.provider"
    assert "OPENAI_API_KEY" in str(caught.value)


def test_any_provider_name_can_point_at_a_compatible_server() -> None:
    job = _with("policy_optimization.policy.provider", "local")
    assert _validate(job).policy.provider == "local"


def test_optional_settings_are_read() -> None:
    job = copy.deepcopy(BASE)
    job["policy_optimization"]["mipro"].update(
        num_candidates=3, max_concurrent=2, seed=7, test_seeds=[200, 201], env_name="intents",
        env_config={"split": "val"}, termination_config={"max_rollouts": 40})
    spec = _validate(job)
    assert (spec.num_candidates, spec.max_concurrent, spec.seed) == (3, 2, 7)
    assert spec.test_seeds == (200, 201) and spec.env_config == {"split": "val"}
    assert spec.max_rollouts == 40 and spec.env_name == "intents"
