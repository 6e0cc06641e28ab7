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


# --- Synth's SDK form (config_body.prompt_learning) ---------------------------------------------

def _synth(**mipro: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "algorithm": "mipro", "task_app_url": "http://127.0.0.1:8102",
        "auto_discover_patterns": False,
        "policy": {"provider": "openai", "model": "gpt-4.1-nano", "inference_mode": "synth_hosted",
                   "config": {}, "temperature": 0.0},
        "mipro": {"bootstrap_train_seeds": [0, 1, 2], "online_pool": [5, 6, 7, 8],
                  "num_iterations": 2, "num_evaluations_per_iteration": 3, "batch_size": 2,
                  **mipro}}
    return {"algorithm": "mipro", "config_body": {"prompt_learning": section}, "overrides": {},
            "metadata": {"backend_base_url": "http://x/api"}, "auto_start": True}


def test_synth_config_as_its_docs_write_it_gets_documented_defaults() -> None:
    spec = _validate(_synth())
    assert spec.mode == "offline"
    assert spec.val_seeds == (5, 6, 7, 8)  # online_pool, as val_seeds is absent
    assert spec.minibatch_size == 2 and spec.num_iterations == 2
    assert spec.num_candidates == 6  # 3 evaluations per iteration x 2 iterations
    assert (spec.proposer.provider, spec.proposer.model, spec.proposer.mode) == (
        "openai", "gpt-4.1-nano", "instruction_only")
    assert spec.proposer.temperature == 0.7 and spec.proposer.max_tokens == 512


def test_synth_val_seeds_win_over_online_pool_and_explicit_knobs_win() -> None:
    spec = _validate(_synth(val_seeds=[20, 21, 22], num_candidates=4, minibatch_size=3,
                            termination_config={"max_rollouts": 50}))
    assert spec.val_seeds == (20, 21, 22)
    assert spec.num_candidates == 4 and spec.minibatch_size == 3 and spec.max_rollouts == 50


@pytest.mark.parametrize(("where", "typo", "suggestion"), [
    ("mipro", "val_seed", "val_seeds"),
    ("mipro", "num_candidate", "num_candidates"),
    ("policy", "modle", "model"),
    ("", "task_app_ulr", "task_app_url"),
])
def test_synth_typo_is_refused_naming_the_field_and_the_close_match(
        where: str, typo: str, suggestion: str) -> None:
    job = _synth()
    section = job["config_body"]["prompt_learning"]
    (section[where] if where else section)[typo] = 1
    path = ".".join(p for p in ("config_body.prompt_learning", where, typo) if p)
    with pytest.raises(InvalidArgument) as caught:
        _validate(job)
    assert caught.value.field == path
    assert f'did you mean "{suggestion}"' in caught.value.description


def test_synth_errors_name_the_field_as_the_client_wrote_it() -> None:
    job = _synth()
    job["config_body"]["prompt_learning"]["mipro"].pop("bootstrap_train_seeds")
    with pytest.raises(InvalidArgument) as caught:
        _validate(job)
    assert caught.value.field == "config_body.prompt_learning.mipro.bootstrap_train_seeds"


@pytest.mark.parametrize(("change", "field"), [
    ({"auto_start": False}, "auto_start"),
    ({"overrides": {"mipro.num_iterations": 3}}, "overrides"),
    ({"algorithm": "gepa"}, "algorithm"),
    ({"policy_optimization": BASE["policy_optimization"]}, "config_body"),
])
def test_synth_top_level_refusals(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _validate({**_synth(), **change})
    assert caught.value.field == field
