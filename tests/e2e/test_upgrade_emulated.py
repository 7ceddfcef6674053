"""``cloudctl upgrade --emulate`` end to end (issue 9): the CLI in a subprocess against a rack
bootstrapped with ``bootstrap --emulate``, after the inventory was edited as an operator would.

Talos rolling upgrade of 3 control planes + 2 workers one node at a time, control planes first
(the JSON event timeline shows no overlap); an injected A/B rollback fails naming the node;
SIGKILL mid-upgrade, then --resume continues and no node is upgraded twice; a PDB with
maxUnavailable 0 blocks the drain naming the PDB; the storage gate refuses the node holding the
last UpToDate replica; an unhealthy etcd member keeps the etcd gate shut; an unchanged
inventory plans nothing; skew and unsupported versions are refused at plan time."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_bootstrap_emulated import CLI, Workdir

OLD, NEW = "v1.13.5", "v1.13.6"
ORDER = ["cp1", "cp2", "cp3", "worker1", "worker2"]


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Workdir]:
    w = Workdir(tmp_path)
    try:
        yield w
    finally:
        w.cli("emulate", "stop", timeout=60)


def _set(w: Workdir, old: str, new: str) -> None:
    text = w.inventory.read_text()
    assert old in text
    w.inventory.write_text(text.replace(old, new, 1))


def _bootstrapped(w: Workdir, *faults: str, talos: str = OLD, kube: str = "v1.35.4") -> None:
    _set(w, "talosVersion: v1.13.6", f"talosVersion: {talos}")
    _set(w, "kubernetesVersion: v1.35.4", f"kubernetesVersion: {kube}")
    if faults:
        w.start_rack(*faults)
    run = w.bootstrap()
    assert run.code == 0, run.stderr[-3000:]


def upgrade(w: Workdir, *args: str) -> Any:
    return w.cli("upgrade", "--emulate", "--timeout", "30", *args)


def _timeline(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["kind"], e["node"]) for e in events
            if e.get("stage") == "upgrade" and e["kind"] in ("node-start", "node-done")]


def test_unchanged_inventory_plans_nothing(work: Workdir) -> None:
    _bootstrapped(work, talos=NEW)
    run = upgrade(work, "--plan")
    assert run.code == 0, run.stderr
    assert "nothing to do" in run.stdout
    plan = json.loads(upgrade(work, "--plan", "-o", "json").stdout)
    assert plan["nothing_to_do"] and plan["changes"] == []


def test_talos_rolling_upgrade_one_node_at_a_time(work: Workdir) -> None:
    _bootstrapped(work)
    _set(work, f"talosVersion: {OLD}", f"talosVersion: {NEW}")
    plan = upgrade(work, "--plan")
    assert plan.code == 0, plan.stderr
    assert [line.split()[2].rstrip(":") for line in plan.stdout.splitlines()] == ORDER
    run = upgrade(work, "-o", "json")
    assert run.code == 0, run.stderr[-3000:]
    timeline = _timeline(run.events)
    # strictly alternating start/done, one node at a time, control planes first
    assert timeline == [(k, n) for n in ORDER for k in ("node-start", "node-done")]
    rack = work.rack()
    for name in ORDER:
        node = rack["nodes"][name]
        assert node["version"] == NEW and node["upgrades"] == 1, (name, node)
        assert node["image"].endswith(f":{NEW}")
    record = json.loads((work.cluster_dir / "upgrade.json").read_text())
    assert record["status"] == "done"
    assert record["previous"]["nodes"]["cp1"]["talos"] == OLD
    assert len(record["done"]) == 5
    again = upgrade(work, "--plan")
    assert again.code == 0 and "nothing to do" in again.stdout
    work.assert_no_secret_leaked()


def test_injected_rollback_fails_naming_the_node(work: Workdir) -> None:
    _bootstrapped(work, "upgrade-rollback:cp2")
    _set(work, f"talosVersion: {OLD}", f"talosVersion: {NEW}")
    run = upgrade(work)
    assert run.code == 10, run.stderr[-3000:]
    assert "node cp2 came back on Talos v1.13.5, not v1.13.6" in run.stderr
    rack = work.rack()
    assert rack["nodes"]["cp1"]["version"] == NEW
    assert rack["nodes"]["cp2"]["version"] == OLD and rack["nodes"]["cp2"]["upgrades"] == 1
    assert all(rack["nodes"][n]["upgrades"] == 0 for n in ("cp3", "worker1", "worker2"))
    record = json.loads((work.cluster_dir / "upgrade.json").read_text())
    assert record["status"] == "failed" and "cp2" in record["error"]
    # without --resume an unfinished upgrade is not started over
    again = upgrade(work)
    assert again.code == 9 and "--resume" in again.stderr


def test_sigkill_mid_upgrade_then_resume_never_upgrades_twice(work: Workdir) -> None:
    _bootstrapped(work)
    _set(work, f"talosVersion: {OLD}", f"talosVersion: {NEW}")
    proc = subprocess.Popen([*CLI, "upgrade", "--emulate", "--timeout", "30", "-o", "json",
                             "-i", str(work.inventory)], cwd=work.root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    seen = []
    for line in proc.stdout:
        event = json.loads(line)
        seen.append(event)
        if event.get("node") == "cp2" and "accepted" in event.get("message", ""):
            proc.send_signal(signal.SIGKILL)
            break
    else:
        pytest.fail(f"upgrade ended before the kill point: {seen[-3:]}")
    proc.wait(30)
    proc.stdout.close()
    proc.stderr.close()
    record = json.loads((work.cluster_dir / "upgrade.json").read_text())
    assert record["current"]["key"] == "talos:os:cp2" and record["current"]["sent"]
    run = upgrade(work, "--resume", "-o", "json")
    assert run.code == 0, run.stderr[-3000:]
    assert any("not sent again" in e["message"] for e in run.events)
    assert [n for k, n in _timeline(run.events) if k == "node-done"] == ORDER[1:]
    rack = work.rack()
    assert {n: rack["nodes"][n]["upgrades"] for n in ORDER} == dict.fromkeys(ORDER, 1)
    assert all(rack["nodes"][n]["version"] == NEW for n in ORDER)


def test_unhealthy_etcd_member_keeps_the_gate_shut(work: Workdir) -> None:
    _bootstrapped(work, "etcd-unhealthy:cp3:message=etcdserver: request timed out")
    _set(work, f"talosVersion: {OLD}", f"talosVersion: {NEW}")
    run = upgrade(work)
    assert run.code == 10, run.stderr[-3000:]
    assert "etcd gate refused before cp1" in run.stderr
    assert "on node cp3 is unhealthy: etcdserver: request timed out" in run.stderr
    assert all(work.rack()["nodes"][n]["upgrades"] == 0 for n in ORDER)


def test_skew_and_unsupported_versions_refused_at_plan_time(work: Workdir) -> None:
    _bootstrapped(work, talos=NEW, kube="v1.34.3")
    # the inventory itself refuses a version the Talos release does not support
    _set(work, "kubernetesVersion: v1.34.3", "kubernetesVersion: v1.37.0")
    run = upgrade(work, "--plan")
    assert run.code == 2, run.stdout + run.stderr
    assert "cluster.kubernetesVersion" in run.stderr
    assert "Kubernetes v1.37.0 is not supported by Talos v1.13.6" in run.stderr
    _set(work, "kubernetesVersion: v1.37.0", "kubernetesVersion: v1.36.0")
    skip = upgrade(work, "--plan")
    assert skip.code == 2, skip.stdout + skip.stderr
    assert "Kubernetes v1.34.3 -> v1.36.0 skips a minor version (one minor at a time: v1.35 " \
        "first)" in skip.stderr
    _set(work, "kubernetesVersion: v1.36.0", "kubernetesVersion: v1.34.1")
    down = upgrade(work)
    assert down.code == 2 and "downgrade" in down.stderr
    assert all(work.rack()["nodes"][n]["upgrades"] == 0 for n in ORDER)
    # an inventory edited into an invalid state still lets the operator stop the rack
    _set(work, "kubernetesVersion: v1.34.1", "kubernetesVersion: v1.39.0")
    stop = work.cli("emulate", "stop")
    assert stop.code == 0 and "emulated rack stopped" in stop.stdout, stop.stderr


def test_resume_without_record_and_bad_record(work: Workdir, tmp_path: Path) -> None:
    _bootstrapped(work, talos=NEW)
    (work.cluster_dir / "upgrade.json").write_text("{not json")
    run = upgrade(work)
    assert run.code == 9 and "upgrade.json" in run.stderr


def test_one_chart_bumped_changes_exactly_that_release(work: Workdir) -> None:
    _bootstrapped(work, talos=NEW)
    before = {k: v["generation"] for k, v in work.rack()["helmreleases"].items()}
    _set(work, "cilium: {enabled: true}", "cilium: {enabled: true, version: 1.20.0}")
    plan = json.loads(upgrade(work, "--plan", "-o", "json").stdout)
    assert [(c["layer"], c["target"], c["before"], c["after"]) for c in plan["changes"]] == [
        ("platform", "cilium", "1.19.6", "1.20.0")]
    run = upgrade(work)
    assert run.code == 0, run.stderr[-3000:]
    after = work.rack()["helmreleases"]
    moved = {k for k, v in after.items() if v["generation"] != before[k]}
    assert moved == {"cilium"} and after["cilium"]["ready"] == "True"
    assert all(work.rack()["nodes"][n]["upgrades"] == 0 for n in ORDER)
    again = upgrade(work, "--plan")
    assert again.code == 0 and "nothing to do" in again.stdout


WORKER3 = """  - name: worker3
    role: worker
    macs: ["52:54:00:10:00:23"]
    ip: 10.20.0.23
    installDisk: /dev/sda
