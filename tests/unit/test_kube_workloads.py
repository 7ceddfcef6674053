"""Workload controllers of the Kubernetes API emulator once Nodes exist: ReplicaSets per pod
template, DaemonSet pods per node, garbage collection, pods of removed nodes rescheduled."""

from __future__ import annotations

from typing import Any

import pytest

from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import Store
from cloudctl.emulate.kube_types import ResourceType


def _rt(store: Store, api_version: str, kind: str) -> ResourceType:
    rt = store.type_of(api_version, kind)
    assert rt is not None
    return rt


def _workload(kind: str, name: str, replicas: int | None = 2, image: str = "nginx:1") -> dict:
    labels = {"app": name}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "c", "image": image}]}},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def cluster() -> tuple[Store, Controllers]:
    store = Store()
    ctl = Controllers(store, workload_delay=1.0)
    for name in ("n1", "n2"):
        store.create(_rt(store, "v1", "Node"), None, {"metadata": {"name": name}},
                     manager="kubelet")
    return store, ctl


def _pods(store: Store, app: str) -> list[dict[str, Any]]:
    return [p for p in store.list(_rt(store, "v1", "Pod"), "default")["items"]
            if p["metadata"]["labels"].get("app") == app]


def test_template_change_makes_a_new_replicaset_and_replaces_the_pods(
    cluster: tuple[Store, Controllers],
) -> None:
    store, ctl = cluster
    dep_rt, rs_rt = _rt(store, "apps/v1", "Deployment"), _rt(store, "apps/v1", "ReplicaSet")
    store.create(dep_rt, "default", _workload("Deployment", "web"), manager="t")
    ctl.reconcile(0.0)
    ctl.reconcile(1.0)
    first = {p["metadata"]["name"] for p in _pods(store, "web")}
    dep = store.get(dep_rt, "default", "web")
    assert dep["status"]["availableReplicas"] == 2
    store.patch(dep_rt, "default", "web", "merge",
                {"spec": {"template": {"spec": {"containers": [{"name": "c",
                                                                "image": "nginx:2"}]}}}},
                manager="t")
    ctl.reconcile(2.0)
    sets = store.list(rs_rt, "default")["items"]
    assert sorted(r["spec"]["replicas"] for r in sets) == [0, 2]
    assert sorted(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                  for r in sets) == ["1", "2"]
    pods = _pods(store, "web")
    assert not first & {p["metadata"]["name"] for p in pods}
    assert all(p["spec"]["containers"][0]["image"] == "nginx:2" for p in pods)
    dep = store.get(dep_rt, "default", "web")
    assert dep["status"]["conditions"][0]["status"] == "False"  # new pods not Ready yet
    ctl.reconcile(3.0)
    dep = store.get(dep_rt, "default", "web")
    assert dep["status"]["conditions"][0]["status"] == "True"
    assert dep["status"]["conditions"][1]["reason"] == "NewReplicaSetAvailable"


def test_deleting_a_deployment_collects_its_replicasets_and_pods(
    cluster: tuple[Store, Controllers],
) -> None:
    store, ctl = cluster
    dep_rt = _rt(store, "apps/v1", "Deployment")
    store.create(dep_rt, "default", _workload("Deployment", "web"), manager="t")
    ctl.reconcile(0.0)
    assert len(_pods(store, "web")) == 2
    store.delete(dep_rt, "default", "web")
    ctl.reconcile(0.5)
    assert _pods(store, "web") == []
    assert store.list(_rt(store, "apps/v1", "ReplicaSet"), "default")["items"] == []


def test_daemonset_one_pod_per_node_and_removed_node_pods_move(
    cluster: tuple[Store, Controllers],
) -> None:
    store, ctl = cluster
    ds_rt, sts_rt = _rt(store, "apps/v1", "DaemonSet"), _rt(store, "apps/v1", "StatefulSet")
    store.create(ds_rt, "default", _workload("DaemonSet", "agent", None), manager="t")
    store.create(sts_rt, "default", _workload("StatefulSet", "db"), manager="t")
    ctl.reconcile(0.0)
    ctl.reconcile(1.0)
    agents = _pods(store, "agent")
    assert sorted(p["spec"]["nodeName"] for p in agents) == ["n1", "n2"]
    ds = store.get(ds_rt, "default", "agent")
    assert (ds["status"]["desiredNumberScheduled"], ds["status"]["numberReady"]) == (2, 2)
    assert sorted(p["metadata"]["name"] for p in _pods(store, "db")) == ["db-0", "db-1"]
    store.delete(_rt(store, "v1", "Node"), None, "n1")
    ctl.reconcile(1.5)
    assert [p["spec"]["nodeName"] for p in _pods(store, "agent")] == ["n2"]
    db = _pods(store, "db")
    assert sorted(p["metadata"]["name"] for p in db) == ["db-0", "db-1"]
    assert {p["spec"]["nodeName"] for p in db} == {"n2"}
    sts = store.get(sts_rt, "default", "db")
    assert sts["status"]["readyReplicas"] == 1  # the moved pod is not Ready yet


def test_pods_of_a_node_whose_kubelet_is_gone_are_not_ready_until_it_is_back(
    cluster: tuple[Store, Controllers],
) -> None:
    store, ctl = cluster
    node_rt = _rt(store, "v1", "Node")
    store.create(_rt(store, "apps/v1", "DaemonSet"), "default",
                 _workload("DaemonSet", "agent", None), manager="t")
    ctl.reconcile(0.0)
    ctl.reconcile(1.0)

    def ready_on(node: str) -> bool:
        pod = next(p for p in _pods(store, "agent") if p["spec"]["nodeName"] == node)
        return next(c["status"] for c in pod["status"]["conditions"]
                    if c["type"] == "Ready") == "True"

    assert ready_on("n1") and ready_on("n2")
    # the node lifecycle controller's view of a rebooting machine (the contract: the Node)
    gone = {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}
    store.set_status(node_rt, None, "n1", {"conditions": [gone]})
    ctl.pods.reconcile(2.0)
    assert not ready_on("n1") and ready_on("n2")
    ds = store.get(_rt(store, "apps/v1", "DaemonSet"), "default", "agent")
    assert ds["status"]["numberReady"] == 1
    store.set_status(node_rt, None, "n1", {"conditions": [{"type": "Ready", "status": "True"}]})
    ctl.pods.reconcile(2.5)
    assert not ready_on("n1")  # containers starting again
    ctl.pods.reconcile(3.5)
    assert ready_on("n1")


def test_daemon_pods_stay_when_a_noschedule_taint_appears(
    cluster: tuple[Store, Controllers],
) -> None:
    store, ctl = cluster
    node_rt = _rt(store, "v1", "Node")
    store.create(_rt(store, "apps/v1", "DaemonSet"), "default",
                 _workload("DaemonSet", "agent", None), manager="t")
    ctl.pods.reconcile(0.0)
    before = {p["metadata"]["name"] for p in _pods(store, "agent")}
    store.patch(node_rt, None, "n1", "merge",
                {"spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]}},
                manager="t")
    ctl.pods.reconcile(0.5)
    assert {p["metadata"]["name"] for p in _pods(store, "agent")} == before
    store.patch(node_rt, None, "n1", "merge",
                {"spec": {"taints": [{"key": "dedicated", "effect": "NoExecute"}]}},
                manager="t")
    ctl.pods.reconcile(0.6)
    assert [p["spec"]["nodeName"] for p in _pods(store, "agent")] == ["n2"]
