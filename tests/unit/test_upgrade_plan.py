"""The upgrade plan (pure): layers, order, preflight refusals; the gates' pure rules; the drain's
pod selection; re-tagging the Kubernetes images of a machine config."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cloudctl.catalog import talos_catalog
from cloudctl.kube.drain import eviction_body, pods_to_evict
from cloudctl.upgrade.gates import (
    EtcdHealth,
    MemberHealth,
    etcd_problems,
    last_replica_problems,
    replicas_from_view,
)
from cloudctl.upgrade.plan import (
    ExtraNode,
    LiveFacts,
    NodeFacts,
    NodeTarget,
    ReleaseFacts,
    ReleaseTarget,
    plan_upgrade,
    tag_of,
)
from cloudctl.upgrade.run import pin_kubernetes

IMG = "factory.talos.dev/metal-installer/abc:{}"
NODES = [("cp1", "controlplane"), ("w1", "worker"), ("cp2", "controlplane"),
         ("cp3", "controlplane"), ("w2", "worker")]


def targets(talos: str = "v1.13.6", kube: str = "v1.35.4") -> dict[str, NodeTarget]:
    return {n: NodeTarget(role, talos, IMG.format(talos), kube) for n, role in NODES}


def facts(talos: str = "v1.13.6", kube: str = "v1.35.4", *,
          releases: dict[str, ReleaseFacts] | None = None, **over: Any) -> LiveFacts:
    nodes = {}
    for n, role in NODES:
        f = NodeFacts(n, role, talos, IMG.format(talos), kube,
                      kube if role == "controlplane" else None)
        nodes[n] = over.get(n, f)
    return LiveFacts(nodes, releases if releases is not None else {},
                     registered=frozenset(nodes))


CILIUM = ReleaseTarget("cilium", "1.19.6", {"a": 1}, True)


def test_unchanged_cluster_is_nothing_to_do() -> None:
    plan = plan_upgrade(targets(), {"cilium": CILIUM},
                        facts(releases={"cilium": ReleaseFacts("cilium", "1.19.6", {"a": 1},
                                                               True)}),
                        talos_catalog())
    assert plan.nothing_to_do and plan.changes == ()


def test_talos_upgrade_orders_control_planes_first_in_inventory_order() -> None:
    plan = plan_upgrade(targets("v1.13.6"), {}, facts("v1.13.5"), talos_catalog())
    assert [c.target for c in plan.changes] == ["cp1", "cp2", "cp3", "w1", "w2"]
    assert {c.layer for c in plan.changes} == {"talos"}
    assert plan.changes[0].describe() == "Talos cp1: v1.13.5 -> v1.13.6"


def test_new_installer_image_on_the_same_version_is_an_upgrade() -> None:
    live = facts()
    cp1 = live.nodes["cp1"]
    live.nodes["cp1"] = NodeFacts("cp1", "controlplane", cp1.talos_version,
                                  "factory.talos.dev/metal-installer/old:v1.13.6",
                                  cp1.kubelet_version, cp1.api_server_version)
    plan = plan_upgrade(targets(), {}, live, talos_catalog())
    assert [(c.target, c.detail) for c in plan.changes] == [("cp1", "installer image")]


def test_one_chart_bumped_names_exactly_that_release() -> None:
    live = {"cilium": ReleaseFacts("cilium", "1.19.6", {"a": 1}, True),
            "metallb": ReleaseFacts("metallb", "0.16.1", {}, True)}
    want = {"cilium": ReleaseTarget("cilium", "1.20.0", {"a": 1}, True),
            "metallb": ReleaseTarget("metallb", "0.16.1", {}, True)}
    plan = plan_upgrade(targets(), want, facts(releases=live), talos_catalog())
    assert [(c.layer, c.target, c.before, c.after, c.detail) for c in plan.changes] == [
        ("platform", "cilium", "1.19.6", "1.20.0", "chart version")]


def test_chart_version_without_schema_refused_unless_forced() -> None:
    live = {"kube-ovn": ReleaseFacts("kube-ovn", "1.14.0", {}, True)}
    want = {"kube-ovn": ReleaseTarget("kube-ovn", "1.15.0", {}, False)}
    plan = plan_upgrade(targets(), want, facts(releases=live), talos_catalog())
    assert any("no vendored values schema" in p and "--force" in p for p in plan.problems)
    forced = plan_upgrade(targets(), want, facts(releases=live), talos_catalog(), force=True)
    assert not forced.problems and forced.warnings and forced.changes


def test_talos_version_not_in_catalog_refused() -> None:
    plan = plan_upgrade(targets("v1.13.99"), {}, facts("v1.13.5"), talos_catalog())
    assert any("v1.13.99 is not in cloudctl's catalog" in p for p in plan.problems)


def test_skipped_talos_minor_and_downgrade_refused() -> None:
    plan = plan_upgrade(targets("v1.13.6"), {}, facts("v1.11.3", kube="v1.33.0"),
                        talos_catalog())
    assert any("skips a minor version; upgrade to v1.12 first" in p for p in plan.problems)
    down = plan_upgrade(targets("v1.13.5"), {}, facts("v1.13.6"), talos_catalog())
    assert any("downgrade" in p for p in down.problems)


def test_kubernetes_not_supported_by_target_talos_refused() -> None:
    plan = plan_upgrade(targets("v1.12.7", kube="v1.36.0"), {}, facts("v1.12.7",
                        kube="v1.35.4"), talos_catalog())
    assert any("Kubernetes v1.36.0 is not supported by Talos v1.12" in p for p in plan.problems)


def test_running_kubernetes_unsupported_by_new_talos_refused() -> None:
    # Talos v1.13 supports Kubernetes from 1.31: a 1.30 cluster cannot move to Talos 1.13 first
    plan = plan_upgrade(targets("v1.13.6", kube="v1.31.0"), {}, facts("v1.12.7",
                        kube="v1.30.5"), talos_catalog())
    assert any("running Kubernetes v1.30.5 is not supported by Talos v1.13" in p
               for p in plan.problems)


def test_kubernetes_patch_upgrade_control_planes_then_kubelets() -> None:
    plan = plan_upgrade(targets(kube="v1.35.5"), {}, facts(kube="v1.35.4"), talos_catalog())
    assert [(c.part, c.target) for c in plan.changes] == [
        ("control-plane", "cp1"), ("control-plane", "cp2"), ("control-plane", "cp3"),
        ("kubelet", "cp1"), ("kubelet", "cp2"), ("kubelet", "cp3"), ("kubelet", "w1"),
        ("kubelet", "w2")]


def test_kubernetes_skew_refused_at_plan_time() -> None:
    skip = plan_upgrade(targets(kube="v1.36.1"), {}, facts(kube="v1.34.2"), talos_catalog())
    assert any("skips a minor version" in p for p in skip.problems)
    assert not skip.changes or all(c.layer != "kubernetes" for c in skip.changes)
    live = facts(kube="v1.35.4")
    w1 = live.nodes["w1"]
    live.nodes["w1"] = NodeFacts("w1", "worker", w1.talos_version, w1.installer_image,
                                 "v1.36.0", None)
    newer = plan_upgrade(targets(kube="v1.35.4"), {}, live, talos_catalog())
    assert any("w1: kubelet v1.36.0 is newer than the API server v1.35.4" in p
               for p in newer.problems)
    down = plan_upgrade(targets(kube="v1.35.3"), {}, facts(kube="v1.35.4"), talos_catalog())
    assert any("downgrade" in p for p in down.problems)


def test_unreachable_node_is_unknown_not_planned() -> None:
    live = facts("v1.13.5")
    live.nodes["w2"] = NodeFacts("w2", "worker", None, None, None, error="connection refused")
    plan = plan_upgrade(targets(), {}, live, talos_catalog())
    assert "w2" not in [c.target for c in plan.changes]
    assert plan.unknown == ("node w2: connection refused",) and not plan.nothing_to_do


def test_added_and_removed_nodes() -> None:
    live = facts()
    live.nodes["w2"] = NodeFacts("w2", "worker", None, None, None, error="TLS refused")
    extra = {"old-cp": ExtraNode("old-cp", "10.0.0.9", True),
             "old-w": ExtraNode("old-w", "10.0.0.8", False)}
    live = LiveFacts(live.nodes, {}, registered=frozenset(set(live.nodes) - {"w2"} | set(extra)),
                     extra=extra)
    plan = plan_upgrade(targets(), {}, live, talos_catalog())
    assert [(c.layer, c.part, c.target) for c in plan.changes] == [
        ("nodes", "add", "w2"), ("nodes", "remove", "old-cp"), ("nodes", "remove", "old-w")]
    assert "leave etcd" in plan.changes[1].detail and "leave etcd" not in plan.changes[2].detail
    assert not plan.unknown and not plan.problems


def test_removing_every_control_plane_refused() -> None:
    only_workers = {n: t for n, t in targets().items() if t.role == "worker"}
    live = facts()
    extra = {"cp1": ExtraNode("cp1", "10.0.0.1", True)}
    live = LiveFacts({n: f for n, f in live.nodes.items() if n in only_workers}, {},
                     registered=frozenset(live.nodes), extra=extra)
    plan = plan_upgrade(only_workers, {}, live, talos_catalog())
    assert any("no control plane" in p for p in plan.problems)


def test_tag_of() -> None:
    assert tag_of("ghcr.io/siderolabs/kubelet:v1.35.4") == "v1.35.4"
    assert tag_of("registry:5000/x/y:v1@sha256:ab") == "v1"
    assert tag_of("registry:5000/x/y") == ""


# --------------------------------------------------------------------------- gates


def health(members: dict[int, str], *status: MemberHealth) -> EtcdHealth:
    return EtcdHealth(members, {s.node: s for s in status})


MEMBERS = {1: "cp1", 2: "cp2", 3: "cp3"}


def test_etcd_gate_healthy_quorum_kept() -> None:
    h = health(MEMBERS, *(MemberHealth(n, i, ()) for i, n in MEMBERS.items()))
    assert etcd_problems(h, leaving="cp1") == []


def test_etcd_gate_unhealthy_member_and_quorum() -> None:
    h = health(MEMBERS, MemberHealth("cp1", 1, ()), MemberHealth("cp2", 2, ("request timed out",)),
               MemberHealth("cp3", 3, ()))
    problems = etcd_problems(h, leaving="cp1")
    assert any("cp2" in p and "unhealthy: request timed out" in p for p in problems)
    assert any("taking cp1 down would leave 1 healthy etcd member(s) of 3: quorum needs 2" in p
               for p in problems)
    down = health(MEMBERS, MemberHealth("cp1", 1, ()), MemberHealth("cp2", None, ("refused",)),
                  MemberHealth("cp3", 3, ()))
    assert any("has no control plane answering" in p for p in etcd_problems(down))


def test_etcd_gate_single_member_cannot_go_down() -> None:
    h = health({1: "cp1"}, MemberHealth("cp1", 1, ()))
    assert etcd_problems(h) == []
    assert "quorum needs 1" in etcd_problems(h, leaving="cp1")[0]


def _res(name: str, node: str, state: str, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"name": name, "node_name": node, "flags": list(flags),
            "volumes": [{"volume_number": 0, "state": {"disk_state": state}}]}


def test_storage_gate_last_uptodate_replica() -> None:
    view = [_res("pvc-a", "cp1", "UpToDate"), _res("pvc-a", "w1", "Outdated"),
            _res("pvc-b", "cp1", "UpToDate"), _res("pvc-b", "w2", "UpToDate"),
            _res("pvc-c", "w1", "UpToDate"), _res("pvc-c", "cp1", "Diskless", ("DISKLESS",))]
    reps = replicas_from_view(view)
    assert last_replica_problems(reps, "cp1") == [
        "LINSTOR resource pvc-a: node cp1 holds its last UpToDate replica (w1: Outdated)"]
    assert [p.split(":")[0] for p in last_replica_problems(reps, "w1")] == [
        "LINSTOR resource pvc-c"]
    assert last_replica_problems(reps, "w2") == []


# --------------------------------------------------------------------------- drain


def _pod(name: str, node: str, *, owner: str | None = None, mirror: bool = False,
         phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    return {"metadata": meta, "spec": {"nodeName": node}, "status": {"phase": phase}}


def test_drain_selects_like_kubectl_ignore_daemonsets() -> None:
    pods = [_pod("b", "n1", owner="ReplicaSet"), _pod("a", "n1", owner="StatefulSet"),
            _pod("ds", "n1", owner="DaemonSet"), _pod("static", "n1", mirror=True),
            _pod("done", "n1", phase="Succeeded"), _pod("other", "n2")]
    assert [str(p) for p in pods_to_evict(pods, "n1")] == ["ns/a", "ns/b"]
    assert eviction_body(pods_to_evict(pods, "n1")[0]) == {
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "a", "namespace": "ns"}}


# --------------------------------------------------------------------------- configs

CONFIG = """\
version: v1alpha1
machine:
  type: controlplane
  kubelet:
    image: ghcr.io/siderolabs/kubelet:v1.35.5
  install:
    image: factory.talos.dev/metal-installer/abc:v1.13.6
