"""The Kubernetes API emulator in the hands of clients it does not know: the real kubectl (v1.35
in CI) in its default mode and the official Python client's ``watch.Watch``. Watches
(``get -w``, ``wait``, ``rollout status``), printed Tables, Events, ``describe``, ``auth``,
pagination; and cloudctl's own waits watching instead of polling.

kubectl is required in CI (``CI=true``: a missing kubectl fails); elsewhere these tests skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from cloudctl.emulate.kube_api import KubeApiEmulator
from cloudctl.errors import PlatformError
from cloudctl.kube import (
    Kube,
    ObjectRef,
    api_client,
    apply_manifests,
    parse_manifests,
    wait_helmreleases,
    wait_workloads,
)
from cloudctl.resources import read_text

KUBECTL = shutil.which("kubectl") or "/usr/local/bin/kubectl"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def kubectl_bin() -> str:
    if not os.access(KUBECTL, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"kubectl is required in CI (not at {KUBECTL}; .ci/run installs it)")
        pytest.skip(f"kubectl not found at {KUBECTL}; CI installs it (.ci/run)")
    return KUBECTL


@pytest.fixture
def emulator() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator(workload_delay=0.5) as emu:
        emu.add_node("w1", "10.0.0.11", roles=("control-plane",))
        yield emu


@pytest.fixture
def kubeconfig(emulator: KubeApiEmulator, tmp_path: Path) -> Path:
    config = tmp_path / "kubeconfig"
    config.write_bytes(emulator.kubeconfig())
    config.chmod(0o600)
    return config


@pytest.fixture
def kubectl(kubectl_bin: str, kubeconfig: Path, tmp_path: Path) -> Kubectl:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}

    def run(*args: str, stdin: str | None = None, timeout: float = 60) -> Any:
        return subprocess.run([kubectl_bin, *args], env=env, input=stdin, capture_output=True,
                              text=True, timeout=timeout, check=False)

    run.env = env  # type: ignore[attr-defined]
    return run


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
    }


def _create(emulator: KubeApiEmulator, obj: dict[str, Any]) -> None:
    api = emulator.api
    rt = api.store.type_of(obj["apiVersion"], obj["kind"])
    assert rt is not None
    with emulator.lock:
        api.store.create(rt, obj["metadata"].get("namespace"), obj, manager="test")


# --------------------------------------------------------------------------- watches


def test_kubectl_get_watch_streams_changes(emulator: KubeApiEmulator, kubectl: Kubectl,
                                           kubectl_bin: str) -> None:
    proc = subprocess.Popen(
        [kubectl_bin, "get", "configmaps", "-w", "--output-watch-events", "-l", "app=web"],
        env=kubectl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # type: ignore[attr-defined]
        text=True)
    try:
        deadline = time.monotonic() + 20
        while emulator.open_watches == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # until kubectl listed and watches
        assert emulator.open_watches == 1, "kubectl get -w did not start watching"
        for name, app in (("one", "web"), ("two", "db")):
            _create(emulator, {"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": name, "namespace": "default",
                                            "labels": {"app": app}}})
        rt = emulator.store.type_of("v1", "ConfigMap")
        assert rt is not None
        with emulator.lock:
            emulator.store.delete(rt, "default", "one")
        time.sleep(1.5)  # kubectl prints the events
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    lines = [line.split()[:2] for line in out.splitlines()]
    assert ["EVENT", "NAME"] in lines, (out, err)
    assert ["ADDED", "one"] in lines and ["DELETED", "one"] in lines, (out, err)
    assert not any(line[1:] == ["two"] for line in lines), out  # not selected


def test_kubectl_rollout_status_and_wait(emulator: KubeApiEmulator, kubectl: Kubectl) -> None:
    """``rollout status`` (a watch from a list) and ``wait`` (client-go's watch-list:
    sendInitialEvents) end as the Deployment rolls out — driven by the controllers' due
    times, without any other request."""
    _create(emulator, _deployment("web", 2))
    started = time.monotonic()
    out = kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    assert out.returncode == 0, out.stderr
    assert 'deployment "web" successfully rolled out' in out.stdout
    assert time.monotonic() - started < 10
    out = kubectl("wait", "--for=condition=Available", "deployment/web", "--timeout=20s")
    assert out.returncode == 0, out.stderr
    assert "deployment.apps/web condition met" in out.stdout
    out = kubectl("wait", "--for=condition=Ready", "node/w1", "--timeout=1s")
    assert out.returncode == 1  # no CNI release: the node stays NotReady
    assert "timed out waiting for the condition on nodes/w1" in out.stderr
    out = kubectl("wait", "--for=delete", "configmap/absent", "--timeout=2s")
    assert out.returncode == 0, out.stderr


def test_official_client_watch_stream(emulator: KubeApiEmulator) -> None:
    with api_client(emulator.kubeconfig()) as api:
        v1 = client.CoreV1Api(api)

        def writes() -> None:
            time.sleep(0.3)
            v1.create_namespaced_config_map("default", client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="a", labels={"x": "1"}), data={"k": "v"}))
            v1.patch_namespaced_config_map("a", "default", {"data": {"k": "w"}})
            v1.delete_namespaced_config_map("a", "default")

        writer = threading.Thread(target=writes)
        writer.start()
        seen = []
        w = watch.Watch()
        for event in w.stream(v1.list_namespaced_config_map, "default", timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                w.stop()
        writer.join()
        assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
        # a version older than the kept history: 410 Expired (the client retries once)
        emulator.store.history_size = 2
        for i in range(4):
            v1.create_namespaced_config_map(
                "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"h{i}")))
        with pytest.raises(ApiException) as exc:
            for _ in watch.Watch().stream(v1.list_namespaced_config_map, "default",
                                          resource_version="1", timeout_seconds=5):
                pass
        assert exc.value.status == 410 and "too old resource version" in str(exc.value.reason)


def test_stop_ends_open_watches(emulator: KubeApiEmulator) -> None:
    with api_client(emulator.kubeconfig()) as api:
        v1 = client.CoreV1Api(api)
        ended = threading.Event()

        def watching() -> None:
            for _ in watch.Watch().stream(v1.list_namespaced_config_map, "default",
                                          resource_version=emulator.store.resource_version,
                                          timeout_seconds=600):
                pass
            ended.set()

        thread = threading.Thread(target=watching, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while emulator.open_watches == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert emulator.open_watches == 1
        started = time.monotonic()
        emulator.stop()
        assert time.monotonic() - started < 3
        assert ended.wait(5) and emulator.open_watches == 0


def test_cloudctl_waits_watch_instead_of_polling(emulator: KubeApiEmulator) -> None:
    """A wait for a Deployment that rolls out after 0.5 s sends a handful of requests (look,
    watch, look again), not one per ``interval``; a watch that fails falls back to polling."""
    _create(emulator, _deployment("web", 1))
    ref = ObjectRef("apps/v1", "Deployment", "web", "default")
    with Kube.from_kubeconfig(emulator.kubeconfig()) as kube:
        before = emulator.api.requests["GET"]
        started = time.monotonic()
        (done,) = wait_workloads(kube, [ref], timeout=20, interval=0.01)
        assert done.ready and time.monotonic() - started < 5
        assert emulator.api.requests["GET"] - before < 20
        assert emulator.open_watches <= 1


def test_kubectl_reads_pages(emulator: KubeApiEmulator, kubectl: Kubectl) -> None:
    for i in range(7):
        _create(emulator, {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": f"cm-{i}", "namespace": "default"}})
    out = kubectl("get", "configmaps", "--chunk-size=3", "-o", "name")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"configmap/cm-{i}" for i in range(7)]
    page = json.loads(kubectl("get", "--raw",
                              "/api/v1/namespaces/default/configmaps?limit=3").stdout)
    assert len(page["items"]) == 3 and page["metadata"]["remainingItemCount"] == 4
    token = page["metadata"]["continue"]
    rest = json.loads(kubectl("get", "--raw", "/api/v1/namespaces/default/configmaps?limit=10&"
                              f"continue={token}").stdout)
    assert [i["metadata"]["name"] for i in rest["items"]] == [f"cm-{i}" for i in range(3, 7)]
    assert "continue" not in rest["metadata"] or not rest["metadata"]["continue"]


# --------------------------------------------------------------------------- Tables


def _flux_release(emulator: KubeApiEmulator, name: str = "cilium") -> None:
    docs = parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"), source="gotk")
    wanted = ("helmreleases.helm.toolkit.fluxcd.io", "helmrepositories.source.toolkit.fluxcd.io")
    with Kube.from_kubeconfig(emulator.kubeconfig()) as kube:
        apply_manifests(kube, [d for d in docs if d["kind"] == "Namespace"
                               or d["metadata"]["name"] in wanted])
        apply_manifests(kube, [
            {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
             "metadata": {"name": "charts", "namespace": "flux-system"},
             "spec": {"url": "https://charts.example.org", "interval": "1h"}},
            {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
             "metadata": {"name": name, "namespace": "flux-system"},
             "spec": {"interval": "10m", "chart": {"spec": {
                 "chart": name, "version": "1.0.0",
                 "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}},
        ])
        wait_helmreleases(kube, names=[name], timeout=20)


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_kubectl_get_prints_the_servers_columns(emulator: KubeApiEmulator,
                                                kubectl: Kubectl) -> None:
    _flux_release(emulator)
    out = kubectl("get", "hr", "-A")
    assert out.returncode == 0, out.stderr
    head, row = out.stdout.splitlines()[:2]
    assert head.split() == ["NAMESPACE", "NAME", "AGE", "READY", "STATUS"]
    assert row.split()[:4] == ["flux-system", "cilium", row.split()[2], "True"]
    assert "Helm install succeeded for release flux-system/cilium" in row
    nodes = _rows(kubectl("get", "nodes", "-o", "wide").stdout)
    assert nodes[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP",
                        "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    assert nodes[1][:3] == ["w1", "Ready", "control-plane"] and "10.0.0.11" in nodes[1]
    namespaces = _rows(kubectl("get", "namespaces").stdout)
    assert namespaces[0] == ["NAME", "STATUS", "AGE"]
    assert ["default", "Active"] in [r[:2] for r in namespaces]
    _create(emulator, _deployment("web", 2))
    out = kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    assert out.returncode == 0, out.stderr
    deploys = _rows(kubectl("get", "deployments", "-o", "wide").stdout)
    assert deploys[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS",
                          "IMAGES", "SELECTOR"]
    assert deploys[1][:4] == ["web", "2/2", "2", "2"]
    assert deploys[1][5:] == ["c", "nginx:1.27", "app=web"]
    pods = _rows(kubectl("get", "pods", "-o", "wide").stdout)
    assert pods[0][:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert all(p[1:3] == ["1/1", "Running"] and "w1" in p for p in pods[1:]) and len(pods) == 3
    # the scale subresource with kubectl's defaults
    out = kubectl("scale", "deployment/web", "--replicas=3")
    assert out.returncode == 0, out.stderr
    assert "deployment.apps/web scaled" in out.stdout
    out = kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    assert out.returncode == 0, out.stderr
    assert _rows(kubectl("get", "deployment", "web").stdout)[1][1] == "3/3"


# --------------------------------------------------------------------------- Events, describe


def test_events_in_get_events_and_describe(emulator: KubeApiEmulator, kubectl: Kubectl) -> None:
    emulator.fail_release("bad", "InstallFailed", "chart hook failed: boom")
    _flux_release(emulator)  # cilium: the CNI, the node turns Ready
    with pytest.raises(PlatformError):
        _flux_release(emulator, "bad")
    _create(emulator, _deployment("web", 2))
    assert kubectl("rollout", "status", "deployment/web", "--timeout=20s").returncode == 0
    out = kubectl("get", "events", "-A")
    assert out.returncode == 0, out.stderr
    rows = _rows(out.stdout)
    assert rows[0] == ["NAMESPACE", "LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    seen = {(r[2], r[3], r[4]) for r in rows[1:]}
    assert ("Normal", "NodeReady", "node/w1") in seen
    assert ("Normal", "InstallSucceeded", "helmrelease/cilium") in seen
    assert ("Warning", "InstallFailed", "helmrelease/bad") in seen
    assert ("Normal", "ScalingReplicaSet", "deployment/web") in seen
    assert kubectl("get", "events.v1.events.k8s.io", "-n", "flux-system",
                   "-o", "name").stdout.count("event.events.k8s.io/") >= 2

    node = kubectl("describe", "node", "w1")
    assert node.returncode == 0, node.stderr
    events = node.stdout.split("Events:", 1)[1]
    assert "NodeReady" in events and "kubelet" in events
    assert "Node w1 status is now: NodeReady" in events
    assert "Non-terminated Pods:" in node.stdout and "web-" in node.stdout
    hr = kubectl("describe", "helmrelease", "bad", "-n", "flux-system")
    assert hr.returncode == 0, hr.stderr
    tail = hr.stdout.split("Events:", 1)[1]
    assert "Warning  InstallFailed" in tail and "helm-controller" in tail
    assert "chart hook failed: boom" in tail
    dep = kubectl("describe", "deployment", "web")
    assert "Scaled up replica set web-" in dep.stdout.split("Events:", 1)[1]
    out = kubectl("events", "--for", "deployment/web")  # involvedObject.apiVersion=apps/v1
    assert out.returncode == 0, out.stderr
    assert "ScalingReplicaSet" in out.stdout and "Deployment/web" in out.stdout
    bad = kubectl("get", "pods", "--field-selector", "involvedObject.name=x")
    assert bad.returncode != 0 and "field label not supported: involvedObject.name" in bad.stderr


# --------------------------------------------------------------------------- auth


def test_kubectl_auth_can_i_and_whoami(emulator: KubeApiEmulator, kubectl: Kubectl) -> None:
    out = kubectl("auth", "whoami")
    assert out.returncode == 0, out.stderr
    assert _rows(out.stdout) == [["ATTRIBUTE", "VALUE"], ["Username", "admin"],
                                 ["Groups", "[system:masters", "system:authenticated]"]]
    for args in (("create", "deployments"), ("delete", "nodes"), ("get", "/healthz"),
                 ("create", "helmreleases.helm.toolkit.fluxcd.io", "-n", "flux-system")):
        out = kubectl("auth", "can-i", *args)
        assert (out.returncode, out.stdout.strip()) == (0, "yes"), (args, out.stderr)
    rbac = "rbac.authorization.k8s.io/v1"
    for obj in (
        {"apiVersion": rbac, "kind": "Role",
         "metadata": {"name": "cm-reader", "namespace": "default"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]},
        {"apiVersion": rbac, "kind": "RoleBinding",
         "metadata": {"name": "bob-reads", "namespace": "default"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "cm-reader"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": "bob"}]},
    ):
        _create(emulator, obj)
    out = kubectl("auth", "can-i", "list", "configmaps", "--as=bob")
    assert (out.returncode, out.stdout.strip()) == (0, "yes"), out.stderr
    out = kubectl("auth", "can-i", "delete", "configmaps", "--as=bob")
    assert (out.returncode, out.stdout.strip()) == (1, "no"), out.stderr
    out = kubectl("auth", "can-i", "list", "configmaps", "--as=bob", "-n", "kube-system")
    assert out.stdout.strip() == "no"
    out = kubectl("auth", "whoami", "--as=bob", "--as-group=dev", "-o", "json")
    assert json.loads(out.stdout)["status"]["userInfo"] == {
        "username": "bob", "groups": ["dev", "system:authenticated"]}
    listed = kubectl("auth", "can-i", "--list", "--as=bob")
    assert listed.returncode == 0, listed.stderr
    assert ["configmaps", "[]", "[]", "[get", "list]"] in _rows(listed.stdout)
