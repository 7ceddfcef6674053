"""Cordon, drain and the Eviction API of the Kubernetes API emulator, proven with clients the
emulator does not know: the real kubectl (v1.35 in CI) and the official Python client.

kubectl drain finds the Eviction API through discovery (``pods/eviction`` in ``/api/v1``),
lists the node's pods with ``fieldSelector=spec.nodeName=NODE``, checks DaemonSet owners,
cordons with a strategic merge patch and retries a 429 every 5 s until ``--timeout``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cloudctl.emulate.kube_api import KubeApiEmulator
from cloudctl.kube import api_client

KUBECTL = shutil.which("kubectl") or "/usr/local/bin/kubectl"
pytestmark = pytest.mark.skipif(not os.access(KUBECTL, os.X_OK), reason="kubectl not installed")
NODES = ("w1", "w2", "w3")
REFUSED = "Cannot evict pod as it would violate the pod's disruption budget."


@pytest.fixture
def emulator() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator(workload_delay=0.05) as emu:
        for i, name in enumerate(NODES):
            emu.add_node(name, f"10.0.0.{11 + i}")
        yield emu


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def kubectl(emulator: KubeApiEmulator, tmp_path: Path) -> Kubectl:
    config = tmp_path / "kubeconfig"
    config.write_bytes(emulator.kubeconfig())
    config.chmod(0o600)
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(tmp_path)}

    def run(*args: str, stdin: str | None = None, timeout: float = 60) -> Any:
        return subprocess.run([KUBECTL, *args], env=env, input=stdin, capture_output=True,
                              text=True, timeout=timeout, check=False)

    return run


def _apply(kubectl: Kubectl, *docs: dict[str, Any]) -> None:
    # the emulator serves no OpenAPI document: kubectl's client-side schema check is off
    out = kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert out.returncode == 0, out.stderr


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
    }


def _daemonset(name: str) -> dict[str, Any]:
    doc = _deployment(name, 1)
    doc["kind"] = "DaemonSet"
    del doc["spec"]["replicas"]
    return doc


def _pdb(name: str, app: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": app}}, **spec},
    }


def _pods(emu: KubeApiEmulator, app: str) -> list[dict[str, Any]]:
    return [p for p in emu.list("v1", "Pod", "default")
            if (p["metadata"].get("labels") or {}).get("app") == app]


def _wait_ready(emu: KubeApiEmulator, app: str, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        emu.reconcile()
        pods = _pods(emu, app)
        ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in p["status"].get("conditions") or [])]
        if len(pods) == count and len(ready) == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{app}: not {count} Ready pods: {_pods(emu, app)}")


def test_pods_run_on_nodes_and_cordon_uncordon(emulator: KubeApiEmulator, kubectl: Kubectl) -> None:
    _apply(kubectl, _deployment("web", 3), _daemonset("agent"))
    _wait_ready(emulator, "web", 3)
    _wait_ready(emulator, "agent", 3)
    wide = kubectl("get", "pods", "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    lines = wide.stdout.splitlines()
    assert lines[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    web_nodes = sorted(line.split()[6] for line in lines[1:] if line.startswith("web-"))
    assert web_nodes == list(NODES)  # spread: one per node
    assert all("Running" in line and "1/1" in line for line in lines[1:])

    out = kubectl("cordon", "w1")
    assert out.returncode == 0 and "node/w1 cordoned" in out.stdout
    emulator.reconcile()  # the node lifecycle controller's pass after the patch
    node = emulator.get("v1", "Node", "w1")
    assert node is not None and node["spec"]["unschedulable"] is True
    assert {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"} in node["spec"][
        "taints"]
    assert "SchedulingDisabled" in kubectl("get", "node", "w1").stdout
    # a scale-up never lands on the cordoned node; the DaemonSet pod stays
    scaled = kubectl("scale", "deployment/web", "--replicas=5")
    assert scaled.returncode == 0 and "deployment.apps/web scaled" in scaled.stdout, scaled.stderr
    _wait_ready(emulator, "web", 5)
    assert sum(p["spec"]["nodeName"] == "w1" for p in _pods(emulator, "web")) == 1
    assert "default/" in " ".join(emulator.pods_on("w1"))
    assert kubectl("uncordon", "w1").returncode == 0
    emulator.reconcile()
    node = emulator.get("v1", "Node", "w1")
    assert node is not None and not node["spec"].get("unschedulable")
    assert not any(t["key"] == "node.kubernetes.io/unschedulable"
                   for t in node["spec"].get("taints") or [])


def test_drain_evicts_and_controllers_recreate_elsewhere(
    emulator: KubeApiEmulator, kubectl: Kubectl
) -> None:
    _apply(kubectl, _deployment("web", 3), _daemonset("agent"),
           _pdb("web", "web", maxUnavailable=1))
    _apply(kubectl, {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "c", "image": "postgres:17"}]}}},
    })
    _wait_ready(emulator, "web", 3)
    _wait_ready(emulator, "db", 2)
    on_w1 = {p["metadata"]["name"] for p in emulator.list("v1", "Pod", "default")
             if p["spec"]["nodeName"] == "w1"}
    out = kubectl("drain", "w1", "--ignore-daemonsets", "--delete-emptydir-data",
                  "--timeout=30s")
    assert out.returncode == 0, out.stderr
    assert "node/w1 drained" in out.stdout
    assert "evicted" in out.stdout
    left = [p for p in emulator.list("v1", "Pod", "default") if p["spec"]["nodeName"] == "w1"]
    assert [p["metadata"]["labels"]["app"] for p in left] == ["agent"]  # DaemonSet pod ignored
    _wait_ready(emulator, "web", 3)
    _wait_ready(emulator, "db", 2)
    moved = _pods(emulator, "web") + _pods(emulator, "db")
    assert all(p["spec"]["nodeName"] != "w1" for p in moved)
    # the StatefulSet pod came back under its own name on another node
    assert {p["metadata"]["name"] for p in _pods(emulator, "db")} == {"db-0", "db-1"}
    assert on_w1 & {"db-0", "db-1"} <= {p["metadata"]["name"] for p in _pods(emulator, "db")}


def test_drain_refused_by_a_zero_budget(emulator: KubeApiEmulator, kubectl: Kubectl) -> None:
    emulator.guard_node("w2")
    deadline = time.monotonic() + 5
    while not any(n.startswith("default/drain-guard-") for n in emulator.pods_on("w2")):
        assert time.monotonic() < deadline
        emulator.reconcile()
        time.sleep(0.05)
    time.sleep(0.1)
    out = kubectl("drain", "w2", "--ignore-daemonsets", "--delete-emptydir-data",
                  "--timeout=2s")
    assert out.returncode != 0
    assert REFUSED in out.stderr
    node = emulator.get("v1", "Node", "w2")
    assert node is not None and node["spec"]["unschedulable"] is True  # cordoned first
    # the 429 as the official client sees it: the cause names the PDB
    pod = next(n.split("/", 1)[1] for n in emulator.pods_on("w2") if "drain-guard" in n)
    api = api_client(emulator.kubeconfig())
    try:
        with pytest.raises(ApiException) as info:
            client.CoreV1Api(api).create_namespaced_pod_eviction(
                pod, "default",
                client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace="default")))
    finally:
        api.close()
    assert info.value.status == 429
    body = json.loads(info.value.body or "{}")
    assert body["reason"] == "TooManyRequests" and body["message"] == REFUSED
    assert body["details"]["causes"] == [{
        "reason": "DisruptionBudget",
        "message": "The disruption budget drain-guard needs 1 healthy pods and has 1 currently",
    }]


@pytest.mark.parametrize(("policy", "drains"), [("AlwaysAllow", True), ("IfHealthyBudget", False)])
def test_unhealthy_pod_eviction_policy_with_kubectl_drain(
    emulator: KubeApiEmulator, kubectl: Kubectl, policy: str, drains: bool
) -> None:
    dep = _deployment("api", 2)
    dep["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "w3"}
    _apply(kubectl, dep, _pdb("api", "api", maxUnavailable=0, unhealthyPodEvictionPolicy=policy))
    _wait_ready(emulator, "api", 2)
    sick = _pods(emulator, "api")[0]["metadata"]["name"]
    emulator.set_pod_ready("default", sick, False)
    # one pod unhealthy: currentHealthy 1 < desiredHealthy 2
    pdb = emulator.get("policy/v1", "PodDisruptionBudget", "api", "default")
    assert pdb is not None and pdb["status"]["currentHealthy"] == 1
    out = kubectl("drain", "w3", "--ignore-daemonsets", "--delete-emptydir-data",
                  "--timeout=2s", "--pod-selector=app=api")
    assert REFUSED in out.stderr  # the healthy pod is always protected by maxUnavailable 0
    names = {p["metadata"]["name"] for p in _pods(emulator, "api")}
    assert (sick not in names) is drains
    if drains:
        assert f"pod/{sick} evicted" in out.stdout


def test_linstor_resources_through_the_service_proxy(
    emulator: KubeApiEmulator, kubectl: Kubectl
) -> None:
    path = ("/api/v1/namespaces/piraeus-datastore/services/linstor-controller:3370/proxy"
            "/v1/view/resources")
    before = kubectl("get", "--raw", path)
    assert before.returncode != 0 and 'services "linstor-controller" not found' in before.stderr
    emulator.start_linstor()
    seeded = json.loads(kubectl("get", "--raw", path).stdout)
    assert len(seeded) == 4 and {r["volumes"][0]["state"]["disk_state"] for r in seeded} == {
        "UpToDate"}
    emulator.add_storage_resource("pvc-data", {"w1": "UpToDate", "w2": "UpToDate",
                                               "w3": "TieBreaker"})
    emulator.degrade_storage("pvc-data", node="w1")
    view = json.loads(kubectl("get", "--raw", path + "?resources=pvc-data").stdout)
    by_node = {r["node_name"]: r for r in view}
    assert {n: r["volumes"][0]["state"]["disk_state"] for n, r in by_node.items()} == {
        "w1": "UpToDate", "w2": "Outdated", "w3": "Diskless"}
    assert "TIE_BREAKER" in by_node["w3"]["flags"] and by_node["w1"]["flags"] == []
    assert set(by_node["w1"]) >= {"name", "node_name", "flags", "state", "volumes", "uuid"}
    assert by_node["w1"]["state"] == {"in_use": False}
    one = json.loads(kubectl(
        "get", "--raw",
        "/api/v1/namespaces/piraeus-datastore/services/linstor-controller:api/proxy"
        "/v1/resource-definitions/pvc-data/resources").stdout)
    assert len(one) == 3
    missing = kubectl("get", "--raw", "/api/v1/namespaces/piraeus-datastore/services/"
                      "linstor-controller:3370/proxy/v1/resource-definitions/nope/resources")
    assert missing.returncode != 0
