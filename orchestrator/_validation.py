"""Turns a `CreateJobRequest` into a `JobSpec`, or raises `InvalidArgument` naming the field.

The gateway's transcoder silently drops unknown JSON fields, so everything that matters is
checked here: required fields, allowed modes, seed lists, numeric ranges and providers.

A request in Synth's SDK form (`config_body.prompt_learning`, a Struct) reaches us with every
key, so there an unknown key is refused by name, with the closest known one suggested; Synth's
own knobs are mapped onto ours first (`_from_synth`, the table in README "Using Synth's SDK").
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from google.protobuf import descriptor as _descriptor
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError

from mipro._providers import ProviderError, resolve_provider
from mipro.v1 import jobs_pb2

from . import _defaults as defaults
from ._candidate_prompt import STAGE_ID
from ._defaults import Knob
from ._errors import InvalidArgument
from ._models import JobSpec, PolicySpec, ProposerSpec, StageSpec

_ROOT = "policy_optimization"
_SYNTH_ROOT = "config_body.prompt_learning"
#: The kind markers synth-ai 0.9's job builder adds to `prompt_learning`, with the one value
#: each may have here.
_SYNTH_09_MARKERS = {"algorithm_name": "mipro", "execution_mode": "offline",
                     "job_kind": "optimization"}
#: Synth's keys beyond our schema, by section of `prompt_learning`: each is mapped onto one of
#: ours or accepted and ignored (README "Using Synth's SDK").
_SYNTH_EXTRAS: dict[str, frozenset[str]] = {
    "": frozenset({"auto_discover_patterns", "localapi_url", "container_url",
                   *_SYNTH_09_MARKERS, "rollout_health_check_mode"}),
    "policy": frozenset({"inference_mode", "config"}),
    "mipro": frozenset({"online_pool", "num_evaluations_per_iteration", "batch_size"}),
}
_MIN_PORT, _MAX_PORT = 1, 65535
N = TypeVar("N", int, float)


def _required(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument(field, "is required")
    return value.strip()


def _checked(value: N, field: str, knob: Knob[N], *, high: float | None = None) -> N:
    """`value`, if the table's range (narrowed to `high`) allows it."""
    if high is not None and high < knob.high:
        knob = Knob(knob.default, knob.low, type(knob.high)(high), knob.low_inclusive)
    if math.isnan(value) or math.isinf(value) or not knob.allows(value):
        raise InvalidArgument(field, f"must be {knob.describe()}, got {value:g}")
    return value


def _optional(message: Any, name: str, field: str, knob: Knob[N], *,
              default: N | None = None, high: float | None = None) -> N | None:
    """The field's value checked against `knob`, or `default` when it is not set."""
    if not message.HasField(name):
        return default
    value: N = getattr(message, name)
    return _checked(value, f"{field}.{name}", knob, high=high)


def _setting(message: Any, name: str, field: str, knob: Knob[N], *,
             default: N | None = None, high: float | None = None) -> N:
    """Like `_optional`, defaulting to `default` or the table's default."""
    value = _optional(message, name, field, knob, default=default, high=high)
    return knob.default if value is None else value


def _seeds(values: Sequence[int], field: str, *, required: bool) -> tuple[int, ...]:
    if not values:
        if required:
            raise InvalidArgument(field, "must be a non-empty list of seeds")
        return ()
    if len(values) > defaults.MAX_SEEDS:
        raise InvalidArgument(
            field, f"has {len(values)} seeds; at most {defaults.MAX_SEEDS} are allowed")
    seen: set[int] = set()
    for position, seed in enumerate(values):
        if seed < 0:
            raise InvalidArgument(f"{field}[{position}]", f"must be non-negative, got {seed}")
        if seed in seen:
            raise InvalidArgument(f"{field}[{position}]", f"repeats seed {seed}")
        seen.add(seed)
    return tuple(values)


def _task_app_url(value: str) -> str:
    field = f"{_ROOT}.task_app_url"
    url = _required(value, field)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(field, f"must be an http(s) URL with a host, got {url!r}")
    if "@" in parts.netloc:
        raise InvalidArgument(field, "must not carry credentials (user:password@) in the URL")
    try:
        port = parts.port
    except ValueError:
        raise InvalidArgument(field, f"has an invalid port: {url!r}") from None
    if port is not None and not _MIN_PORT <= port <= _MAX_PORT:
        raise InvalidArgument(field, f"has an invalid port: {url!r}")
    return url.rstrip("/")


