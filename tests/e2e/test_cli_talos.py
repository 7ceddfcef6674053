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

from cloudctl.emulate.talos_rack import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def rack(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    shutil.copy(ROOT / "inventory.example.yaml", tmp_path / "inventory.yaml")
    shutil.copytree(ROOT / "tests/golden/secrets/rack1", tmp_path / "secrets/rack1")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloudctl.emulate.talos_serve",
            "-i",
            "inventory.yaml",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(5)]
        assert all(line.strip() for line in lines), proc.stderr.read() if proc.stderr else ""
        yield tmp_path, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
def test_talos_verbs_against_emulator(rack: tuple[Path, int]) -> None:
    cwd, port = rack
    emu = ("--emulator-port", str(port))
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


def test_unknown_node_is_input_error(rack: tuple[Path, int]) -> None:
    cwd, port = rack
    r = cloudctl(
        cwd,
        "talos",
        "reboot",
        "-i",
        "inventory.yaml",
        "--emulator-port",
        str(port),
        "--node",
        "nope",
    )
    assert r.returncode == 2 and "--node" in r.stderr


def test_unreachable_nodes_are_remote_errors(tmp_path: Path) -> None:
    shutil.copy(ROOT / "inventory.example.yaml", tmp_path / "inventory.yaml")
    shutil.copytree(ROOT / "tests/golden/secrets/rack1", tmp_path / "secrets/rack1")
    start = time.monotonic()
    r = cloudctl(
        tmp_path, "talos", "version", "-i", "inventory.yaml", "--emulator-port", str(free_port())
    )
    assert r.returncode in (6, 7), r.stderr
    assert "cp1" in r.stderr
    assert time.monotonic() - start < 120
