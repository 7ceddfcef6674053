"""The emulator's controllers, driven with an explicit clock (no sockets, no sleeping)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloudctl.contracts import validate_values
from cloudctl.emulate.kube_reconcile import Controllers, Failure, is_ready
from cloudctl.emulate.kube_store import Store
from cloudctl.emulate.kube_types import ResourceType
from cloudctl.kube.objects import parse_manifests
from cloudctl.resources import read_text


def _rt(store: Store, api_version: str, kind: str) -> ResourceType:
    rt = store.type_of(api_version, kind)
    assert rt is not None
    return rt


def _apply(store: Store, obj: dict[str, Any]) -> None:
    rt = _rt(store, obj["apiVersion"], obj["kind"])
    meta = obj["metadata"]
    store.apply(rt, meta.get("namespace"), meta["name"], obj, manager="t", force=True)


def _get(store: Store, api_version: str, kind: str, name: str, ns: str | None) -> dict[str, Any]:
    return store.get(_rt(store, api_version, kind), ns, name)


def _cond(obj: dict[str, Any], ctype: str = "Ready") -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == ctype)


def _release(name: str, deps: list[str], chart: str | None = None, values: Any = None) -> dict:
    spec: dict[str, Any] = {
        "interval": "10m",
        "chart": {
            "spec": {
                "chart": chart or name,
                "version": "1.0.0",
                "sourceRef": {"kind": "HelmRepository", "name": "charts"},
            }
        },
        "dependsOn": [{"name": d} for d in deps],
    }
    if values is not None:
        spec["values"] = values
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def flux_docs() -> list[dict[str, Any]]:
    return parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"), source="gotk")


@pytest.fixture
def cluster(flux_docs: list[dict[str, Any]]) -> tuple[Store, Controllers]:
    store = Store()
    ctl = Controllers(store, crd_delay=1.0)
    for doc in flux_docs:
        if doc["kind"] in ("Namespace", "CustomResourceDefinition"):
            _apply(store, doc)
    ctl.reconcile(0.0)
    assert store.type_of("helm.toolkit.fluxcd.io/v2", "HelmRelease") is None  # not yet
    ctl.reconcile(1.0)
    crd = _get(
        store,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "helmreleases.helm.toolkit.fluxcd.io",
        None,
    )
    assert _cond(crd, "Established")["status"] == "True"
    _apply(
        store,
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "HelmRepository",
            "metadata": {"name": "charts", "namespace": "flux-system"},
            "spec": {"url": "https://charts.example.org", "interval": "1h"},
        },
    )
    return store, ctl


def test_releases_become_ready_in_dependency_order(cluster: tuple[Store, Controllers]) -> None:
    store, ctl = cluster
    ctl.release_delay = 2.0
    ctl.release_delays["kube-ovn"] = 5.0
    for rel in (
        _release("cert-manager", ["kube-ovn"]),
        _release("kube-ovn", ["cilium"]),
        _release("cilium", []),
    ):
        _apply(store, rel)
    hr = "helm.toolkit.fluxcd.io/v2"

    def state(t: float) -> dict[str, tuple[str, str]]:
        ctl.reconcile(t)
        out = {}
        for name in ("cilium", "kube-ovn", "cert-manager"):
            c = _cond(_get(store, hr, "HelmRelease", name, "flux-system"))
            out[name] = (c["status"], c["reason"])
        return out

    s = state(10.0)
    assert s["cilium"] == ("Unknown", "Progressing")
    assert s["kube-ovn"] == ("False", "DependencyNotReady")
    assert s["cert-manager"] == ("False", "DependencyNotReady")
    msg = _cond(_get(store, hr, "HelmRelease", "kube-ovn", "flux-system"))["message"]
    assert msg == "dependency 'flux-system/cilium' is not ready"
    assert state(12.0)["cilium"] == ("True", "InstallSucceeded")
    s = state(12.5)
    assert s["kube-ovn"] == ("Unknown", "Progressing")  # its 5 s start once cilium is Ready
    assert state(17.0)["kube-ovn"] == ("Unknown", "Progressing")
    assert state(17.6)["kube-ovn"] == ("True", "InstallSucceeded")
    assert state(17.7)["cert-manager"] == ("Unknown", "Progressing")
    assert state(19.8)["cert-manager"] == ("True", "InstallSucceeded")
    cilium = _get(store, hr, "HelmRelease", "cilium", "flux-system")
    assert cilium["status"]["history"][0]["chartVersion"] == "1.0.0"
    assert cilium["status"]["observedGeneration"] == cilium["metadata"]["generation"]


def test_missing_source_is_reported_not_faked(cluster: tuple[Store, Controllers]) -> None:
    store, ctl = cluster
    rel = _release("cilium", [])
    rel["spec"]["chart"]["spec"]["sourceRef"]["name"] = "absent"
    _apply(store, rel)
    ctl.reconcile(5.0)
    cond = _cond(_get(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease", "cilium", "flux-system"))
    assert (cond["status"], cond["reason"]) == ("False", "ArtifactFailed")
    assert "HelmRepository 'flux-system/absent' not found" in cond["message"]


def test_values_failing_the_chart_schema_are_install_failed(
    cluster: tuple[Store, Controllers],
) -> None:
    store, ctl = cluster
    schema = json.loads(read_text("helm-values", "_upstream/cilium/1.19.6/values.schema.json"))
    ctl.values_validators["cilium"] = lambda values, _version: validate_values(values, schema)
    _apply(store, _release("cilium", [], values={"kubeProxyReplacement": 7}))
    ctl.reconcile(1.0)
    obj = _get(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease", "cilium", "flux-system")
    cond = _cond(obj)
    assert (cond["status"], cond["reason"]) == ("False", "InstallFailed")
    assert "values don't meet the specifications of the schema" in cond["message"]
    assert "kubeProxyReplacement" in cond["message"]
    assert _cond(obj, "Stalled")["status"] == "True"

    _apply(store, _release("cilium", [], values={"kubeProxyReplacement": True}))
    ctl.reconcile(2.0)
    cond = _cond(_get(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease", "cilium", "flux-system"))
    assert (cond["status"], cond["reason"]) == ("True", "InstallSucceeded")


def test_injected_failure_applies_after_dependencies(cluster: tuple[Store, Controllers]) -> None:
    store, ctl = cluster
    ctl.failures["kube-ovn"] = Failure("InstallFailed", "Helm install failed: boom")
    _apply(store, _release("cilium", []))
    _apply(store, _release("kube-ovn", ["cilium"]))
    ctl.reconcile(1.0)
    ctl.reconcile(1.1)
    cond = _cond(_get(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease", "kube-ovn", "flux-system"))
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "False",
        "InstallFailed",
        "Helm install failed: boom",
    )


def test_infinite_remediation_retries_never_stall(cluster: tuple[Store, Controllers]) -> None:
    store, ctl = cluster
    ctl.failures["cilium"] = Failure("InstallFailed", "Helm install failed: boom")
    rel = _release("cilium", [])
    rel["spec"]["install"] = {"remediation": {"retries": -1}}
    _apply(store, rel)
    ctl.reconcile(1.0)
    obj = _get(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease", "cilium", "flux-system")
    assert _cond(obj)["reason"] == "InstallFailed"
    assert all(c["type"] != "Stalled" for c in obj["status"]["conditions"])
    del ctl.failures["cilium"]  # the next attempt succeeds
    ctl.reconcile(2.0)
    assert is_ready(
        _get(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease", "cilium", "flux-system")
    )


def test_gitops_sync_objects_become_ready(cluster: tuple[Store, Controllers]) -> None:
    store, ctl = cluster
    ks = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "platform", "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "path": "./gitops/platform",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "platform"},
        },
    }
    _apply(store, ks)
    ctl.reconcile(1.0)
    cond = _cond(
        _get(store, "kustomize.toolkit.fluxcd.io/v1", "Kustomization", "platform", "flux-system")
    )
    assert (cond["status"], cond["reason"]) == ("False", "ArtifactFailed")
    _apply(
        store,
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "platform", "namespace": "flux-system"},
            "spec": {
                "url": "https://git.example.org/p.git",
                "interval": "1m",
                "ref": {"branch": "main"},
            },
        },
    )
    ctl.reconcile(2.0)
    git = _get(store, "source.toolkit.fluxcd.io/v1", "GitRepository", "platform", "flux-system")
    assert is_ready(git) and git["status"]["artifact"]["revision"].startswith("main@sha1:")
    cond = _cond(
        _get(store, "kustomize.toolkit.fluxcd.io/v1", "Kustomization", "platform", "flux-system")
    )
    assert (cond["status"], cond["reason"]) == ("True", "ReconciliationSucceeded")
    assert git["status"]["artifact"]["revision"] in cond["message"]


def test_values_from_configmap(cluster: tuple[Store, Controllers]) -> None:
    store, ctl = cluster
    seen: list[Any] = []
    ctl.values_validators["app"] = lambda values, _version: seen.append(dict(values)) or []
    rel = _release("app", [])
    rel["spec"]["valuesFrom"] = [{"kind": "ConfigMap", "name": "app-values"}]
    rel["spec"]["values"] = {"b": 2}
    _apply(store, rel)
    ctl.reconcile(1.0)
    cond = _cond(_get(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease", "app", "flux-system"))
    assert (cond["reason"], "flux-system/app-values" in cond["message"]) == ("InitFailed", True)
    _apply(
        store,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app-values", "namespace": "flux-system"},
            "data": {"values.yaml": "a: 1\nb: 1\n"},
        },
    )
    ctl.reconcile(2.0)
    assert is_ready(_get(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease", "app", "flux-system"))
    assert seen[-1] == {"a": 1, "b": 2}


def test_workloads_and_nodes(cluster: tuple[Store, Controllers]) -> None:
    store, ctl = cluster
    ctl.workload_delay = 1.0
    for doc in parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"), source="x"):
        if doc["kind"] == "Deployment":
            _apply(store, doc)
    node = _rt(store, "v1", "Node")
    store.create(
        node,
        None,
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cp1"}},
        manager="kubelet",
    )
    ctl.reconcile(0.0)
    dep = _get(store, "apps/v1", "Deployment", "helm-controller", "flux-system")
    assert _cond(dep, "Available")["status"] == "False"
    n = _get(store, "v1", "Node", "cp1", None)
    assert _cond(n)["status"] == "False" and "cni plugin not initialized" in _cond(n)["message"]
    assert n["spec"]["taints"] == [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]
    ctl.reconcile(1.0)
    dep = _get(store, "apps/v1", "Deployment", "helm-controller", "flux-system")
    assert _cond(dep, "Available")["status"] == "True"
    assert dep["status"]["availableReplicas"] == dep["spec"].get("replicas", 1)

    _apply(store, _release("cilium", []))
    ctl.reconcile(2.0)
    ctl.reconcile(2.1)
    n = _get(store, "v1", "Node", "cp1", None)
    assert _cond(n)["status"] == "True" and "taints" not in n["spec"]