def _provider(name: str, field: str, env: Mapping[str, str] | None) -> str:
    name = _required(name, field).lower()
    try:
        resolve_provider(name, env)
    except ProviderError as exc:
        raise InvalidArgument(field, str(exc)) from None
    return name


def _policy(msg: jobs_pb2.PolicyOptimization, env: Mapping[str, str] | None) -> PolicySpec:
    field = f"{_ROOT}.policy"
    if not msg.HasField("policy"):
        raise InvalidArgument(field, "is required (the policy model: model and provider)")
    policy = msg.policy
    return PolicySpec(
        model=_required(policy.model, f"{field}.model"),
        provider=_provider(policy.provider, f"{field}.provider", env),
        temperature=_optional(policy, "temperature", field, defaults.POLICY_TEMPERATURE),
        max_completion_tokens=_optional(policy, "max_completion_tokens", field,
                                        defaults.POLICY_MAX_COMPLETION_TOKENS),
    )


def _proposer(mipro: jobs_pb2.MiproConfig, env: Mapping[str, str] | None) -> ProposerSpec:
    field = f"{_ROOT}.mipro.proposer"
    if not mipro.HasField("proposer"):
        raise InvalidArgument(field, "is required (mode, model and provider)")
    proposer = mipro.proposer
    mode = _required(proposer.mode, f"{field}.mode")
    if mode not in defaults.PROPOSER_MODES:
        allowed = " or ".join(f'"{m}"' for m in defaults.PROPOSER_MODES)
        raise InvalidArgument(f"{field}.mode", f"must be {allowed}, got {mode!r}")
    return ProposerSpec(
        model=_required(proposer.model, f"{field}.model"),
        provider=_provider(proposer.provider, f"{field}.provider", env),
        mode=mode,
        temperature=_setting(proposer, "temperature", field, defaults.PROPOSER_TEMPERATURE),
        max_tokens=_setting(proposer, "max_tokens", field, defaults.PROPOSER_MAX_TOKENS),
    )


def _unknown_keys(data: Mapping[str, Any], message: _descriptor.Descriptor, path: str,
                  section: str) -> None:
    """Refuses the first key of `data` that neither `message` nor Synth's extras declare."""
    extras = _SYNTH_EXTRAS.get(section, frozenset())
    for key, value in data.items():
        field = message.fields_by_name.get(key) or next(
            (f for f in message.fields if f.json_name == key), None)
        if field is None:
            if key in extras:
                continue
            known = sorted({*message.fields_by_name, *extras})
            close = difflib.get_close_matches(key, known, n=1)
            hint = f'; did you mean "{close[0]}"?' if close else f"; known: {', '.join(known)}"
            raise InvalidArgument(f"{path}.{key}", f"is not a known field{hint}")
        nested = field.message_type
        if (nested is not None and isinstance(value, Mapping)
                and nested.full_name != "google.protobuf.Struct"):
            child = f"{section}.{field.name}".lstrip(".")
            _unknown_keys(value, nested, f"{path}.{field.name}", child)


def _from_synth(body: dict[str, Any]) -> jobs_pb2.PolicyOptimization:
    """Synth's `prompt_learning` section as our `PolicyOptimization`, its knobs mapped."""
    if set(body) - {"prompt_learning"}:
        extra = sorted(set(body) - {"prompt_learning"})[0]
        raise InvalidArgument(f"config_body.{extra}",
                              'is not a known field; config_body holds only "prompt_learning"')
    section = body.get("prompt_learning")
    if not isinstance(section, dict):
        raise InvalidArgument(_SYNTH_ROOT, "is required (an object)")
    schema = cast(_descriptor.Descriptor, jobs_pb2.PolicyOptimization.DESCRIPTOR)
    _unknown_keys(section, schema, _SYNTH_ROOT, "")
    config = dict(section)
    config.pop("auto_discover_patterns", None)
    if "localapi_url" in config:
        config.setdefault("task_app_url", config.pop("localapi_url"))
    if "container_url" in config:  # synth-ai 0.9's name for it
        config.setdefault("task_app_url", config.pop("container_url"))
    # What synth-ai 0.9's job builder adds: markers of the kind (only MIPRO offline is served)
    # and its rollout health-check mode (our preflight always runs).
    for marker, only in _SYNTH_09_MARKERS.items():
        if config.pop(marker, only) != only:
            raise InvalidArgument(f"{_SYNTH_ROOT}.{marker}", f"must be {only!r}")
    config.pop("rollout_health_check_mode", None)
    policy = config["policy"] = dict(config.get("policy") or {})
    for ignored in _SYNTH_EXTRAS["policy"]:
        policy.pop(ignored, None)
    mipro = config["mipro"] = dict(config.get("mipro") or {})
    mipro.setdefault("mode", "offline")
    online_pool = mipro.pop("online_pool", None)
    if not mipro.get("val_seeds") and online_pool is not None:
        mipro["val_seeds"] = online_pool
    batch_size = mipro.pop("batch_size", None)
    if batch_size is not None:
        mipro.setdefault("minibatch_size", batch_size)
    per_round = mipro.pop("num_evaluations_per_iteration", None)
    if per_round is not None and "num_candidates" not in mipro:
        rounds = mipro.get("num_iterations", defaults.NUM_ITERATIONS.default)
        if isinstance(per_round, int | float) and isinstance(rounds, int | float):
            mipro["num_candidates"] = int(per_round) * int(rounds)
    if "proposer" not in mipro:
        mipro["proposer"] = {"mode": defaults.PROPOSER_MODE,
                             "provider": policy.get("provider", ""),
                             "model": policy.get("model", "")}
    try:
        return ParseDict(config, jobs_pb2.PolicyOptimization())
    except ParseError as exc:
        raise InvalidArgument(_SYNTH_ROOT, str(exc)) from None


