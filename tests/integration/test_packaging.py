"""A wheel built from the checkout works outside it: data directories ship inside the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_checkout(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("cloudctl-*.whl"))
    env_dir = tmp_path / "venv"
    # system site packages provide the dependencies (no network needed); cloudctl itself comes
    # only from the wheel because the venv's own site-packages shadow the editable install
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(ROOT / "inventory.example.yaml", work / "inventory.yaml")
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import cloudctl, cloudctl.resources as r; "
            "print(cloudctl.__file__); print(r.data_dir('talos'))",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    pkg_file, talos_dir = probe.stdout.split()
    assert str(env_dir) in pkg_file, "cloudctl was not imported from the wheel"
    assert "_data" in talos_dir and (Path(talos_dir) / "catalog.yaml").is_file()
    shipped = subprocess.run(
        [str(py), "-c", "from cloudctl.ansible import playbook; "
         "print(playbook('prepare-hypervisor.yml').is_file())"],
        cwd=work, capture_output=True, text=True, check=True)
    assert shipped.stdout.strip() == "True"  # the Ansible playbooks ship as package data
    emulator_data = subprocess.run(  # the Kubernetes emulator's vendored OpenAPI and .proto
        [str(py), "-c", "from cloudctl.emulate import kube_openapi, kube_protobuf; "
         "print(len(kube_openapi.builtin_v3('api/v1')['paths']), "
         "kube_protobuf.has_type('apps/v1', 'Deployment'))"],
        cwd=work, capture_output=True, text=True, check=True)
    paths, has_deployment = emulator_data.stdout.split()
    assert int(paths) > 100 and has_deployment == "True"
    for name in ("templates", "flux", "helm-values"):
        subprocess.run(
            [str(py), "-c", f"import cloudctl.resources as r; r.data_dir({name!r})"],
            cwd=work,
            check=True,
        )
    out = subprocess.run(
        [str(env_dir / "bin" / "cloudctl"), "validate", "-i", "inventory.yaml"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout
