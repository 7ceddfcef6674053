"""Golden files: the full render of inventory.example.yaml with a fixed secrets bundle.

A changed golden is reviewed, never blindly regenerated. To regenerate after an intended change:
``CLOUDCTL_UPDATE_GOLDEN=1 python3 -m pytest tests/golden`` and review ``git diff tests/golden``.
Large vendored manifests are recorded by SHA-256 in ``rack1/SHA256SUMS`` instead of copied.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from cloudctl.inventory import load_inventory
from cloudctl.render import render_all
from cloudctl.secrets import SecretsStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOLDEN = HERE / "rack1"
BIG = 64 * 1024


def _render() -> dict[str, bytes]:
    inv = load_inventory(ROOT / "inventory.example.yaml").inventory
    bundle = SecretsStore(HERE / "secrets" / "rack1").load()
    return {k: v.data for k, v in render_all(inv, bundle).items()}


def _expected_layout(files: dict[str, bytes]) -> tuple[dict[str, bytes], str]:
    small = {k: v for k, v in files.items() if len(v) <= BIG}
    sums = "".join(
        f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in sorted(files.items()) if len(v) > BIG
    )
    return small, sums


def test_render_matches_golden() -> None:
    files = _render()
    small, sums = _expected_layout(files)
    if os.environ.get("CLOUDCTL_UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, data in small.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_bytes(data)
        (GOLDEN / "SHA256SUMS").write_text(sums)
        pytest.skip("golden files regenerated: review `git diff tests/golden`")
    on_disk = {
        p.relative_to(GOLDEN).as_posix(): p.read_bytes()
        for p in GOLDEN.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS"
    }
    assert sorted(on_disk) == sorted(small), "set of rendered files changed"
    for rel in sorted(small):
        assert small[rel] == on_disk[rel], f"{rel} differs from its golden file"
    assert (GOLDEN / "SHA256SUMS").read_text() == sums
