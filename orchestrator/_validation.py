"""Turns a `CreateJobRequest` into a `JobSpec`, or raises `InvalidArgument` naming the field.

The gateway's transcoder silently drops unknown JSON fields, so everything that matters is
checked here: required fields, allowed modes, seed lists, numeric ranges and providers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from google.protobuf.json_format import MessageToDict

from mipro._providers import ProviderError, resolve_provider
from mipro.v1 import jobs_pb2

from ._errors import InvalidArgument
from ._models import JobSpec, PolicySpec, ProposerSpec

_ROOT = "policy_optimization"
_MAX_SEEDS = 10_000
_MIN_PORT, _MAX_PORT = 1, 65535


def _required(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument(field, "is required")
    return value.strip()


def _in_range(
    value: float, field: str, *, low: float, high: float, low_inclusive: bool = True
) -> None:
    too_low = value < low if low_inclusive else value <= low
    if too_low or value > high:
        bound = "[" if low_inclusive else "("
        raise InvalidArgument(field, f"must be in {bound}{low:g}, {high:g}], got {value:g}")


def _seeds(values: Sequence[int], field: str, *, required: bool) -> tuple[int, ...]:
    if not values:
        if required:
            raise InvalidArgument(field, "must be a non-empty list of seeds")
        return ()
    if len(values) > _MAX_SEEDS:
        raise InvalidArgument(field, f"has {len(values)} seeds; at most {_MAX_SEEDS} are allowed")
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
    temperature = policy.temperature if policy.HasField("temperature") else None
    if temperature is not None:
        _in_range(temperature, f"{field}.temperature", low=0.0, high=2.0)
    max_tokens = (
        policy.max_completion_tokens if policy.HasField("max_completion_tokens") else None
    )
    if max_tokens is not None:
        _in_range(max_tokens, f"{field}.max_completion_tokens", low=1, high=131_072)
    return PolicySpec(
        model=_required(policy.model, f"{field}.model"),
        provider=_provider(policy.provider, f"{field}.provider", env),
        temperature=temperature,
        max_completion_tokens=max_tokens,
    )


def _proposer(mipro: jobs_pb2.MiproConfig, env: Mapping[str, str] | None) -> ProposerSpec:
    field = f"{_ROOT}.mipro.proposer"
    if not mipro.HasField("proposer"):
        raise InvalidArgument(field, "is required (mode, model and provider)")
    proposer = mipro.proposer
    mode = _required(proposer.mode, f"{field}.mode")
    if mode != "instruction_only":
        raise InvalidArgument(f"{field}.mode", f'must be "instruction_only", got {mode!r}')
    temperature = proposer.temperature if proposer.HasField("temperature") else 0.7
    _in_range(temperature, f"{field}.temperature", low=0.0, high=2.0)
    max_tokens = proposer.max_tokens if proposer.HasField("max_tokens") else 512
    _in_range(max_tokens, f"{field}.max_tokens", low=16, high=32_768)
    return ProposerSpec(
        model=_required(proposer.model, f"{field}.model"),
        provider=_provider(proposer.provider, f"{field}.provider", env),
        mode=mode,
        temperature=temperature,
        max_tokens=max_tokens,
    )


def validate_create_request(
    request: jobs_pb2.CreateJobRequest, env: Mapping[str, str] | None = None
) -> JobSpec:
    """Validates `request` and returns its spec; `env` resolves providers (default: os.environ)."""
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

    num_candidates = mipro.num_candidates if mipro.HasField("num_candidates") else 6
    _in_range(num_candidates, f"{field}.num_candidates", low=1, high=64)
    max_concurrent = mipro.max_concurrent if mipro.HasField("max_concurrent") else 8
    _in_range(max_concurrent, f"{field}.max_concurrent", low=1, high=256)
    seed = mipro.seed if mipro.HasField("seed") else 0
    _in_range(seed, f"{field}.seed", low=0, high=2**31 - 1)
    timeout = mipro.rollout_timeout_seconds if mipro.HasField("rollout_timeout_seconds") else 120.0
    _in_range(timeout, f"{field}.rollout_timeout_seconds", low=0, high=3600, low_inclusive=False)
    termination = mipro.termination_config
    max_rollouts = termination.max_rollouts if termination.HasField("max_rollouts") else None
    if max_rollouts is not None:
        _in_range(max_rollouts, f"{field}.termination_config.max_rollouts", low=1, high=10**7)
    max_time = termination.max_time_seconds if termination.HasField("max_time_seconds") else None
    if max_time is not None:
        _in_range(
            max_time, f"{field}.termination_config.max_time_seconds", low=0, high=7 * 86400,
            low_inclusive=False,
        )
    max_cost = termination.max_cost_usd if termination.HasField("max_cost_usd") else None
    if max_cost is not None:
        _in_range(max_cost, f"{field}.termination_config.max_cost_usd", low=0, high=1e6,
                  low_inclusive=False)
    max_tokens = termination.max_tokens if termination.HasField("max_tokens") else None
    if max_tokens is not None:
        _in_range(max_tokens, f"{field}.termination_config.max_tokens", low=1, high=2**31 - 1)
    iterations = mipro.num_iterations if mipro.HasField("num_iterations") else min(
        2, num_candidates)
    _in_range(iterations, f"{field}.num_iterations", low=1, high=min(16, num_candidates))
    minibatch = mipro.minibatch_size if mipro.HasField("minibatch_size") else min(10, len(val))
    _in_range(minibatch, f"{field}.minibatch_size", low=1, high=len(val))
    env_name = mipro.env_name.strip()
    if len(env_name) > 200:
        raise InvalidArgument(f"{field}.env_name", "must be at most 200 characters")
    env_config = MessageToDict(mipro.env_config) if mipro.HasField("env_config") else {}
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
    )
