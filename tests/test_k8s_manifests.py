"""deploy/k8s as an operator would review it: rendered by kubectl, every overlay.

`make check` validates the same renderings against the Kubernetes schemas
(deploy/check.py); these tests check what a schema cannot: every pod is locked down and
bounded, secrets are only referenced, the network is closed but for the hops spelled out,
Services select pods that exist, the gateways' configs are the repository's own, and each
overlay has the shape its README section promises.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import K8S_GATEWAY_DIR, K8S_INFERENCE_GATEWAY_DIR, RENDERINGS
from mipro._settings import Settings, variable_name

from .conftest import REPO_ROOT

OVERLAYS = ("dev", "prod")
ROLES = ("api", "worker", "interceptor")
#: The pods that serve the interceptor role, in each overlay.
_INTERCEPTOR_PODS = {"dev": {"mipro-orchestrator"}, "prod": {"mipro-orchestrator-interceptor"}}
#: Variables that are not fields of `Settings`: the healthcheck's and the providers' own
#: (`MIPRO_PROVIDER_<NAME>_BASE_URL` / `_API_KEY`, see mipro/_providers.py).
_NOT_SETTINGS = re.compile(r"^MIPRO_(HEALTHCHECK|PROVIDER_[A-Z0-9_]+_(BASE_URL|API_KEY))$")
_SECRET_NAMES = re.compile(r"(KEY|TOKEN|PEPPER|PASSWORD|DATABASE_URL)")


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: `make check` installs it (Debian's "
                    "kubernetes-client)")
    done = subprocess.run([kubectl, "kustomize", str(REPO_ROOT / "deploy/k8s/overlays" /
                                                     overlay)],
                          capture_output=True, text=True, timeout=120, check=True)
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def of_kind(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in rendered(overlay) if o["kind"] == kind}


def pod_templates(overlay: str) -> dict[str, dict[str, Any]]:
    return {name: d["spec"]["template"] for name, d in of_kind(overlay, "Deployment").items()}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_unprivileged_read_only_and_bounded(overlay: str) -> None:
    for name, template in pod_templates(overlay).items():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, where
            assert "readinessProbe" in container and "livenessProbe" in container, where
            # A read-only root: whatever writes has a volume under it.
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_the_protocol_each_service_speaks(overlay: str) -> None:
    for name, template in pod_templates(overlay).items():
        container = template["spec"]["containers"][0]
        ports = {p["containerPort"] for p in container["ports"]}
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in (container["readinessProbe"], container["livenessProbe"]):
            (kind,) = {"grpc", "httpGet"} & set(probe)
            port = probe[kind]["port"]
            assert named.get(port, port) in ports, f"{name}: probe on a port it does not serve"
            if "interceptor" in name or name in ("mipro-gateway", "mipro-inference-gateway",
                                                 "mipro-model", "mipro-task-app"):
                assert kind == "httpGet", name
            else:  # gRPC servers: the standard health service, probed natively
                assert kind == "grpc", name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_inlined(overlay: str) -> None:
    assert of_kind(overlay, "Secret") == {}
    for name, config in of_kind(overlay, "ConfigMap").items():
        for key in config.get("data", {}):
            assert not _SECRET_NAMES.search(key), f"{name}: {key} belongs in a Secret"
    for name, template in pod_templates(overlay).items():
        for container in template["spec"]["containers"]:
            for var, entry in env_of(container).items():
                if _SECRET_NAMES.search(var) and var != "MIPRO_HEALTHCHECK":
                    assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name}: {var}"
                    assert "value" not in entry, f"{name}: {var}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_is_a_setting_the_services_read(overlay: str) -> None:
    known = {variable_name(field) for field in Settings.model_fields}
    names = [key for c in of_kind(overlay, "ConfigMap").values()
             if c["metadata"]["name"].startswith("mipro-config") for key in c["data"]]
    for template in pod_templates(overlay).values():
        for container in template["spec"]["containers"]:
            names += [v for v in env_of(container) if v.startswith("MIPRO_")]
    unknown = sorted({n for n in names if n not in known and not _NOT_SETTINGS.match(n)})
    assert unknown == [], "not settings (a typo, or a setting that was renamed)"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_selects_pods_that_serve_its_port(overlay: str) -> None:
    templates = pod_templates(overlay)
    for name, service in of_kind(overlay, "Service").items():
        pods = [t for t in templates.values()
                if _selects(service["spec"]["selector"], t["metadata"]["labels"])]
        assert pods, f"Service {name} selects no pod"
        for pod in pods:
            container = pod["spec"]["containers"][0]
            named = {p["name"]: p["containerPort"] for p in container["ports"]}
            for port in service["spec"]["ports"]:
                target = port["targetPort"]
                assert named.get(target, target) in named.values(), f"{name} -> {target}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_network_is_closed_but_for_the_gateways(overlay: str) -> None:
    policies = of_kind(overlay, "NetworkPolicy")
    deny = policies["mipro-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    open_ingress = {name for name, p in policies.items()
                    for rule in p["spec"].get("ingress", []) if "from" not in rule}
    assert open_ingress == {"mipro-gateway", "mipro-inference-gateway"}
    for name, port in (("gateway", 8080), ("inference-gateway", 8082)):
        gateway = policies[f"mipro-{name}"]["spec"]
        assert gateway["podSelector"]["matchLabels"][f"mipro.dev/{name}"] == "true"
        assert [p["port"] for p in gateway["ingress"][0]["ports"]] == [port]
    # Outbound to the internet never includes the cluster's private ranges.
    for name, policy in policies.items():
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0":
                    assert "10.0.0.0/8" in peer["ipBlock"]["except"], name
                    assert "169.254.0.0/16" in peer["ipBlock"]["except"], name


def _envoy_config_map(overlay: str, name: str, rendering: Path) -> dict[str, Any]:
    """The ConfigMap generated as `name`, checked to hold `rendering` as it is rendered now."""
    (config,) = [c for n, c in of_kind(overlay, "ConfigMap").items()
                 if n.startswith(f"{name}-")]
    (committed,) = [r for r in RENDERINGS if r.path == rendering]
    assert config["data"]["envoy.yaml"] == committed.render()
    return config


def _upstream_services(overlay: str, envoy: dict[str, Any]) -> set[str]:
    """The Services `envoy` sends to, each checked to serve the port it is sent to."""
    services = of_kind(overlay, "Service")
    names: set[str] = set()
    for cluster in envoy["static_resources"]["clusters"]:
        for endpoint in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]:
            address = endpoint["endpoint"]["address"]["socket_address"]
            if address["address"] == "127.0.0.1":  # the stats listener's: Envoy's own admin
                continue
            service = services[address["address"]]
            assert address["port_value"] in {p["port"] for p in service["spec"]["ports"]}
            names.add(address["address"])
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_urls_start_at_the_inference_gateway(overlay: str) -> None:
    """Every orchestrator pod builds task apps' inference URLs from the settings ConfigMap,
    whose public base URL is the inference gateway's Service."""
    config = of_kind(overlay, "ConfigMap")["mipro-config"]["data"]
    url = urlsplit(config["MIPRO_PUBLIC_BASE_URL"])
    assert (url.scheme, url.path) == ("http", "")
    service = of_kind(overlay, "Service")[str(url.hostname)]["spec"]
    assert url.port in {p["port"] for p in service["ports"]}
    templates = pod_templates(overlay)
    assert {n for n, t in templates.items()
            if _selects(service["selector"], t["metadata"]["labels"])} == {
        "mipro-inference-gateway"}
    for name, template in templates.items():
        if template["metadata"]["labels"].get("app.kubernetes.io/component") != "orchestrator":
            continue
        (container,) = template["spec"]["containers"]
        assert {"configMapRef": {"name": "mipro-config"}} in container["envFrom"], name
        assert "MIPRO_PUBLIC_BASE_URL" not in env_of(container), name


