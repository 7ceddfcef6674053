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
        "Helm install failed for release flux-system/kube-ovn with chart kube-ovn@1.0.0: "
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
    # a kubelet registers with these labels; Flux's pods select kubernetes.io/os=linux
    labels = {"kubernetes.io/os": "linux", "kubernetes.io/hostname": "cp1"}
    store.create(
        node,
        None,
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cp1", "labels": labels}},
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


def _hr(store: Store, name: str) -> dict[str, Any]:
    return _get(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease", name, "flux-system")


def test_release_fails_n_times_then_succeeds_with_retries_forever(
    cluster: tuple[Store, Controllers],
) -> None:
    """helm-controller with remediation.retries -1: each failure is counted in
    status.installFailures, the next attempt comes after the retry interval, never Stalled."""
    store, ctl = cluster
    ctl.retry_interval = 0.5
    ctl.failures["cilium"] = Failure("", "context deadline exceeded", times=2)
    rel = _release("cilium", [])
    rel["spec"]["install"] = {"remediation": {"retries": -1}}
    _apply(store, rel)
    ctl.reconcile(1.0)  # attempt 1 fails
    obj = _hr(store, "cilium")
    ready, released = _cond(obj), _cond(obj, "Released")
    message = (
        "Helm install failed for release flux-system/cilium with chart cilium@1.0.0: "
        "context deadline exceeded"
    )
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "InstallFailed", message)
    assert (released["status"], released["reason"]) == ("False", "InstallFailed")
    assert obj["status"]["installFailures"] == 1 and obj["status"]["failures"] == 1
    assert obj["status"]["lastAttemptedReleaseAction"] == "install"
    assert all(c["type"] != "Stalled" for c in obj["status"]["conditions"])
    ctl.reconcile(1.3)  # within the retry interval: nothing happens
    assert _hr(store, "cilium")["status"]["installFailures"] == 1
    ctl.reconcile(1.6)  # attempt 2 fails
    assert _hr(store, "cilium")["status"]["installFailures"] == 2
    ctl.reconcile(2.2)  # attempt 3 succeeds; the counters are reset
    obj = _hr(store, "cilium")
    assert is_ready(obj)
    assert _cond(obj)["reason"] == "InstallSucceeded"
    assert "installFailures" not in obj["status"] and "failures" not in obj["status"]
    assert obj["status"]["history"][0]["version"] == 1


def test_retries_exhausted_stall_with_retries_exceeded(cluster: tuple[Store, Controllers]) -> None:
    """retries: 1 allows two attempts; after the second failure Stalled=True RetriesExceeded and
    no further attempt, even though the injected fault would have healed."""
    store, ctl = cluster
    ctl.retry_interval = 0.1
    ctl.failures["cilium"] = Failure("", "boom", times=3)
    rel = _release("cilium", [])
    rel["spec"]["install"] = {"remediation": {"retries": 1}}
    _apply(store, rel)
    ctl.reconcile(1.0)
    assert "Stalled" not in {c["type"] for c in _hr(store, "cilium")["status"]["conditions"]}
    ctl.reconcile(1.2)
    obj = _hr(store, "cilium")
    stalled = _cond(obj, "Stalled")
    assert (stalled["status"], stalled["reason"], stalled["message"]) == (
        "True", "RetriesExceeded", "Failed to install after 2 attempt(s)")
    assert _cond(obj)["reason"] == "InstallFailed"
    assert obj["status"]["installFailures"] == 2
    for t in (1.5, 2.0, 5.0):
        ctl.reconcile(t)
    assert _hr(store, "cilium")["status"]["installFailures"] == 2  # stopped retrying
    # a new generation resets the counters and is attempted again (the 3rd injected failure)
    rel["spec"]["values"] = {"debug": {"enabled": True}}
    _apply(store, rel)
    ctl.reconcile(6.0)
    obj = _hr(store, "cilium")
    assert obj["status"]["installFailures"] == 1
    ctl.reconcile(6.2)
    assert is_ready(_hr(store, "cilium"))


def test_default_retries_zero_stall_after_first_failure(cluster: tuple[Store, Controllers]) -> None:
    store, ctl = cluster
    ctl.failures["cilium"] = Failure("ChartPullFailed", "pull failed")
    _apply(store, _release("cilium", []))
    ctl.reconcile(1.0)
    obj = _hr(store, "cilium")
    assert _cond(obj)["reason"] == "ChartPullFailed"
    assert _cond(obj, "Stalled")["message"] == "Failed to install after 1 attempt(s)"


def test_failed_upgrade_counts_upgrade_failures(cluster: tuple[Store, Controllers]) -> None:
    store, ctl = cluster
    rel = _release("cilium", [])
    rel["spec"]["upgrade"] = {"remediation": {"retries": -1}}
    _apply(store, rel)
    ctl.reconcile(1.0)
    assert is_ready(_hr(store, "cilium"))
    ctl.failures["cilium"] = Failure("", "timed out waiting for the condition", times=1)
    rel["spec"]["values"] = {"debug": {"enabled": True}}
    _apply(store, rel)
    ctl.reconcile(2.0)
    obj = _hr(store, "cilium")
    assert _cond(obj)["reason"] == "UpgradeFailed"
    assert _cond(obj)["message"].startswith("Helm upgrade failed for release flux-system/cilium")
    assert obj["status"]["upgradeFailures"] == 1 and "installFailures" not in obj["status"]
    ctl.reconcile(3.0)
    obj = _hr(store, "cilium")
    assert _cond(obj)["reason"] == "UpgradeSucceeded"
    assert [h["version"] for h in obj["status"]["history"]] == [2, 1]


def _operator_setup(store: Store, ctl: Controllers, operator: str, cr: str) -> None:
    docs = parse_manifests(read_text("flux", f"vendor/kubevirt/{operator}"), source=operator)
    for doc in docs:
        if doc["kind"] in ("Namespace", "CustomResourceDefinition"):
            _apply(store, doc)
    ctl.reconcile(10.0)
    ctl.reconcile(11.0)  # CRDs established
    for doc in docs:
        if doc["kind"] == "Deployment":
            _apply(store, doc)
    for doc in parse_manifests(read_text("flux", f"vendor/kubevirt/{cr}"), source=cr):
        _apply(store, doc)


def test_kubevirt_cr_deployed_once_virt_operator_is_available(
    cluster: tuple[Store, Controllers],
) -> None:
    store, ctl = cluster
    ctl.workload_delay, ctl.operator_delay = 1.0, 2.0
    _operator_setup(store, ctl, "kubevirt-operator-v1.8.4.yaml", "kubevirt-cr-v1.8.4.yaml")
    ctl.reconcile(12.0)  # virt-operator not available yet: nobody writes the CR's status
    kv = _get(store, "kubevirt.io/v1", "KubeVirt", "kubevirt", "kubevirt")
    assert "status" not in kv or not kv["status"]
    ctl.reconcile(13.0)  # operator available: deploying
    kv = _get(store, "kubevirt.io/v1", "KubeVirt", "kubevirt", "kubevirt")
    assert kv["status"]["phase"] == "Deploying"
    assert (_cond(kv, "Available")["status"], _cond(kv, "Progressing")["status"]) == (
        "False", "True")
    assert _cond(kv, "Available")["message"] == (
        "Deploying version v1.8.4 with registry quay.io/kubevirt")
    ctl.reconcile(15.0)
    kv = _get(store, "kubevirt.io/v1", "KubeVirt", "kubevirt", "kubevirt")
    st = kv["status"]
    assert st["phase"] == "Deployed"
    assert {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]} == {
        "Available": ("True", "AllComponentsReady"),
        "Progressing": ("False", "AllComponentsReady"),
        "Degraded": ("False", "AllComponentsReady"),
        "Created": ("True", "AllResourcesCreated"),
    }
    assert st["observedKubeVirtVersion"] == st["targetKubeVirtVersion"] == "v1.8.4"
    assert st["observedGeneration"] == kv["metadata"]["generation"]
    assert all("lastProbeTime" in c and "lastTransitionTime" in c for c in st["conditions"])