def _normalized(request: jobs_pb2.CreateJobRequest) -> tuple[jobs_pb2.CreateJobRequest, str]:
    """The request in our own form, and the root its fields are named under in errors."""
    if not request.HasField("config_body"):
        return request, _ROOT
    if request.HasField("policy_optimization"):
        raise InvalidArgument("config_body", 'cannot be combined with "policy_optimization"')
    algorithm = request.algorithm.strip() or "mipro"
    if algorithm != "mipro":
        raise InvalidArgument("algorithm", f'must be "mipro", got {algorithm!r}')
    if request.HasField("overrides") and request.overrides.fields:
        raise InvalidArgument("overrides", "is not supported: put the values in config_body")
    if request.HasField("auto_start") and not request.auto_start:
        raise InvalidArgument("auto_start", "must be true: jobs always start when created")
    optimization = _from_synth(MessageToDict(request.config_body))
    return (jobs_pb2.CreateJobRequest(policy_optimization=optimization,
                                      request_id=request.request_id), _SYNTH_ROOT)


def validate_create_request(
    request: jobs_pb2.CreateJobRequest, env: Mapping[str, str] | None = None
) -> JobSpec:
    """Validates `request` (ours or Synth's SDK form) and returns its spec; `env` resolves
    providers (default: os.environ)."""
    request, root = _normalized(request)
    try:
        return _validate_ours(request, env)
    except InvalidArgument as error:
        if root == _ROOT or not error.field.startswith(_ROOT):
            raise
        raise InvalidArgument(root + error.field.removeprefix(_ROOT),
                              error.description) from None