"""


def test_adding_and_removing_nodes(work: Workdir) -> None:
    """A machine racked and waiting in maintenance mode is added alone; a worker and a control
    plane taken out of the inventory are drained, leave etcd, are reset and deleted."""
    _set(work, "talosVersion: v1.13.6", f"talosVersion: {NEW}")
    base = work.inventory.read_text()
    with_w3 = base.replace("\nplatform:", WORKER3 + "\nplatform:", 1)
    work.inventory.write_text(with_w3)
    work.start_rack()  # the rack has the sixth machine; the cluster is built without it
    work.inventory.write_text(base)
    assert work.bootstrap().code == 0
    assert work.rack()["nodes"]["worker3"]["stage"] == "maintenance"

    applies = {n: work.rack()["nodes"][n]["apply_calls"] for n in ORDER}
    work.inventory.write_text(with_w3)
    plan = json.loads(upgrade(work, "--plan", "-o", "json").stdout)
    assert [(c["layer"], c["part"], c["target"]) for c in plan["changes"]] == [
        ("nodes", "add", "worker3")]
    run = upgrade(work)
    assert run.code == 0, run.stderr[-3000:]
    rack = work.rack()
    assert rack["nodes"]["worker3"]["stage"] == "running" and rack["nodes"]["worker3"]["joined"]
    # configured alone: no other node was sent its config again
    assert {n: rack["nodes"][n]["apply_calls"] for n in ORDER} == applies

    # cp3 and worker1 leave the inventory
    text = work.inventory.read_text()
    start = text.index("  - name: cp3")
    text = text[:start] + text[text.index("  - name: worker2"):]
    work.inventory.write_text(text)
    plan = json.loads(upgrade(work, "--plan", "-o", "json").stdout)
    removals = [(c["part"], c["target"]) for c in plan["changes"] if c["layer"] == "nodes"]
    assert removals == [("remove", "cp3"), ("remove", "worker1")]
    run = upgrade(work, "-o", "json")
    assert run.code == 0, run.stderr[-3000:]
    assert any(e.get("node") == "cp3" and e["message"].startswith("left etcd")
               for e in run.events)
    rack = work.rack()
    assert rack["nodes"]["cp3"]["resets"] == 1 and rack["nodes"]["worker1"]["resets"] == 1
    assert rack["nodes"]["cp3"]["etcd_member"] is None
    assert sum(1 for n in ("cp1", "cp2") if rack["nodes"][n]["etcd_member"]) == 2
    from test_bootstrap_emulated import _kube

    with _kube(work) as kube:
        names = {n["metadata"]["name"] for n in kube.list("v1", "Node")}
    assert names == {"cp1", "cp2", "worker2", "worker3"}
    again = upgrade(work, "--plan")
    assert again.code == 0 and "nothing to do" in again.stdout, again.stdout


def test_pdb_blocks_the_drain_naming_the_budget(work: Workdir) -> None:
    _bootstrapped(work, "pdb-blocks-drain:cp2")
    _set(work, f"talosVersion: {OLD}", f"talosVersion: {NEW}")
    run = upgrade(work, "--drain-timeout", "2")
    assert run.code == 10, run.stderr[-3000:]
    assert "drain of node cp2 blocked after 2s by a PodDisruptionBudget" in run.stderr
    assert "drain-guard" in run.stderr
    rack = work.rack()
    assert rack["nodes"]["cp1"]["upgrades"] == 1 and rack["nodes"]["cp2"]["upgrades"] == 0
    with _kube_of(work) as kube:
        cp2 = kube.request("GET", "/api/v1/nodes/cp2", what="Node cp2")[1]
    assert cp2["spec"].get("unschedulable") is True  # left cordoned for the operator to see


def test_storage_gate_refuses_the_last_uptodate_replica(work: Workdir) -> None:
    _bootstrapped(work, "storage-not-uptodate:pvc-db:node=cp3")
    _set(work, f"talosVersion: {OLD}", f"talosVersion: {NEW}")
    run = upgrade(work)
    assert run.code == 10, run.stderr[-3000:]
    assert "storage gate (linstor) refused cp3" in run.stderr
    assert "LINSTOR resource pvc-db: node cp3 holds its last UpToDate replica" in run.stderr
    rack = work.rack()
    assert [rack["nodes"][n]["upgrades"] for n in ORDER] == [1, 1, 0, 0, 0]


def _kube_of(w: Workdir) -> Any:
    from cloudctl.kube import Kube

    return Kube.from_kubeconfig(w.cluster_dir / "kubeconfig")


def test_rollback_restores_chart_and_talos_with_the_same_gates(work: Workdir) -> None:
    _bootstrapped(work)
    _set(work, f"talosVersion: {OLD}", f"talosVersion: {NEW}")
    _set(work, "cilium: {enabled: true}", "cilium: {enabled: true, version: 1.20.0}")
    assert upgrade(work).code == 0
    assert all(work.rack()["nodes"][n]["version"] == NEW for n in ORDER)
    plan = json.loads(upgrade(work, "--rollback", "--plan", "-o", "json").stdout)
    assert [(c["layer"], c["target"], c["after"]) for c in plan["changes"]] == [
        ("platform", "cilium", "1.19.6")] + [("talos", n, OLD) for n in ORDER]
    run = upgrade(work, "--rollback", "-o", "json")
    assert run.code == 0, run.stderr[-3000:]
    assert any(e["message"].startswith("etcd healthy; quorum kept without cp1")
               for e in run.events)  # same gates
    rack = work.rack()
    assert all(rack["nodes"][n]["version"] == OLD and rack["nodes"][n]["upgrades"] == 2
               for n in ORDER)
    assert rack["nodes"]["cp1"]["image"].endswith(f":{OLD}")
    with _kube_of(work) as kube:
        hr = kube.get(_hr_ref("cilium"))
    assert hr is not None and hr["spec"]["chart"]["spec"]["version"] == "1.19.6"
    # the inventory still asks for the new versions: the next plan is the upgrade again
    again = json.loads(upgrade(work, "--plan", "-o", "json").stdout)
    assert len(again["changes"]) == 6


def test_rollback_without_record_is_refused(work: Workdir) -> None:
    _bootstrapped(work, talos=NEW)
    run = upgrade(work, "--rollback")
    assert run.code == 2 and "nothing to roll back to" in run.stderr


def _hr_ref(name: str) -> Any:
    from cloudctl.kube import ObjectRef

    return ObjectRef("helm.toolkit.fluxcd.io/v2", "HelmRelease", name, "flux-system")


def test_kubernetes_patch_upgrade_control_planes_then_kubelets(work: Workdir) -> None:
    _bootstrapped(work, talos=NEW, kube="v1.35.3")
    with _kube_of(work) as kube:
        kubelets = {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"]
                    for n in kube.list("v1", "Node")}
    assert set(kubelets.values()) == {"v1.35.3"}
    _set(work, "kubernetesVersion: v1.35.3", "kubernetesVersion: v1.35.4")
    plan = json.loads(upgrade(work, "--plan", "-o", "json").stdout)
    assert [(c["part"], c["target"]) for c in plan["changes"]] == \
        [("control-plane", n) for n in ORDER[:3]] + [("kubelet", n) for n in ORDER]
    run = upgrade(work, "-o", "json")
    assert run.code == 0, run.stderr[-3000:]
    timeline = _timeline(run.events)
    assert timeline == [(k, n) for n in ORDER[:3] + ORDER for k in ("node-start", "node-done")]
    with _kube_of(work) as kube:
        kubelets = {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"]
                    for n in kube.list("v1", "Node")}
    assert set(kubelets.values()) == {"v1.35.4"}
    assert all(work.rack()["nodes"][n]["upgrades"] == 0 for n in ORDER)  # no reboot, no OS
    again = upgrade(work, "--plan")
    assert again.code == 0 and "nothing to do" in again.stdout, again.stdout


@pytest.mark.parametrize("policy,proceeds", [("AlwaysAllow", True), ("IfHealthyBudget", False)])
def test_unhealthy_pod_eviction_follows_the_pdb_policy(
    work: Workdir, policy: str, proceeds: bool,
) -> None:
    """A PDB with maxUnavailable 0 over a running but not Ready pod: AlwaysAllow lets the drain
    evict it; IfHealthyBudget (the default) refuses, the budget not being met."""
    _bootstrapped(work, f"pdb-blocks-drain:cp2:policy={policy},pod=unhealthy")
    _set(work, f"talosVersion: {OLD}", f"talosVersion: {NEW}")
    run = upgrade(work, "--drain-timeout", "2", "-o", "json")
    if proceeds:
        assert run.code == 0, run.stderr[-3000:]
        assert any(e.get("node") == "cp2" and e["message"].startswith("evicted pod default/"
                                                                      "drain-guard")
                   for e in run.events)
        assert all(work.rack()["nodes"][n]["upgrades"] == 1 for n in ORDER)
    else:
        assert run.code == 10, run.stderr[-3000:]
        assert "drain of node cp2 blocked" in run.stderr and "drain-guard" in run.stderr
        assert work.rack()["nodes"]["cp2"]["upgrades"] == 0
