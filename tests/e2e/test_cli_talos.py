"""`cloudctl talos ...` verbs end to end against the Talos node emulator (separate process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _start(cwd: Path, *faults: str) -> None:
    args = [a for f in faults for a in ("--fault", f)]
    r = cloudctl(cwd, "emulate", "start", "-i", "inventory.yaml", *args)
    assert r.returncode == 0, r.stderr


@pytest.fixture()
def rack(tmp_path: Path) -> Iterator[Path]:
    """The cluster's emulated rack (`cloudctl emulate start`), reached with --emulate."""
    shutil.copy(ROOT / "inventory.example.yaml", tmp_path / "inventory.yaml")
    shutil.copytree(ROOT / "tests/golden/secrets/rack1", tmp_path / "secrets/rack1")
    _start(tmp_path)
    try:
        yield tmp_path
    finally:
        cloudctl(tmp_path, "emulate", "stop", "-i", "inventory.yaml")


def cloudctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudctl.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_talos_verbs_against_emulator(rack: Path) -> None:
    cwd = rack
    emu = ("--emulate",)
    r = cloudctl(cwd, "talos", "discover", "-i", "inventory.yaml", *emu, "-o", "json")
    assert r.returncode == 0, r.stderr
    found = yaml.safe_load(r.stdout)
    assert sorted(found["nodes"]) == ["cp1", "cp2", "cp3", "worker1", "worker2"]
    assert found["missing"] == []

    r = cloudctl(cwd, "talos", "preflight", "-i", "inventory.yaml", *emu)
    assert r.returncode == 0, r.stderr

    r = cloudctl(cwd, "talos", "apply", "-i", "inventory.yaml", *emu)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("running v1.13.6") == 5

    r = cloudctl(cwd, "talos", "bootstrap", "-i", "inventory.yaml", *emu)
    assert r.returncode == 0, r.stderr
    assert "etcd bootstrapped on cp1" in r.stdout
    r = cloudctl(cwd, "talos", "bootstrap", "-i", "inventory.yaml", *emu)
    assert r.returncode == 0 and "already bootstrapped" in r.stdout

    r = cloudctl(cwd, "talos", "kubeconfig", "-i", "inventory.yaml", *emu, "-o", "kc")
    assert r.returncode == 0, r.stderr
    assert oct((cwd / "kc").stat().st_mode & 0o777) == "0o600"
    assert yaml.safe_load((cwd / "kc").read_text())["kind"] == "Config"

    r = cloudctl(cwd, "talos", "version", "-i", "inventory.yaml", *emu, "-o", "json")
    assert r.returncode == 0, r.stderr
    assert set(yaml.safe_load(r.stdout).values()) == {"v1.13.6"}


def test_unknown_node_is_input_error(rack: Path) -> None:
    r = cloudctl(rack, "talos", "reboot", "-i", "inventory.yaml", "--emulate", "--node", "nope")
    assert r.returncode == 2 and "--node" in r.stderr


def test_no_emulated_rack_is_environment_not_ready(tmp_path: Path) -> None:
    shutil.copy(ROOT / "inventory.example.yaml", tmp_path / "inventory.yaml")
    shutil.copytree(ROOT / "tests/golden/secrets/rack1", tmp_path / "secrets/rack1")
    r = cloudctl(tmp_path, "talos", "version", "-i", "inventory.yaml", "--emulate")
    assert r.returncode == 5, r.stderr
    assert "no emulated rack runs" in r.stderr and "cloudctl emulate start" in r.stderr


def test_unreachable_nodes_are_remote_errors(tmp_path: Path) -> None:
    shutil.copy(ROOT / "inventory.example.yaml", tmp_path / "inventory.yaml")
    shutil.copytree(ROOT / "tests/golden/secrets/rack1", tmp_path / "secrets/rack1")
    _start(tmp_path, "node-unreachable:cp2")
    try:
        start = time.monotonic()
        r = cloudctl(tmp_path, "talos", "version", "-i", "inventory.yaml", "--emulate")
        assert r.returncode in (6, 7), r.stderr
        assert "cp2 (10.20.0.12): Version: UNAVAILABLE: connection refused" in r.stderr
        assert time.monotonic() - start < 120
    finally:
        cloudctl(tmp_path, "emulate", "stop", "-i", "inventory.yaml")


def test_per_node_errors_keep_their_type(tmp_path: Path) -> None:
    """A node whose apply is rejected (remote) and one that is unreachable: the exit code is
    the failures' own (6), not a blanket one, and each node is named."""
    shutil.copy(ROOT / "inventory.example.yaml", tmp_path / "inventory.yaml")
    shutil.copytree(ROOT / "tests/golden/secrets/rack1", tmp_path / "secrets/rack1")
    _start(tmp_path, "apply-rejected:worker1:message=disk on fire")
    try:
        r = cloudctl(tmp_path, "talos", "apply", "-i", "inventory.yaml", "--emulate")
        assert r.returncode == 6, r.stderr
        assert "worker1" in r.stderr and "disk on fire" in r.stderr
    finally:
        cloudctl(tmp_path, "emulate", "stop", "-i", "inventory.yaml")
