"""Regenerate the committed protobuf/grpclib modules from the ``.proto`` files beside this file.

Usage: ``python -m cloudctl.talos.proto.generate`` (write) or ``... --check`` (exit 1 when the
committed modules differ from what the installed grpcio-tools would generate). Needs the test
extra (grpcio-tools) and grpclib's ``protoc-gen-grpclib_python`` plugin on PATH.

The ``.proto`` files import each other by their path inside the repository
(``cloudctl/talos/proto/common.proto``) so the generated modules import each other as
``cloudctl.talos.proto.<name>_pb2``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
ROOT = PROTO_DIR.parents[2]
PACKAGE_PATH = PROTO_DIR.relative_to(ROOT)
PROTOS = ("common.proto", "machine.proto", "storage.proto", "cosi_resource.proto")


def generated_names() -> list[str]:
    """File names of the generated modules (relative to this directory)."""
    out = []
    for proto in PROTOS:
        stem = proto.removesuffix(".proto")
        out += [f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_grpc.py"]
    return out


def generate(out_root: Path) -> None:
    """Run protoc for every proto; modules land in ``out_root/cloudctl/talos/proto/``."""
    import importlib.resources

    from grpc_tools import protoc

    if shutil.which("protoc-gen-grpclib_python") is None:
        raise SystemExit("protoc-gen-grpclib_python not on PATH (it comes with grpclib)")
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    (out_root / PACKAGE_PATH).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpclib_python_out={out_root}",
        *(str(PACKAGE_PATH / p) for p in PROTOS),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")


def stale_files() -> list[str]:
    """Names of committed modules that differ from freshly generated ones (empty: current)."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = []
        for name in generated_names():
            fresh = (Path(tmp) / PACKAGE_PATH / name).read_bytes()
            committed = PROTO_DIR / name
            if not committed.exists() or committed.read_bytes() != fresh:
                stale.append(name)
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: {PACKAGE_PATH / name}")
        return 1 if stale else 0
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
