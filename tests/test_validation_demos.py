"""Validation of the demo and stage settings, in our body and in Synth's `config_body`."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from orchestrator._convert import spec_to_proto
from orchestrator._errors import InvalidArgument
from orchestrator._models import StageSpec
from orchestrator._store import spec_from_dict, spec_to_dict

from .test_validation import BASE, _synth, _validate

MIPRO = "policy_optimization.mipro"


def _job(**mipro: Any) -> dict[str, Any]:
    job = copy.deepcopy(BASE)
    job["policy_optimization"]["mipro"].update(mipro)
    return job


def test_demo_settings_default_to_the_table() -> None:
    spec = _validate(BASE)
    assert spec.proposer.mode == "instruction_only"
    assert (spec.few_shot_score_threshold, spec.max_demo_set_size, spec.max_demo_sets,
            spec.min_bootstrap_demos, spec.stages) == (0.8, 4, 4, 0, ())


def test_modes_demo_settings_and_stages_are_read_and_round_trip() -> None:
    job = _job(few_shot_score_threshold=0.5, max_demo_set_size=3, max_demo_sets=2,
               min_bootstrap_demos=1, modules=[{"module_id": "m", "stages": [
                   {"stage_id": "router", "max_instruction_slots": 0},
                   {"stage_id": "answerer", "max_demo_slots": 1}]}])
    job["policy_optimization"]["mipro"]["proposer"]["mode"] = "instruction_and_demos"
    spec = _validate(job)
    assert spec.proposer.mode == "instruction_and_demos"
    assert (spec.few_shot_score_threshold, spec.max_demo_set_size, spec.max_demo_sets,
            spec.min_bootstrap_demos) == (0.5, 3, 2, 1)
    assert spec.stages == (StageSpec("router", "m", 0, 3), StageSpec("answerer", "m", 1, 1))
    assert spec_from_dict(spec_to_dict(spec)) == spec
    # The stored form is exactly `asdict`'s, nested settings copied, not shared.
    assert spec_to_dict(spec) == dataclasses.asdict(spec)
    assert spec_to_dict(spec)["env_config"] is not spec.env_config
    shown = spec_to_proto(spec).mipro
    assert [s.stage_id for s in shown.modules[0].stages] == ["router", "answerer"]
    assert shown.max_demo_sets == 2


@pytest.mark.parametrize(("mipro", "field", "words"), [
    ({"few_shot_score_threshold": 1.5}, f"{MIPRO}.few_shot_score_threshold", "[0, 1]"),
    ({"max_demo_set_size": 0}, f"{MIPRO}.max_demo_set_size", "[1, 16]"),
    ({"max_demo_sets": 99}, f"{MIPRO}.max_demo_sets", "[1, 16]"),
    ({"modules": [{"module_id": "m", "stages": []}]}, f"{MIPRO}.modules[0].stages",
     "at least one"),
    ({"modules": [{"stages": [{"stage_id": "a"}]}]}, f"{MIPRO}.modules[0].module_id",
     "required"),
    ({"modules": [{"module_id": "m", "stages": [{"stage_id": "a/b"}]}]},
     f"{MIPRO}.modules[0].stages[0].stage_id", "letters"),
    ({"modules": [{"module_id": "m", "stages": [{"stage_id": "a"}]},
                  {"module_id": "n", "stages": [{"stage_id": "a"}]}]},
     f"{MIPRO}.modules[1].stages[0].stage_id", "repeats"),
    ({"modules": [{"module_id": "m", "stages": [{"stage_id": "a", "max_demo_slots": 17}]}]},
     f"{MIPRO}.modules[0].stages[0].max_demo_slots", "[0, 16]"),
])
def test_bad_demo_and_stage_settings_are_named(mipro: dict[str, Any], field: str,
                                               words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _validate(_job(**mipro))
    assert caught.value.field == field
    assert words in str(caught.value)


def test_synth_names_map_under_config_body() -> None:
    spec = _validate(_synth(few_shot_score_threshold=0.7, max_demo_set_size=10,
                            max_demo_sets=3, min_bootstrap_demos=2,
                            proposer={"mode": "demos_only", "provider": "openai",
                                      "model": "gpt-4.1-nano"},
                            modules=[{"module_id": "iris", "description": "one module",
                                      "stages": [{"stage_id": "classify",
                                                  "description": "classify it",
                                                  "max_instruction_slots": 2,
                                                  "max_demo_slots": 3}]}]))
    assert (spec.few_shot_score_threshold, spec.max_demo_set_size, spec.max_demo_sets,
            spec.min_bootstrap_demos, spec.proposer.mode) == (0.7, 10, 3, 2, "demos_only")
    assert spec.stages == (StageSpec("classify", "iris", 2, 3),)
    with pytest.raises(InvalidArgument) as caught:
        _validate(_synth(few_shot_score_threshold=2.0))
    assert caught.value.field == "config_body.prompt_learning.mipro.few_shot_score_threshold"
