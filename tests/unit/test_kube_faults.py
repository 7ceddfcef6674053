"""The Kubernetes-side rehearsal faults (``pdb-blocks-drain``, ``storage-not-uptodate``) from
their spec to the emulator's objects, and LINSTOR coming up with its HelmRelease."""

from __future__ import annotations

from typing import Any

import pytest

from cloudctl.emulate.faults import FaultSet
from cloudctl.emulate.kube_api import KubeApiEmulator
from cloudctl.emulate.rack import inject_kube_faults
from cloudctl.errors import InputError

NODES = ["cp1", "w1", "w2"]


def _states(view: list[dict[str, Any]], resource: str) -> dict[str, str]:
    return {r["node_name"]: r["volumes"][0]["state"]["disk_state"]
            for r in view if r["name"] == resource}


def test_fault_targets_and_parameters_are_checked() -> None:
    with pytest.raises(InputError, match="no node 'nope'"):
        FaultSet.build(["pdb-blocks-drain:nope"], nodes=NODES, releases=[])
    with pytest.raises(InputError, match="no node 'w9'"):
        FaultSet.build(["storage-not-uptodate:pvc-a:node=w9"], nodes=NODES, releases=[])
    with pytest.raises(InputError, match="DRBD disk state"):
        FaultSet.build(["storage-not-uptodate:pvc-a:state=Broken"], nodes=NODES, releases=[])
    ok = FaultSet.build(["storage-not-uptodate:pvc-a:node=w1,state=Inconsistent"],
                        nodes=NODES, releases=[])
    assert ok.specs() == ["storage-not-uptodate:pvc-a:node=w1,state=Inconsistent"]
    with pytest.raises(InputError, match="policy must be one of IfHealthyBudget, AlwaysAllow"):
        FaultSet.build(["pdb-blocks-drain:w1:policy=Sometimes"], nodes=NODES, releases=[])
    with pytest.raises(InputError, match="pod must be healthy or unhealthy"):
        FaultSet.build(["pdb-blocks-drain:w1:pod=sick"], nodes=NODES, releases=[])
    guard = FaultSet.build(["pdb-blocks-drain:w1:policy=AlwaysAllow,pod=unhealthy"],
                           nodes=NODES, releases=[])
    assert guard.specs() == ["pdb-blocks-drain:w1:pod=unhealthy,policy=AlwaysAllow"]


def test_faults_take_effect_when_their_objects_can_exist() -> None:
    emu = KubeApiEmulator()
    faults = FaultSet.build(["pdb-blocks-drain:w1", "storage-not-uptodate:pvc-a:node=w2"],
                            nodes=NODES, releases=[])
    inject_kube_faults(emu, faults)
    assert emu.get("apps/v1", "Deployment", "drain-guard", "default") is None  # no node yet
    for name in NODES:
        emu.add_node(name, "10.0.0.1")
    emu.reconcile()
    pdb = emu.get("policy/v1", "PodDisruptionBudget", "drain-guard", "default")
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 0
    assert pdb["status"]["disruptionsAllowed"] == 0 and pdb["status"]["expectedPods"] == 1
    assert [p for p in emu.pods_on("w1") if "drain-guard" in p]
    assert emu.storage_view() == []  # LINSTOR not running yet
    emu.start_linstor()
    view = emu.storage_view()
    assert _states(view, "pvc-a") == {"w2": "UpToDate", "cp1": "Outdated"}
    # the default resources: 2 UpToDate replicas each, besides the injected one
    others = {r["name"] for r in view} - {"pvc-a"}
    assert len(others) == 2
    assert all(set(_states(view, n).values()) == {"UpToDate"} for n in others)