cluster:
  apiServer:
    image: registry.k8s.io/kube-apiserver:v1.35.5
  controllerManager:
    image: registry.k8s.io/kube-controller-manager:v1.35.5
  scheduler:
    image: registry.k8s.io/kube-scheduler:v1.35.5
  proxy:
    disabled: true
    image: registry.k8s.io/kube-proxy:v1.35.5
---
apiVersion: v1alpha1
kind: HostnameConfig
hostname: cp1
"""


def test_pin_kubernetes_keeps_the_live_versions() -> None:
    out = list(yaml.safe_load_all(pin_kubernetes(CONFIG, kubelet="v1.35.4",
                                                 control_plane="v1.35.4")))
    v1 = out[0]
    assert v1["machine"]["kubelet"]["image"] == "ghcr.io/siderolabs/kubelet:v1.35.4"
    assert {v1["cluster"][k]["image"].rsplit(":", 1)[1]
            for k in ("apiServer", "controllerManager", "scheduler", "proxy")} == {"v1.35.4"}
    assert v1["machine"]["install"]["image"].endswith(":v1.13.6")
    assert out[1] == {"apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": "cp1"}
    only_kubelet = yaml.safe_load_all(pin_kubernetes(CONFIG, kubelet="v1.35.4",
                                                     control_plane=None))
    assert next(iter(only_kubelet))["cluster"]["apiServer"]["image"].endswith(":v1.35.5")


@pytest.mark.parametrize("image,tag,want", [
    ("ghcr.io/siderolabs/kubelet:v1.35.5", "v1.35.4", "ghcr.io/siderolabs/kubelet:v1.35.4"),
    ("registry:5000/kubelet:v1@sha256:ab", "v2", "registry:5000/kubelet:v2"),
])
def test_retag(image: str, tag: str, want: str) -> None:
    from cloudctl.util.images import retag

    assert retag(image, tag) == want
