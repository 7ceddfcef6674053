"""Fault injection into the emulated rack, end to end: the detached rack process started with
faults (``rack_control.start_rack``), and a release failing then healing through the real
Kubernetes client."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_kube_emulator import _flux_docs, platform_manifests

from cloudctl.emulate.faults import FaultSet
from cloudctl.emulate.kube_api import KubeApiEmulator
from cloudctl.emulate.rack import inject_kube_faults
from cloudctl.emulate.rack_control import (
    emulator_dir,
    platform_release_names,
    start_rack,
    stop_rack,
)
from cloudctl.emulate.schemas import chart_values_validators
from cloudctl.emulate.talos_rack import loopback_alias
from cloudctl.errors import EnvironmentNotReady, InputError
from cloudctl.inventory import load_inventory
from cloudctl.kube import Kube, ReleaseStatus, apply_manifests, wait_helmreleases
from cloudctl.secrets import SecretsStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def rack_dirs(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    inventory = tmp_path / "inventory.yaml"
    shutil.copy(REPO / "inventory.example.yaml", inventory)
    secrets, cluster = tmp_path / "secrets", tmp_path / "cluster"
    SecretsStore(secrets).init()
    yield inventory, secrets, cluster
    stop_rack(cluster)


def test_rack_runs_with_faults_and_refuses_other_faults(
    rack_dirs: tuple[Path, Path, Path],
) -> None:
    inventory, secrets, cluster = rack_dirs
    inv = load_inventory(inventory).inventory
    down = inv.nodes[0]
    faults = [f"node-unreachable:{down.name}",
              "release-fails:cilium:times=2,message=context deadline exceeded",
              "component-not-deployed:cdi:reason=ImagePullFailed"]
    info, started = start_rack(inventory, secrets, cluster, faults=faults)
    assert started
    assert info.raw["faults"] == [
        "component-not-deployed:cdi:reason=ImagePullFailed",
        f"node-unreachable:{down.name}",
        "release-fails:cilium:message=context deadline exceeded,times=2",
    ]
    # the unreachable node refuses connections; another node answers
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((loopback_alias(str(down.ip)), info.talos_port), timeout=2)
    socket.create_connection((loopback_alias(str(inv.nodes[1].ip)), info.talos_port),
                             timeout=2).close()
    # the same faults (any order) or none (bootstrap --emulate) reuse the rack
    again, started = start_rack(inventory, secrets, cluster, faults=list(reversed(faults)))
    assert (again.pid, started) == (info.pid, False)
    assert start_rack(inventory, secrets, cluster)[0].pid == info.pid
    # other faults, or none when exactly none is asked for, are refused naming the pid
    with pytest.raises(EnvironmentNotReady) as exc:
        start_rack(inventory, secrets, cluster, faults=["node-slow:cp2"])
    text = str(exc.value)
    assert exc.value.exit_code == 5
    assert f"pid {info.pid}" in text and "cloudctl emulate stop" in text
    assert "node-slow:cp2:seconds" not in text and "asked for: node-slow:cp2" in text
    with pytest.raises(EnvironmentNotReady, match="asked for: none"):
        start_rack(inventory, secrets, cluster, exact_faults=True)


def test_rack_without_helm_says_so(
    rack_dirs: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No helm binary: the rack still runs (releases Ready without chart objects) and says
    why in rack.json and its log."""
    inventory, secrets, cluster = rack_dirs
    monkeypatch.setenv("CLOUDCTL_HELM", str(cluster / "no-such-helm"))
    info, started = start_rack(inventory, secrets, cluster)
    assert started
    helm = info.raw["helm"]
    assert helm["binary"] is None
    assert helm["lookup"] == f"CLOUDCTL_HELM={cluster / 'no-such-helm'} is not an executable"
    log = (emulator_dir(cluster) / "rack.log").read_text()
    assert "rack: helm not found (CLOUDCTL_HELM=" in log
    assert "the KubeVirt and CDI custom resources will not exist" in log


