"""docker-compose.yml describes the same stack the CLI runs (no Docker engine runs here).

These checks catch drift: a service command that no longer exists, a port that the gateway
config or the orchestrator no longer uses, an image that misses a package.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import yaml

from mipro._settings import Settings

from .conftest import REPO_ROOT


def _compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _envoy_compose(name: str = "envoy.compose.yaml") -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "gateway" / name).read_text())


def _upstreams(config: dict[str, Any]) -> set[tuple[str, int]]:
    return {
        (a["socket_address"]["address"], a["socket_address"]["port_value"])
        for c in config["static_resources"]["clusters"]
        for e in c["load_assignment"]["endpoints"] for lb in e["lb_endpoints"]
        for a in [lb["endpoint"]["address"]]
    }


def _listener_port(config: dict[str, Any]) -> int:
    port: int = config["static_resources"]["listeners"][0]["address"]["socket_address"][
        "port_value"]
    return port


def test_compose_has_the_whole_stack() -> None:
    services = _compose()["services"]
    assert set(services) == {"model", "task-app", "proposer", "orchestrator", "gateway",
                             "inference-gateway"}
    for name, service in services.items():
        assert service["build"] == "." and isinstance(service["command"], list), name


def test_service_commands_are_the_ones_the_cli_runs() -> None:
    services = _compose()["services"]
    for name, module in (("orchestrator", "orchestrator"), ("proposer", "proposer_service"),
                         ("model", "mipro.local_model")):
        command = services[name]["command"]
        assert command[:3] == ["python", "-m", module], name
        assert importlib.util.find_spec(module) is not None, module
    task_app = services["task-app"]["command"]
    assert task_app[:3] == ["python", "-m", "mipro.examples.support_intents.task_app"]
    assert importlib.util.find_spec(task_app[2]) is not None
    gateway = services["gateway"]["command"]
    assert gateway[0] == "envoy" and "--disable-hot-restart" in gateway
    # The config is the repository's rendering, mounted read-only where its descriptor path
    # points.
    assert gateway[gateway.index("-c") + 1] == "/etc/mipro-gateway/envoy.compose.yaml"
    assert services["gateway"]["volumes"] == ["./gateway:/etc/mipro-gateway:ro"]
    transcoder = _envoy_compose()["static_resources"]["listeners"][0]["filter_chains"][0]
    assert "/etc/mipro-gateway/mipro_v1.pb" in json.dumps(transcoder)
    inference = services["inference-gateway"]["command"]
    assert inference[0] == "envoy" and "--disable-hot-restart" in inference
    assert inference[inference.index("-c") + 1] == (
        "/etc/mipro-gateway/envoy.inference.compose.yaml")
    assert services["inference-gateway"]["volumes"] == services["gateway"]["volumes"]


#: The values of compose's required variables, as the README's command line sets them.
_REQUIRED = {"MIPRO_API_KEYS": "mk_choose_one", "MIPRO_SECRETS_KEY": "A" * 43 + "=",
             "MIPRO_PROPOSER_TOKEN": "compose-proposer-token"}


def _interpolated(environment: dict[str, str]) -> dict[str, str]:
    """`environment` as `docker compose` fills it: `${VAR:?msg}` from `_REQUIRED`,
    `${VAR:-default}` with its default."""
    def fill(match: re.Match[str]) -> str:
        name, kind, default = match.groups()
        return _REQUIRED[name] if kind == "?" else default
    return {k: re.sub(r"\$\{(\w+):([?-])([^}]*)\}", fill, str(v))
            for k, v in environment.items()}


def test_ports_agree_between_compose_settings_and_gateway() -> None:
    services = _compose()["services"]
    orchestrator = Settings.from_env(_interpolated(services["orchestrator"]["environment"]))
    proposer = Settings.from_env(_interpolated(services["proposer"]["environment"]))
    assert orchestrator.proposer_address == f"proposer:{proposer.proposer_port}"
    upstreams = _upstreams(_envoy_compose())
    assert ("orchestrator", orchestrator.orchestrator_port) in upstreams
    assert ("orchestrator", orchestrator.interceptor_port) in upstreams
    port = _listener_port(_envoy_compose())
    assert services["gateway"]["ports"] == [f"127.0.0.1:{port}:{port}"] == ["127.0.0.1:8080:8080"]
    # The task apps' model calls go through the inference gateway, to the interceptor only.
    inference = _envoy_compose("envoy.inference.compose.yaml")
    assert _upstreams(inference) == {("orchestrator", orchestrator.interceptor_port)}
    port = _listener_port(inference)
    assert services["inference-gateway"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert orchestrator.public_base_url == f"http://inference-gateway:{port}"


def _stages() -> dict[str, str]:
    """The Dockerfile's stages by name: the text from each `FROM ... AS name` to the next."""
    parts = re.split(r"^FROM ", (REPO_ROOT / "Dockerfile").read_text(), flags=re.M)[1:]
    return {part.split("\n", 1)[0].split(" AS ")[1].strip(): part for part in parts}