def _validate_ours(request: jobs_pb2.CreateJobRequest,
                   env: Mapping[str, str] | None) -> JobSpec:
    if not request.HasField("policy_optimization"):
        raise InvalidArgument(_ROOT, "is required")
    if len(request.request_id) > 128:
        raise InvalidArgument("request_id", "must be at most 128 characters")
    msg = request.policy_optimization
    algorithm = msg.algorithm.strip() or "mipro"
    if algorithm != "mipro":
        raise InvalidArgument(f"{_ROOT}.algorithm", f'must be "mipro", got {algorithm!r}')
    task_app_url = _task_app_url(msg.task_app_url)
    if not msg.HasField("mipro"):
        raise InvalidArgument(f"{_ROOT}.mipro", "is required")
    mipro = msg.mipro
    field = f"{_ROOT}.mipro"
    mode = _required(mipro.mode, f"{field}.mode")
    if mode != "offline":
        raise InvalidArgument(f"{field}.mode", f'must be "offline", got {mode!r}')
    bootstrap = _seeds(mipro.bootstrap_train_seeds, f"{field}.bootstrap_train_seeds", required=True)
    val = _seeds(mipro.val_seeds, f"{field}.val_seeds", required=True)
    test = _seeds(mipro.test_seeds, f"{field}.test_seeds", required=False)
    policy = _policy(msg, env)
    proposer = _proposer(mipro, env)

    num_candidates = _setting(mipro, "num_candidates", field, defaults.NUM_CANDIDATES)
    max_concurrent = _setting(mipro, "max_concurrent", field, defaults.MAX_CONCURRENT)
    seed = _setting(mipro, "seed", field, defaults.SEED)
    timeout = _setting(mipro, "rollout_timeout_seconds", field,
                       defaults.ROLLOUT_TIMEOUT_SECONDS)
    termination = mipro.termination_config
    limits = f"{field}.termination_config"
    max_rollouts = _optional(termination, "max_rollouts", limits, defaults.MAX_ROLLOUTS)
    max_time = _optional(termination, "max_time_seconds", limits, defaults.MAX_TIME_SECONDS)
    max_cost = _optional(termination, "max_cost_usd", limits, defaults.MAX_COST_USD)
    max_tokens = _optional(termination, "max_tokens", limits, defaults.MAX_TOKENS)
    iterations = _setting(mipro, "num_iterations", field, defaults.NUM_ITERATIONS,
                          default=min(defaults.NUM_ITERATIONS.default, num_candidates),
                          high=num_candidates)
    minibatch = _setting(mipro, "minibatch_size", field, defaults.MINIBATCH_SIZE,
                         default=min(defaults.MINIBATCH_SIZE.default, len(val)), high=len(val))
    env_name = mipro.env_name.strip()
    if len(env_name) > 200:
        raise InvalidArgument(f"{field}.env_name", "must be at most 200 characters")
    env_config = MessageToDict(mipro.env_config) if mipro.HasField("env_config") else {}
    key_name = env_key_name(msg.env_key_name, f"{_ROOT}.env_key_name") or "ENVIRONMENT_API_KEY"
    demo_set_size = _setting(mipro, "max_demo_set_size", field, defaults.MAX_DEMO_SET_SIZE)
    return JobSpec(
        task_app_url=task_app_url,
        policy=policy,
        proposer=proposer,
        bootstrap_train_seeds=bootstrap,
        val_seeds=val,
        test_seeds=test,
        algorithm=algorithm,
        mode=mode,
        num_candidates=num_candidates,
        max_concurrent=max_concurrent,
        seed=seed,
        env_name=env_name,
        env_config=env_config,
        rollout_timeout_seconds=timeout,
        num_iterations=iterations,
        minibatch_size=minibatch,
        max_rollouts=max_rollouts,
        max_time_seconds=max_time,
        max_cost_usd=max_cost,
        max_tokens=max_tokens,
        env_key_name=key_name,
        few_shot_score_threshold=_setting(mipro, "few_shot_score_threshold", field,
                                          defaults.FEW_SHOT_SCORE_THRESHOLD),
        max_demo_set_size=demo_set_size,
        max_demo_sets=_setting(mipro, "max_demo_sets", field, defaults.MAX_DEMO_SETS),
        min_bootstrap_demos=_setting(mipro, "min_bootstrap_demos", field,
                                     defaults.MIN_BOOTSTRAP_DEMOS),
        stages=_stages(mipro, field, demo_set_size),
    )


def _stages(mipro: jobs_pb2.MiproConfig, field: str,
            demo_set_size: int) -> tuple[StageSpec, ...]:
    """`modules[].stages[]` as the job's declared stages, each id unique in the job."""
    stages: list[StageSpec] = []
    seen: set[str] = set()
    for m, module in enumerate(mipro.modules):
        where = f"{field}.modules[{m}]"
        module_id = _required(module.module_id, f"{where}.module_id")
        if not module.stages:
            raise InvalidArgument(f"{where}.stages", "must list at least one stage")
        for n, stage in enumerate(module.stages):
            at = f"{where}.stages[{n}]"
            stage_id = _required(stage.stage_id, f"{at}.stage_id")
            if not STAGE_ID.match(stage_id):
                raise InvalidArgument(f"{at}.stage_id", "must be letters, digits, '_', '.' or "
                                      f"'-', at most 64, starting with a letter or digit; "
                                      f"got {stage_id!r}")
            if stage_id in seen:
                raise InvalidArgument(f"{at}.stage_id", f"repeats stage {stage_id!r}")
            seen.add(stage_id)
            stages.append(StageSpec(
                stage_id=stage_id, module_id=module_id,
                max_instruction_slots=_setting(stage, "max_instruction_slots", at,
                                               defaults.MAX_INSTRUCTION_SLOTS),
                max_demo_slots=_setting(stage, "max_demo_slots", at, defaults.MAX_DEMO_SLOTS,
                                        default=demo_set_size)))
    if len(stages) > defaults.MAX_STAGES:
        raise InvalidArgument(f"{field}.modules",
                              f"declares {len(stages)} stages; at most {defaults.MAX_STAGES}")
    return tuple(stages)


def env_key_name(value: str, field: str) -> str:
    """`value` stripped: letters, digits and underscores, at most 128 (empty passes)."""
    name = value.strip()
    if name and (len(name) > 128 or not name.replace("_", "").isalnum()):
        raise InvalidArgument(field, "must be letters, digits and underscores, at most 128")
    return name
