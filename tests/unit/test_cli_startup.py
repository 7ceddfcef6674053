"""The CLI starts fast: `--help` and `validate` load neither the pipeline machinery nor gRPC,
the Kubernetes client, paramiko or Ansible (measured by what a fresh interpreter imports, which
is deterministic, rather than by wall time, which is not)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("kubernetes", "grpclib", "grpc", "google.protobuf", "paramiko", "ansible_runner",
         "cryptography", "jinja2", "cloudctl.pipeline.runner", "cloudctl.pipeline.stages",
         "cloudctl.pipeline.context", "cloudctl.kube", "cloudctl.talos", "cloudctl.render",
         "cloudctl.emulate", "cloudctl.boot")


def _imported(*argv: str) -> set[str]:
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "cloudctl.cli", *argv],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def _heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_help_imports_nothing_heavy() -> None:
    mods = _imported("--help")
    assert _heavy(mods) == []
    assert not any(m.startswith("pydantic") for m in mods)  # not even the inventory model


def test_every_verb_help_imports_nothing_heavy() -> None:
    for verb in ("bootstrap", "install-ssh", "upgrade", "render"):
        assert _heavy(_imported(verb, "--help")) == [], verb


def test_validate_imports_no_pipeline_grpc_or_kubernetes() -> None:
    mods = _imported("validate", "-i", str(ROOT / "inventory.example.yaml"))
    assert _heavy(mods) == []
    assert "cloudctl.inventory.models" in mods  # it did validate
