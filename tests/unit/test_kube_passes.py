"""When the emulator's controllers run: a request runs a pass only when something changed
since the last one (an object, an input outside the store, or a timed transition fell due),
and the controllers that scale with the rack run only when a kind they watch changed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloudctl.emulate.kube_api import KubeApiEmulator


def _get(emu: KubeApiEmulator, path: str) -> dict[str, Any]:
    resp = emu.handle("GET", path, {}, b"")
    assert resp.code == 200, resp.body
    body: dict[str, Any] = json.loads(resp.body)
    return body


def _post(emu: KubeApiEmulator, path: str, obj: dict[str, Any]) -> None:
    resp = emu.handle("POST", path, {"Content-Type": "application/json"},
                      json.dumps(obj).encode())
    assert resp.code == 201, resp.body


def _ready(node: dict[str, Any]) -> str:
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


@pytest.fixture
def emu() -> KubeApiEmulator:
    e = KubeApiEmulator(cni_charts=())
    e.controllers.cni_installed = True
    e.add_node("n1", "10.0.0.1")
    for _ in range(3):  # until a pass changes nothing
        _get(e, "/api/v1/nodes")
    return e


class _Count:
    def __init__(self, emu: KubeApiEmulator) -> None:
        self.passes = self.workloads = self.nodes = 0
        ctl = emu.controllers
        reconcile, workloads, nodes = ctl.reconcile, ctl._workloads, ctl._nodes

        def counted_reconcile(now: float, **kw: Any) -> None:
            self.passes += 1
            reconcile(now, **kw)

        def counted_workloads(now: float) -> None:
            self.workloads += 1
            workloads(now)

        def counted_nodes() -> None:
            self.nodes += 1
            nodes()

        ctl.reconcile = counted_reconcile  # type: ignore[method-assign]
        ctl._workloads = counted_workloads  # type: ignore[method-assign]
        ctl._nodes = counted_nodes  # type: ignore[method-assign]


def test_a_request_runs_no_pass_when_nothing_changed(emu: KubeApiEmulator) -> None:
    count = _Count(emu)
    for _ in range(5):
        assert _ready(_get(emu, "/api/v1/nodes/n1")) == "True"
    assert count.passes == 0


def test_an_input_outside_the_store_makes_the_next_request_run_a_full_pass(
    emu: KubeApiEmulator,
) -> None:
    emu.set_kubelet("n1", posting=True, version=None)
    _get(emu, "/api/v1/nodes/n1")
    count = _Count(emu)
    emu.set_kubelet("n1", posting=True, version=None)  # what it already is: nothing to do
    _get(emu, "/api/v1/nodes/n1")
    assert count.passes == 0
    emu.set_kubelet("n1", posting=False, version=None)  # the kubelet stops posting
    assert _ready(_get(emu, "/api/v1/nodes/n1")) == "Unknown"
    assert count.passes == 1 and count.nodes == 1


def test_rack_scale_controllers_run_when_a_kind_they_watch_changed(
    emu: KubeApiEmulator,
) -> None:
    count = _Count(emu)
    _post(emu, "/api/v1/namespaces/default/configmaps",
          {"metadata": {"name": "c"}, "data": {"k": "v"}})
    _get(emu, "/api/v1/nodes/n1")  # a pass: the store changed, but no kind they watch
    assert count.passes == 1 and count.workloads == 0 and count.nodes == 0
    _post(emu, "/apis/apps/v1/namespaces/default/deployments", {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    for _ in range(4):  # Deployment -> ReplicaSet -> Pods -> bound -> Ready
        _get(emu, "/api/v1/nodes/n1")
    assert count.workloads >= 1
    pods = _get(emu, "/api/v1/namespaces/default/pods")["items"]
    assert len(pods) == 2 and all(p["spec"].get("nodeName") == "n1" for p in pods)
    deployment = _get(emu, "/apis/apps/v1/namespaces/default/deployments/web")
    assert deployment["status"].get("readyReplicas") == 2


def test_a_due_timed_transition_runs_the_controller_that_waits_for_it() -> None:
    now = [0.0]
    e = KubeApiEmulator(cni_charts=())
    e.api.clock = lambda: now[0]
    e.controllers.cni_installed = True
    e.controllers.workload_delay = 5.0
    e.add_node("n1", "10.0.0.1")
    _post(e, "/apis/apps/v1/namespaces/default/deployments", {
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    for _ in range(5):
        _get(e, "/api/v1/nodes/n1")
    web = "/apis/apps/v1/namespaces/default/deployments/web"
    assert not _get(e, web)["status"].get("readyReplicas")  # bound, not Ready yet
    count = _Count(e)
    now[0] = 2.0
    _get(e, web)
    assert count.passes == 0  # nothing changed and nothing is due yet
    now[0] = 6.0  # the pod turns Ready: no write came, the due time runs the pass
    for _ in range(3):
        _get(e, web)
    assert count.workloads >= 1
    assert _get(e, web)["status"].get("readyReplicas") == 1


def test_node_lifecycle_visits_only_nodes_whose_inputs_changed(emu: KubeApiEmulator) -> None:
    """A settled node (same stored object, kubelet and CNI state) is not visited again; a
    change to any of the three is acted on."""
    emu.add_node("n2", "10.0.0.2")
    for _ in range(3):
        _get(emu, "/api/v1/nodes")
    ctl = emu.controllers
    visited: list[str] = []
    node = ctl._node

    def counted_node(rt: Any, stored: Any, cni_ready: bool, kubelet: Any) -> None:
        visited.append(stored.obj["metadata"]["name"])
        node(rt, stored, cni_ready, kubelet)

    ctl._node = counted_node  # type: ignore[method-assign]
    # the object changed (a cordon): only that node is visited; its taint follows
    resp = emu.handle("PATCH", "/api/v1/nodes/n2",
                      {"Content-Type": "application/merge-patch+json"},
                      json.dumps({"spec": {"unschedulable": True}}).encode())
    assert resp.code == 200, resp.body
    taints = _get(emu, "/api/v1/nodes/n2")["spec"]["taints"]
    assert [t["key"] for t in taints] == ["node.kubernetes.io/unschedulable"]
    assert set(visited) == {"n2"}
    for _ in range(3):  # the pass after its own write finds nothing more to do for it
        _get(emu, "/api/v1/nodes")
    visited.clear()
    # its kubelet stopped posting: that node only
    emu.set_kubelet("n1", posting=False, version=None)
    assert _ready(_get(emu, "/api/v1/nodes/n1")) == "Unknown"
    assert _ready(_get(emu, "/api/v1/nodes/n2")) == "True"
    assert set(visited) == {"n1"}
    visited.clear()
    # the CNI went away: every node is visited again and turns NotReady where it posts
    emu.set_cni_installed(False)
    assert _ready(_get(emu, "/api/v1/nodes/n2")) == "False"
    assert set(visited) == {"n1", "n2"}