def _admits(rule: dict[str, Any], peers: str, labels: dict[str, str], port: int) -> bool:
    """Whether one ingress (`peers="from"`) or egress (`"to"`) rule admits `port` of a pod of
    the namespace with `labels`; peers naming namespaces or addresses never match one."""
    ports = rule.get("ports")
    return (ports is None or any(p["port"] == port for p in ports)) and (
        peers not in rule or any(set(peer) == {"podSelector"} and _selects(
            peer["podSelector"].get("matchLabels", {}), labels) for peer in rule[peers]))


def _policies_of(overlay: str, pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The specs of the NetworkPolicies that select pod template `pod`."""
    return [p["spec"] for p in of_kind(overlay, "NetworkPolicy").values()
            if _selects(p["spec"]["podSelector"].get("matchLabels", {}),
                        pod["metadata"]["labels"])]


def _allowed(overlay: str, pod: dict[str, Any], kind: str, peer: dict[str, str],
             port: int) -> bool:
    """Whether the NetworkPolicies of pod template `pod` allow its `kind` ("ingress" or
    "egress") traffic on `port` with a pod labelled `peer`: no policy of that type selects
    it, or a rule of one admits it."""
    peers = "from" if kind == "ingress" else "to"
    rules = [rule for spec in _policies_of(overlay, pod)
             if kind.capitalize() in spec["policyTypes"] for rule in spec.get(kind, [None])]
    return not rules or any(rule is not None and _admits(rule, peers, peer, port)
                            for rule in rules)


def _reaches(overlay: str, source: dict[str, Any], target: dict[str, Any], port: int) -> bool:
    """Whether pod template `source` may open `port` on `target`: an egress rule of
    `source`'s policies and an ingress rule of `target`'s must both admit it."""
    return (_allowed(overlay, source, "egress", target["metadata"]["labels"], port)
            and _allowed(overlay, target, "ingress", source["metadata"]["labels"], port))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_inference_gateway_takes_task_apps_and_reaches_only_the_interceptor(
        overlay: str) -> None:
    templates = pod_templates(overlay)
    inference = templates["mipro-inference-gateway"]
    # Of every pod of the stack, only the interceptor's port: its own egress rules let it
    # out to nothing else, and the interceptor's ingress lets it in.
    served = {(name, port) for name, pod in templates.items()
              for port in {p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}}
    interceptor = {(name, 8081) for name in _INTERCEPTOR_PODS[overlay]}
    assert {(name, port) for name, port in served if _allowed(
        overlay, inference, "egress", templates[name]["metadata"]["labels"], port)} == interceptor
    assert {(name, port) for name, port in served
            if _reaches(overlay, inference, templates[name], port)} == interceptor
    # Nothing outside the namespace but DNS: no address block, no rule open to any peer.
    for rule in (r for spec in _policies_of(overlay, inference) for r in spec.get("egress", [])):
        assert "to" in rule and all("ipBlock" not in peer for peer in rule["to"]), rule
    # Task apps are the users' servers, anywhere: port 8082 is open to any source (one no
    # selector names).
    assert _allowed(overlay, inference, "ingress", {}, 8082)
    assert not _allowed(overlay, inference, "ingress", {}, 8080)
    # The gateway's /v1/ route still reaches the interceptor too.
    for name in _INTERCEPTOR_PODS[overlay]:
        assert _reaches(overlay, templates["mipro-gateway"], templates[name], 8081)
    if overlay == "dev":  # the example task app calls its inference URL, and nothing else
        task_app = templates["mipro-task-app"]
        assert _reaches(overlay, task_app, inference, 8082)
        assert not _reaches(overlay, task_app, templates["mipro-gateway"], 8080)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_runs_the_repositorys_envoy_config(overlay: str) -> None:
    config = _envoy_config_map(overlay, "mipro-gateway", K8S_GATEWAY_DIR / "envoy.yaml")
    descriptor = base64.b64decode(config["binaryData"]["mipro_v1.pb"])
    assert descriptor == (REPO_ROOT / "gateway" / "mipro_v1.pb").read_bytes()
    envoy = yaml.safe_load(config["data"]["envoy.yaml"])
    assert _upstream_services(overlay, envoy) == {"mipro-api", "mipro-interceptor"}
    gateway = pod_templates(overlay)["mipro-gateway"]["spec"]
    command = gateway["containers"][0]["command"]
    assert "--disable-hot-restart" in command
    assert {v["configMap"]["name"] for v in gateway["volumes"] if "configMap" in v} == {
        config["metadata"]["name"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_inference_gateway_runs_the_repositorys_config_to_the_interceptor(
        overlay: str) -> None:
    config = _envoy_config_map(overlay, "mipro-inference-gateway",
                               K8S_INFERENCE_GATEWAY_DIR / "envoy.yaml")
    assert set(config["data"]) == {"envoy.yaml"} and "binaryData" not in config
    envoy = yaml.safe_load(config["data"]["envoy.yaml"])
    # Its one upstream is the interceptor's Service, which selects wherever the overlay runs
    # the interceptor role (the gateway's /v1/ route goes there too).
    assert _upstream_services(overlay, envoy) == {"mipro-interceptor"}
    selector = of_kind(overlay, "Service")["mipro-interceptor"]["spec"]["selector"]
    templates = pod_templates(overlay)
    interceptors = {n for n, t in templates.items() if _selects(selector, t["metadata"]["labels"])}
    assert interceptors == _INTERCEPTOR_PODS[overlay]
    for name in interceptors:
        roles = env_of(templates[name]["spec"]["containers"][0])["MIPRO_ROLES"]["value"]
        assert "interceptor" in roles.split(","), name
    # Envoy reads the mounted rendering and listens where the pod and the Service say.
    spec = templates["mipro-inference-gateway"]["spec"]
    (container,) = spec["containers"]
    command = container["command"]
    assert "--disable-hot-restart" in command
    assert command[command.index("-c") + 1] == "/etc/mipro-inference-gateway/envoy.yaml"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = [v for v in spec["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    assert mounts[volume["name"]] == "/etc/mipro-inference-gateway"
    listener = envoy["static_resources"]["listeners"][0]["address"]["socket_address"]
    service = of_kind(overlay, "Service")["mipro-inference-gateway"]["spec"]
    assert {p["containerPort"] for p in container["ports"]} == {listener["port_value"]} == {
        p["port"] for p in service["ports"]} == {Settings().inference_gateway_port}


def test_dev_is_one_of_each_on_sqlite_with_the_local_model_and_the_example() -> None:
    deployments = of_kind("dev", "Deployment")
    assert {n: d["spec"]["replicas"] for n, d in deployments.items()} == {
        "mipro-gateway": 1, "mipro-inference-gateway": 1, "mipro-proposer": 1,
        "mipro-orchestrator": 1, "mipro-model": 1, "mipro-task-app": 1}
    orchestrator = deployments["mipro-orchestrator"]
    assert orchestrator["spec"]["strategy"] == {"type": "Recreate"}
    container = orchestrator["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["MIPRO_ROLES"]["value"] == "api,worker,interceptor"
    assert "MIPRO_DATABASE_URL" not in env_of(container)  # the embedded SQLite default
    volumes = {v["name"]: v for v in orchestrator["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName":
                                                                         "mipro-data"}}
    assert "mipro-data" in of_kind("dev", "PersistentVolumeClaim")
    config = of_kind("dev", "ConfigMap")["mipro-config"]["data"]
    assert config["MIPRO_PROVIDER_LOCAL_BASE_URL"] == "http://mipro-model:8091/v1"
    assert config["MIPRO_TASK_APP_ALLOW"] == "mipro-task-app"


def test_prod_runs_each_role_replicated_on_postgres_and_temporal() -> None:
    deployments = of_kind("prod", "Deployment")
    for role in ROLES:
        deployment = deployments[f"mipro-orchestrator-{role}"]
        assert deployment["spec"]["replicas"] >= 2, role
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = env_of(container)
        assert env["MIPRO_ROLES"]["value"] == role
        assert env["MIPRO_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "mipro-database"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert {f"mipro.dev/{r}" for r in ROLES} & set(labels) == {f"mipro.dev/{role}"}
    pdbs = of_kind("prod", "PodDisruptionBudget")
    for gateway in ("mipro-gateway", "mipro-inference-gateway"):
        spec = deployments[gateway]["spec"]
        assert spec["replicas"] == 2, gateway
        assert pdbs[gateway]["spec"]["minAvailable"] == 1, gateway
        assert _selects(pdbs[gateway]["spec"]["selector"]["matchLabels"],
                        spec["template"]["metadata"]["labels"]), gateway
        (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname", gateway
        assert _selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"],
                        spec["template"]["metadata"]["labels"]), gateway
    hpa = of_kind("prod", "HorizontalPodAutoscaler")["mipro-proposer"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "mipro-proposer" and hpa["minReplicas"] >= 2
    config = of_kind("prod", "ConfigMap")["mipro-config"]["data"]
    assert config["MIPRO_TEMPORAL_ADDRESS"]
    assert of_kind("prod", "PersistentVolumeClaim") == {}


def test_the_manifests_run_the_image_the_dockerfile_builds() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile
    for overlay in OVERLAYS:
        for name, template in pod_templates(overlay).items():
            spec = template["spec"]
            assert spec["securityContext"]["runAsUser"] == 10001, name
            assert {c["image"] for c in spec["containers"]} == {"mipro-backend:dev"}, name


def test_kubectl_renders_what_is_committed() -> None:
    """The overlays' files are all used: nothing under deploy/k8s is dead."""
    listed: set[Path] = set()
    for kustomization in (REPO_ROOT / "deploy" / "k8s").rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for key in ("resources", "patchesStrategicMerge"):
            listed |= {(kustomization.parent / f).resolve() for f in spec.get(key, [])}
        for generator in spec.get("configMapGenerator", []):
            listed |= {(kustomization.parent / f).resolve() for f in generator["files"]}
    on_disk = {p.resolve() for p in (REPO_ROOT / "deploy" / "k8s").rglob("*")
               if p.is_file() and p.name != "kustomization.yaml"}
    assert on_disk - listed == set()