def test_dockerfile_builds_every_package_and_runs_slim_and_unprivileged() -> None:
    stages = _stages()
    assert list(stages) == ["build", "runtime"]
    build, runtime = stages["build"], stages["runtime"]
    for folder in ("mipro", "orchestrator", "proposer_service", "gateway", "examples"):
        assert f"COPY {folder} ./{folder}" in build
        assert Path(REPO_ROOT / folder).is_dir()
    # The model service is the real local model: the extra `local`, compiled in the build
    # stage only; the runtime installs the built wheels from it, no compiler, no index.
    # The Temporal SDK too: worker and api replicas of deploy/k8s/overlays/prod need it.
    assert 'pip wheel --wheel-dir /wheels ".[local,temporal]"' in build
    assert "build-essential" in build
    assert "build-essential" not in runtime and "COPY " not in runtime
    assert '--no-index --find-links /wheels "mipro-backend[local,temporal]"' in runtime
    assert re.search(r"^USER 10001", runtime, flags=re.M)
    assert 'HEALTHCHECK' in runtime and '"python", "-m", "mipro.healthcheck"' in runtime


def test_every_compose_service_has_a_healthcheck_target_it_serves() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        target = service["environment"]["MIPRO_HEALTHCHECK"]
        assert target.startswith(("grpc://127.0.0.1:", "http://127.0.0.1:")), name
    ports = {name: int(s["environment"]["MIPRO_HEALTHCHECK"].split(":")[2].split("/")[0])
             for name, s in services.items()}
    assert ports["orchestrator"] == Settings().orchestrator_port
    assert ports["proposer"] == int(services["proposer"]["environment"]["MIPRO_PROPOSER_PORT"])
    assert ports["gateway"] == 8080
    assert ports["inference-gateway"] == 8082
    # The services start in order of health, not of creation.
    for gateway in ("gateway", "inference-gateway"):
        assert services[gateway]["depends_on"] == {
            "orchestrator": {"condition": "service_healthy"}}, gateway


def test_the_model_service_is_the_local_provider_of_the_stack() -> None:
    services = _compose()["services"]
    command = services["model"]["command"]
    port = command[command.index("--port") + 1]
    for name in ("proposer", "orchestrator"):
        environment = services[name]["environment"]
        assert environment["MIPRO_PROVIDER_LOCAL_BASE_URL"] == f"http://model:{port}/v1", name
        assert "model" in services[name]["depends_on"], name
    job = json.loads((REPO_ROOT / "examples" / "support_intents" /
                      "job_local_model.json").read_text())["policy_optimization"]
    assert job["policy"]["provider"] == job["mipro"]["proposer"]["provider"] == "local"


def test_internal_services_bind_inside_their_containers_and_share_the_token() -> None:
    services = _compose()["services"]
    raw = {name: services[name]["environment"] for name in ("orchestrator", "proposer")}
    orchestrator = Settings.from_env(_interpolated(raw["orchestrator"]))
    proposer = Settings.from_env(_interpolated(raw["proposer"]))
    # Reachable from the other containers, yet published nowhere: only the gateways have
    # ports.
    assert (orchestrator.orchestrator_host, orchestrator.interceptor_host) == ("0.0.0.0",) * 2
    assert proposer.proposer_host == "0.0.0.0"
    assert [name for name, s in services.items() if "ports" in s] == ["gateway",
                                                                      "inference-gateway"]
    assert orchestrator.proposer_token == proposer.proposer_token == "compose-proposer-token"
    assert raw["orchestrator"]["MIPRO_PROPOSER_TOKEN"].startswith("${MIPRO_PROPOSER_TOKEN:?")
    assert raw["proposer"]["MIPRO_PROPOSER_TOKEN"].startswith("${MIPRO_PROPOSER_TOKEN:?")
