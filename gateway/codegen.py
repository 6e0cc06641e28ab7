"""Regenerates the Python stubs and the gateway's descriptor set from `protos/`.

Run `python -m gateway.codegen` after editing a proto; `--check` exits 1 when the committed
files differ from what the protos generate (CI runs it). Stubs for `google/*` are never
generated: those modules come from `googleapis-common-protos` and `protobuf`.

`--image PATH` writes every proto, with its imports and comments, as one descriptor set for
`buf lint` (`make check`): buf cannot fetch `google/api/annotations.proto` from its registry
here, so it lints what protoc compiled, with the same include paths as the stubs.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
STUB_DIR = REPO_ROOT / "mipro" / "v1"
DESCRIPTOR_PATH = REPO_ROOT / "gateway" / "mipro_v1.pb"
#: The protos the gateway transcodes; the proposer's internal service is left out on purpose.
PUBLIC_PROTOS = ("mipro/v1/jobs.proto",)
#: Error detail types the orchestrator attaches; the transcoder must know them to print them.
ERROR_DETAIL_PROTOS = ("google/rpc/error_details.proto",)


def _include_dirs() -> list[str]:
    import google.api  # shipped by googleapis-common-protos
    import grpc_tools

    googleapis_root = Path(google.api.__path__[0]).parent.parent
    well_known = Path(str(resources.files(grpc_tools) / "_proto"))
    return [str(PROTO_ROOT), str(googleapis_root), str(well_known)]


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc

    argv = ["protoc", *(f"-I{d}" for d in _include_dirs()), *args]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed: {' '.join(argv)}")


def _all_protos() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def generate(out_root: Path) -> tuple[Path, Path]:
    """Writes stubs under `out_root/mipro/v1` and the descriptor; returns both paths."""
    stub_out = out_root / "stubs"
    stub_out.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            f"--python_out={stub_out}",
            f"--pyi_out={stub_out}",
            f"--grpc_python_out={stub_out}",
            *_all_protos(),
        ]
    )
    descriptor = out_root / DESCRIPTOR_PATH.name
    _protoc(
        [
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={descriptor}",
            *PUBLIC_PROTOS,
            *ERROR_DETAIL_PROTOS,
        ]
    )
    return stub_out / "mipro" / "v1", descriptor


def write_image(path: Path) -> None:
    """Writes every proto under `protos/` as one `FileDescriptorSet` with imports and source
    info (comments), the input `buf lint` reads; the imported `google/*` files are in it too,
    so lint it with `--path mipro`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _protoc(["--include_imports", "--include_source_info", f"--descriptor_set_out={path}",
             *_all_protos()])


def _stale_files(generated_stubs: Path, descriptor: Path) -> list[str]:
    stale = []
    for produced in sorted(generated_stubs.iterdir()):
        committed = STUB_DIR / produced.name
        if not committed.exists() or not filecmp.cmp(produced, committed, shallow=False):
            stale.append(str(committed.relative_to(REPO_ROOT)))
    if not DESCRIPTOR_PATH.exists() or not filecmp.cmp(descriptor, DESCRIPTOR_PATH, shallow=False):
        stale.append(str(DESCRIPTOR_PATH.relative_to(REPO_ROOT)))
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated files are stale")
    parser.add_argument("--image", type=Path, metavar="PATH",
                        help="only write the descriptor set `buf lint` reads to PATH")
    args = parser.parse_args(argv)
    if args.image is not None:
        write_image(args.image)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stubs, descriptor = generate(Path(tmp))
        if args.check:
            stale = _stale_files(stubs, descriptor)
            if stale:
                print("stale generated files (run `make protos`): " + ", ".join(stale))
                return 1
            print("generated files are up to date")
            return 0
        STUB_DIR.mkdir(parents=True, exist_ok=True)
        for produced in stubs.iterdir():
            shutil.copyfile(produced, STUB_DIR / produced.name)
        shutil.copyfile(descriptor, DESCRIPTOR_PATH)
    (STUB_DIR / "__init__.py").touch()
    print(f"wrote {STUB_DIR.relative_to(REPO_ROOT)}/ and {DESCRIPTOR_PATH.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
