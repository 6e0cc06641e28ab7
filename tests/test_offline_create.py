"""synth-ai 0.9's offline create (`kind: "mipro_offline"`) becomes our spec, or a 400 naming
the field as the client wrote it (under `config`)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.json_format import ParseDict

from mipro.v1 import jobs_pb2
from orchestrator._errors import InvalidArgument
from orchestrator._models import JobSpec
from orchestrator._offline import spec_of as _spec_of

ENV = {"OPENAI_API_KEY": "sk-test"}


def spec_of(request: jobs_pb2.CreateOfflineJobRequest) -> JobSpec:
    return _spec_of(request, ENV)


def _section() -> dict[str, Any]:
    """What 0.9's `PolicyOptimizationJob` builder sends (recorded from the 0.9.11 wheel)."""
    return {"algorithm": "mipro", "algorithm_name": "mipro", "auto_discover_patterns": False,
            "container_url": "http://127.0.0.1:8102", "execution_mode": "offline",
            "job_kind": "optimization", "rollout_health_check_mode": "warn",
            "policy": {"model": "gpt-4.1-nano", "provider": "openai"},
            "mipro": {"batch_size": 2, "bootstrap_train_seeds": [0, 1],
                      "num_evaluations_per_iteration": 2, "num_iterations": 1,
                      "online_pool": [5, 6, 7]}}


def _request(config: Any = None, **top: Any) -> jobs_pb2.CreateOfflineJobRequest:
    body = {"technique": "discrete_optimization", "kind": "mipro_offline",
            "system": {"name": "sdk-mipro-offline", "reuse": True}, "config_mode": "DEFAULT",
            "config": {"prompt_learning": _section()} if config is None else config,
            "metadata": {"backend_base_url": "http://x/api"}, "auto_start": True,
            "prompt_opt_version": "v1", **top}
    return ParseDict(body, jobs_pb2.CreateOfflineJobRequest())


def test_the_builders_body_is_accepted_with_synths_knobs_mapped() -> None:
    spec = spec_of(_request())
    assert spec.task_app_url == "http://127.0.0.1:8102"  # container_url
    assert spec.val_seeds == (5, 6, 7) and spec.num_candidates == 2
    assert spec.bootstrap_train_seeds == (0, 1) and spec.minibatch_size == 2


def test_a_bare_section_is_accepted_as_prompt_learning() -> None:
    assert spec_of(_request(_section())) == spec_of(_request())


@pytest.mark.parametrize(("top", "field"), [
    ({"kind": "gepa_offline"}, "kind"),
    ({"technique": "model_optimization"}, "technique"),
    ({"config_mode": "SOME"}, "config_mode"),
    ({"auto_start": False}, "auto_start"),
    ({"container_worker_token": "tok"}, "container_worker_token"),
])
def test_what_is_not_served_is_refused_by_name(top: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        spec_of(_request(**top))
    assert caught.value.field == field


@pytest.mark.parametrize(("change", "field"), [
    ({"algorithm_name": "gepa"}, "config.prompt_learning.algorithm_name"),
    ({"execution_mode": "online"}, "config.prompt_learning.execution_mode"),
    ({"val_seed": [1]}, "config.prompt_learning.val_seed"),
])
def test_config_errors_name_the_field_under_config(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        spec_of(_request({"prompt_learning": {**_section(), **change}}))
    assert caught.value.field == field


def test_a_missing_config_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        spec_of(_request({}))
    assert caught.value.field == "config"