def test_cdi_cr_deployed_and_not_deployed_fault(cluster: tuple[Store, Controllers]) -> None:
    store, ctl = cluster
    _operator_setup(store, ctl, "cdi-operator-v1.66.0.yaml", "cdi-cr-v1.66.0.yaml")
    ctl.reconcile(12.0)
    ctl.reconcile(12.5)
    cdi = _get(store, "cdi.kubevirt.io/v1beta1", "CDI", "cdi", None)
    st = cdi["status"]
    assert st["phase"] == "Deployed"
    assert st["observedVersion"] == st["targetVersion"] == st["operatorVersion"] == "v1.66.0"
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Available": "True", "Progressing": "False", "Degraded": "False"}
    assert _cond(cdi, "Available")["reason"] == "DeployCompleted"


def test_component_not_deployed_fault_keeps_cr_deploying(
    cluster: tuple[Store, Controllers],
) -> None:
    store, ctl = cluster
    ctl.component_faults["kubevirt"] = Failure("ImagePullFailed", "virt-handler: ErrImagePull")
    _operator_setup(store, ctl, "kubevirt-operator-v1.8.4.yaml", "kubevirt-cr-v1.8.4.yaml")
    for t in (12.0, 13.0, 20.0, 60.0):
        ctl.reconcile(t)
    kv = _get(store, "kubevirt.io/v1", "KubeVirt", "kubevirt", "kubevirt")
    assert kv["status"]["phase"] == "Deploying"
    available, degraded = _cond(kv, "Available"), _cond(kv, "Degraded")
    assert (available["status"], available["reason"], available["message"]) == (
        "False", "ImagePullFailed", "virt-handler: ErrImagePull")
    assert (degraded["status"], degraded["reason"]) == ("True", "ImagePullFailed")
    assert "observedKubeVirtVersion" not in kv["status"]


def test_linstor_controller_service_once_the_linstor_release_is_ready(
    cluster: tuple[Store, Controllers],
) -> None:
    store, ctl = cluster
    for name in ("n1", "n2", "n3"):
        store.create(_rt(store, "v1", "Node"), None, {"metadata": {"name": name}},
                     manager="kubelet")
    release = _release("linstor", [], chart="linstor-cluster")
    release["spec"]["targetNamespace"] = "piraeus-datastore"
    _apply(store, release)
    ctl.reconcile(2.0)
    ctl.reconcile(2.1)
    assert is_ready(_hr(store, "linstor"))
    assert ctl.linstor_namespace == "piraeus-datastore"
    svc = _get(store, "v1", "Service", "linstor-controller", "piraeus-datastore")
    assert svc["spec"]["ports"] == [
        {"name": "api", "port": 3370, "targetPort": "api", "protocol": "TCP"}]
    view = ctl.storage.view()
    assert len(view) == 4 and {r["node_name"] for r in view} <= {"n1", "n2", "n3"}