def test_bad_fault_targets_are_input_errors(rack_dirs: tuple[Path, Path, Path]) -> None:
    inventory, secrets, cluster = rack_dirs
    with pytest.raises(InputError) as exc:
        start_rack(inventory, secrets, cluster, faults=["node-slow:cp9", "release-fails:nope"])
    assert exc.value.exit_code == 2
    assert "'node-slow:cp9'" in str(exc.value) and "'release-fails:nope'" in str(exc.value)
    assert not (cluster / "emulator" / "rack.json").exists()


def test_release_fails_twice_then_heals_through_the_client() -> None:
    """release-fails:kube-ovn:times=2 with remediation.retries -1 (what cloudctl renders):
    the client sees InstallFailed with the count, then Ready."""
    faults = FaultSet.build(["release-fails:kube-ovn:times=2,message=context deadline exceeded"],
                            nodes=[], releases=platform_release_names())
    with KubeApiEmulator(crd_delay=0.02, workload_delay=0.02, source_delay=0.02,
                         release_delay=0.02, retry_interval=0.2,
                         values_validators=chart_values_validators()) as emulator:
        inject_kube_faults(emulator, faults)
        kube = Kube.from_kubeconfig(emulator.kubeconfig())
        apply_manifests(kube, _flux_docs())
        platform = platform_manifests()
        for doc in platform:
            if doc["kind"] == "HelmRelease":
                doc["spec"]["install"]["remediation"] = {"retries": -1}
        apply_manifests(kube, platform)
        seen: list[ReleaseStatus] = []
        final = wait_helmreleases(kube, names=["kube-ovn"], timeout=20, interval=0.02,
                                  on_status=seen.append)
        assert [s.state for s in final] == ["ready"]
        hr = _hr(emulator)
        assert "installFailures" not in hr["status"]  # reset by the successful install
        assert hr["status"]["history"][0]["status"] == "deployed"
        failed = [s for s in seen if s.name == "kube-ovn" and s.reason == "InstallFailed"]
        assert failed and "context deadline exceeded" in failed[-1].message
        assert max(s.attempts for s in failed) == 2  # from status.installFailures


def _hr(emulator: KubeApiEmulator) -> dict[str, Any]:
    obj = emulator.get("helm.toolkit.fluxcd.io/v2", "HelmRelease", "kube-ovn", "flux-system")
    assert obj is not None
    return obj


def test_stalls_when_retries_are_used_up() -> None:
    faults = FaultSet.build(["release-fails:cilium:reason=ChartPullFailed,message=no route"],
                            nodes=[], releases=platform_release_names())
    with KubeApiEmulator(crd_delay=0.02, source_delay=0.02, retry_interval=0.05,
                         values_validators=chart_values_validators()) as emulator:
        inject_kube_faults(emulator, faults)
        kube = Kube.from_kubeconfig(emulator.kubeconfig())
        apply_manifests(kube, _flux_docs())
        platform = platform_manifests()
        for doc in platform:
            if doc["kind"] == "HelmRelease":
                doc["spec"]["install"]["remediation"] = {"retries": 2}
        apply_manifests(kube, platform)
        deadline = time.monotonic() + 10
        hr: dict[str, Any] = {}
        while time.monotonic() < deadline:
            emulator.reconcile()
            hr = emulator.get("helm.toolkit.fluxcd.io/v2", "HelmRelease", "cilium",
                              "flux-system") or {}
            conds = {c["type"]: c for c in (hr.get("status") or {}).get("conditions") or []}
            if conds.get("Stalled", {}).get("status") == "True":
                break
            time.sleep(0.02)
        conds = {c["type"]: c for c in hr["status"]["conditions"]}
        assert (conds["Stalled"]["reason"], conds["Stalled"]["message"]) == (
            "RetriesExceeded", "Failed to install after 3 attempt(s)")
        assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "ChartPullFailed")
        assert conds["Ready"]["message"].endswith(": no route")
        assert hr["status"]["installFailures"] == 3
        time.sleep(0.3)
        emulator.reconcile()
        still = emulator.get("helm.toolkit.fluxcd.io/v2", "HelmRelease", "cilium", "flux-system")
        assert still is not None and still["status"]["installFailures"] == 3
