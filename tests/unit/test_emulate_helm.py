"""The emulated helm-controller installs charts it can read, rendered by the real helm binary.

Charts live in a real Git repository (``file://`` GitRepository, read by
``rack_gitops.GitChartLocator``); the controllers are driven with an explicit clock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.emulate.kube_helm import (
    MANAGER,
    HelmInstaller,
    find_helm,
    parse_manifest,
)
from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import Store
from cloudctl.emulate.kube_types import ResourceType
from cloudctl.emulate.rack_gitops import GitChartLocator
from cloudctl.kube.objects import parse_manifests
from cloudctl.render.gitops.localcharts import render_local_chart
from cloudctl.resources import read_text

HR_API = "helm.toolkit.fluxcd.io/v2"


@pytest.fixture(scope="module")
def helm_bin() -> str:
    helm, how = find_helm()
    if helm is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"helm is required in CI ({how})")
        pytest.skip(f"helm binary not found ({how}); CI installs it (.ci/run)")
    return helm


@pytest.fixture(scope="module")
def flux_docs() -> list[dict[str, Any]]:
    return parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"), source="gotk")


def _rt(store: Store, api_version: str, kind: str) -> ResourceType:
    rt = store.type_of(api_version, kind)
    assert rt is not None, (api_version, kind)
    return rt


def _apply(store: Store, obj: dict[str, Any], manager: str = "t") -> None:
    rt = _rt(store, obj["apiVersion"], obj["kind"])
    meta = obj["metadata"]
    store.apply(rt, meta.get("namespace"), meta["name"], obj, manager=manager, force=True)


def _get(store: Store, api_version: str, kind: str, name: str, ns: str | None) -> dict | None:
    rt = store.type_of(api_version, kind)
    if rt is None:
        return None
    stored = store.lookup(rt, ns, name)
    return None if stored is None else store.render(rt, stored)


def _hr(store: Store, name: str) -> dict[str, Any]:
    obj = _get(store, HR_API, "HelmRelease", name, "flux-system")
    assert obj is not None
    return obj


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        _git(path, "init", "-q", "-b", "main")

    def commit(self, files: dict[str, str]) -> None:
        for rel, text in files.items():
            p = self.path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        _git(self.path, "add", "-A")
        _git(self.path, "commit", "-q", "-m", "charts")

    # Flux's CRD admits http(s)/ssh URLs only: the GitRepository names a loopback HTTP URL
    # and git's url.<base>.insteadOf (set by the fixture) maps it onto this repository
    url = "http://127.0.0.1:9/platform.git"


CHART_YAML = "apiVersion: v2\nname: demo\nversion: 0.1.0\n"
WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.org
spec:
  group: example.org
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"""
TEMPLATES = {
    "charts/demo/templates/config.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | quote }}
  namespace: {{ .Release.Namespace | quote }}
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
""",
    "charts/demo/templates/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers:
      - {name: demo, image: "example.org/demo:1.0"}
""",
    "charts/demo/templates/extra.yaml": """\
{{- if .Values.extra }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: demo-extra
{{- end }}
""",
    "charts/demo/templates/widget.yaml": """\
apiVersion: example.org/v1
kind: Widget
metadata:
  name: demo
spec:
  size: {{ .Values.size }}
""",
}
VALUES = "greeting: default\nreplicas: 1\nextra: true\nsize: 3\n"


def _demo_chart(**overrides: str) -> dict[str, str]:
    files = {
        "charts/demo/Chart.yaml": CHART_YAML,
        "charts/demo/values.yaml": VALUES,
        "charts/demo/crds/widgets.yaml": WIDGET_CRD,
        **TEMPLATES,
    }
    files.update(overrides)
    return files


def _git_release(name: str, chart: str, *, target: str = "demo", deps: tuple[str, ...] = (),
                 values: dict[str, Any] | None = None, retries: int = -1) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "interval": "10m",
        "releaseName": name,
        "targetNamespace": target,
        "chart": {"spec": {"chart": chart, "reconcileStrategy": "Revision",
                           "sourceRef": {"kind": "GitRepository", "name": "platform",
                                         "namespace": "flux-system"}}},
        "install": {"crds": "CreateReplace", "remediation": {"retries": retries}},
        "upgrade": {"crds": "CreateReplace", "remediation": {"retries": retries}},
    }
    if deps:
        spec["dependsOn"] = [{"name": d} for d in deps]
    if values is not None:
        spec["values"] = values
    return {"apiVersion": HR_API, "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": "flux-system"}, "spec": spec}


def _flux_cluster(
    flux_docs: list[dict[str, Any]], installer: HelmInstaller
) -> tuple[Store, Controllers]:
    store = Store()
    ctl = Controllers(store, helm=installer, retry_interval=1.0)
    for doc in flux_docs:
        if doc["kind"] in ("Namespace", "CustomResourceDefinition"):
            _apply(store, doc)
    ctl.reconcile(0.0)
    _apply(store, {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
                   "metadata": {"name": "charts", "namespace": "flux-system"},
                   "spec": {"url": "https://charts.example.org", "interval": "1h"}})
    return store, ctl


def _repo_release(name: str, crds: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"interval": "10m", "chart": {"spec": {
        "chart": name, "version": "1.0.0",
        "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}
    if crds:
        spec["install"] = {"crds": crds}
    return {"apiVersion": HR_API, "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": "flux-system"}, "spec": spec}


@pytest.fixture
def cluster(
    tmp_path: Path, flux_docs: list[dict[str, Any]], helm_bin: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Store, Controllers, Repo]:
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.file://{tmp_path / 'repo' / '.git'}.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", Repo.url)
    store, ctl = _flux_cluster(flux_docs, HelmInstaller(helm_bin, GitChartLocator(tmp_path / "c")))
    repo = Repo(tmp_path / "repo")
    _apply(store, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    _apply(store, {
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "platform", "namespace": "flux-system"},
        "spec": {"url": repo.url, "ref": {"branch": "main"}, "interval": "1m"},
    })
    return store, ctl, repo


def test_chart_from_git_is_rendered_and_installed_with_helm_metadata(
    cluster: tuple[Store, Controllers, Repo],
) -> None:
    store, ctl, repo = cluster
    repo.commit(_demo_chart())
    _apply(store, {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "demo-values", "namespace": "flux-system"},
                   "data": {"values.yaml": "greeting: from-configmap\nreplicas: 2\n"}})
    hr = _git_release("demo", "./charts/demo", values={"greeting": "hello"})
    hr["spec"]["valuesFrom"] = [{"kind": "ConfigMap", "name": "demo-values"}]
    _apply(store, hr)
    ctl.reconcile(1.0)

    cond = _ready(_hr(store, "demo"))
    assert (cond["status"], cond["reason"]) == ("True", "InstallSucceeded"), cond
    cm = _get(store, "v1", "ConfigMap", "demo-config", "demo")
    assert cm is not None
    # spec.values over valuesFrom over the chart's values.yaml; the release namespace
    assert cm["data"] == {"greeting": "hello", "namespace": "demo", "kube": "v1.34.1"}
    deploy = _get(store, "apps/v1", "Deployment", "demo", "demo")
    assert deploy is not None and deploy["spec"]["replicas"] == 2
    for obj in (cm, deploy, _get(store, "v1", "ServiceAccount", "demo-extra", "demo"),
                _get(store, "example.org/v1", "Widget", "demo", "demo")):
        assert obj is not None
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert meta["labels"]["helm.toolkit.fluxcd.io/name"] == "demo"
        assert meta["labels"]["helm.toolkit.fluxcd.io/namespace"] == "flux-system"
        assert meta["annotations"]["meta.helm.sh/release-name"] == "demo"
        assert meta["annotations"]["meta.helm.sh/release-namespace"] == "demo"
        assert {m["manager"] for m in meta["managedFields"]} == {MANAGER}
    # crds/: installed (and served at once) without Helm's ownership metadata
    crd = _get(store, "apiextensions.k8s.io/v1", "CustomResourceDefinition",
               "widgets.example.org", None)
    assert crd is not None and "app.kubernetes.io/managed-by" not in (
        crd["metadata"].get("labels") or {})
    widget = _get(store, "example.org/v1", "Widget", "demo", "demo")
    assert widget is not None and widget["spec"] == {"size": 3}
    assert ctl.helm is not None
    assert ctl.helm.installed["flux-system/demo"]["objects"] == 5
    assert ctl.helm.not_installed == {}
    # the installed Deployment is reconciled like any other
    ctl.reconcile(2.0)
    deploy = _get(store, "apps/v1", "Deployment", "demo", "demo")
    assert deploy is not None and deploy["status"]["availableReplicas"] == 2


def test_upgrade_applies_new_values_and_removes_dropped_objects(
    cluster: tuple[Store, Controllers, Repo],
) -> None:
    store, ctl, repo = cluster
    repo.commit(_demo_chart())
    _apply(store, _git_release("demo", "./charts/demo"))
    ctl.reconcile(1.0)
    assert _get(store, "v1", "ServiceAccount", "demo-extra", "demo") is not None
    _apply(store, _git_release("demo", "./charts/demo",
                               values={"greeting": "again", "extra": False}))
    ctl.reconcile(2.0)
    hr = _hr(store, "demo")
    assert _ready(hr)["reason"] == "UpgradeSucceeded"
    assert hr["status"]["history"][0]["version"] == 2
    cm = _get(store, "v1", "ConfigMap", "demo-config", "demo")
    assert cm is not None and cm["data"]["greeting"] == "again"
    assert _get(store, "v1", "ServiceAccount", "demo-extra", "demo") is None


def test_broken_template_is_a_failed_install_with_helms_error(
    cluster: tuple[Store, Controllers, Repo],
) -> None:
    store, ctl, repo = cluster
    repo.commit(_demo_chart(**{"charts/demo/templates/broken.yaml":
                               "value: {{ nosuchfunction .Values.greeting }}\n"}))
    _apply(store, _git_release("demo", "./charts/demo"))
    ctl.reconcile(1.0)
    hr = _hr(store, "demo")
    cond = _ready(hr)
    assert (cond["status"], cond["reason"]) == ("False", "InstallFailed")
    assert cond["message"].startswith(
        "Helm install failed for release demo/demo with chart demo@*: ")
    assert 'function "nosuchfunction" not defined' in cond["message"]  # helm's own stderr
    assert "broken.yaml" in cond["message"]
    assert hr["status"]["installFailures"] == 1
    assert _get(store, "v1", "ConfigMap", "demo-config", "demo") is None
    # retries: -1 -> attempted again after the retry interval, still failing
    ctl.reconcile(1.5)
    assert _hr(store, "demo")["status"]["installFailures"] == 1
    ctl.reconcile(2.1)
    assert _hr(store, "demo")["status"]["installFailures"] == 2


def test_kind_without_crd_fails_like_helm_and_installs_nothing(
    cluster: tuple[Store, Controllers, Repo],
) -> None:
    store, ctl, repo = cluster
    files = _demo_chart()
    del files["charts/demo/crds/widgets.yaml"]
    repo.commit(files)
    _apply(store, _git_release("demo", "./charts/demo", retries=0))
    ctl.reconcile(1.0)
    hr = _hr(store, "demo")
    message = _ready(hr)["message"]
    assert 'no matches for kind "Widget" in version "example.org/v1"' in message
    assert "ensure CRDs are installed first" in message
    stalled = next(c for c in hr["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "RetriesExceeded"
    assert _get(store, "v1", "ConfigMap", "demo-config", "demo") is None


def test_existing_object_of_another_owner_is_not_adopted(
    cluster: tuple[Store, Controllers, Repo],
) -> None:
    store, ctl, repo = cluster
    repo.commit(_demo_chart())
    _apply(store, {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "demo-config", "namespace": "demo"},
                   "data": {"greeting": "mine"}}, manager="kubectl")
    _apply(store, _git_release("demo", "./charts/demo"))
    ctl.reconcile(1.0)
    message = _ready(_hr(store, "demo"))["message"]
    assert "rendered manifests contain a resource that already exists" in message
    assert 'ConfigMap "demo-config" in namespace "demo" exists' in message
    assert "invalid ownership metadata" in message
    cm = _get(store, "v1", "ConfigMap", "demo-config", "demo")
    assert cm is not None and cm["data"] == {"greeting": "mine"}


def test_chart_path_missing_from_the_revision_is_artifact_failed(
    cluster: tuple[Store, Controllers, Repo],
) -> None:
    store, ctl, repo = cluster
    repo.commit(_demo_chart())
    _apply(store, _git_release("demo", "./charts/absent"))
    ctl.reconcile(1.0)
    hr = _hr(store, "demo")
    cond = _ready(hr)
    assert (cond["status"], cond["reason"]) == ("False", "ArtifactFailed")
    assert "chart path './charts/absent' not found in revision 'main@sha1:" in cond["message"]
    assert not hr["status"].get("installFailures")


def test_without_helm_the_release_is_ready_without_objects_and_says_why(
    cluster: tuple[Store, Controllers, Repo], tmp_path: Path,
) -> None:
    store, ctl, repo = cluster
    logged: list[str] = []
    ctl.helm = HelmInstaller(None, GitChartLocator(tmp_path / "c2"),
                             helm_lookup="no helm on PATH and CLOUDCTL_HELM not set",
                             log=logged.append)
    repo.commit(_demo_chart())
    _apply(store, _git_release("demo", "./charts/demo"))
    ctl.reconcile(1.0)
    assert _ready(_hr(store, "demo"))["reason"] == "InstallSucceeded"
    assert _get(store, "v1", "ConfigMap", "demo-config", "demo") is None
    why = ctl.helm.not_installed["flux-system/demo"]
    assert why.startswith("helm not found (no helm on PATH and CLOUDCTL_HELM not set)")
    assert logged == [f"HelmRelease flux-system/demo: {why}"]
    assert ctl.helm.snapshot()["binary"] is None


def test_helm_repository_chart_keeps_todays_behaviour(
    cluster: tuple[Store, Controllers, Repo],
) -> None:
    store, ctl, _repo = cluster
    _apply(store, _repo_release("cilium"))
    ctl.reconcile(1.0)
    assert _ready(_hr(store, "cilium"))["reason"] == "InstallSucceeded"
    assert ctl.helm is not None and ctl.helm.renders == 0
    assert "HelmRepository 'flux-system/charts' is not readable" in (
        ctl.helm.not_installed["flux-system/cilium"])


def test_local_kubevirt_charts_reach_deployed(cluster: tuple[Store, Controllers, Repo]) -> None:
    """cloudctl's own local charts (as pushed in GitOps mode) create the operator and the CR
    the emulated virt-operator deploys."""
    store, ctl, repo = cluster
    files = {}
    for name in ("kubevirt-operator", "kubevirt"):
        for path, f in render_local_chart(name, "0.1.0", f"clusters/rack1/charts/{name}").items():
            files[path] = f.data.decode()
    repo.commit(files)
    _apply(store, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubevirt"}})
    ctl.crd_delay = 0.5
    _apply(store, _git_release("kubevirt-operator", "./clusters/rack1/charts/kubevirt-operator",
                               target="kubevirt"))
    _apply(store, _git_release("kubevirt", "./clusters/rack1/charts/kubevirt", target="kubevirt",
                               deps=("kubevirt-operator",),
                               values={"spec": {"configuration": {"developerConfiguration": {
                                   "featureGates": ["LiveMigration"]}}}}))
    ctl.reconcile(1.0)
    assert _ready(_hr(store, "kubevirt-operator"))["reason"] == "InstallSucceeded"
    operator = _get(store, "apps/v1", "Deployment", "virt-operator", "kubevirt")
    assert operator is not None
    assert operator["metadata"]["annotations"]["meta.helm.sh/release-name"] == "kubevirt-operator"
    for t in (1.1, 1.6, 2.0, 2.5):
        ctl.reconcile(t)
    assert _ready(_hr(store, "kubevirt"))["reason"] == "InstallSucceeded"
    kv = _get(store, "kubevirt.io/v1", "KubeVirt", "kubevirt", "kubevirt")
    assert kv is not None
    assert kv["spec"]["configuration"]["developerConfiguration"]["featureGates"] == [
        "LiveMigration"]
    assert kv["status"]["phase"] == "Deployed"


def test_find_helm_lookup(helm_bin: str, tmp_path: Path) -> None:
    assert find_helm({"PATH": str(Path(helm_bin).parent)}) == (helm_bin, "helm on PATH")
    assert find_helm({"PATH": str(tmp_path)}) == (
        None, "no helm on PATH and CLOUDCTL_HELM not set")
    other = tmp_path / "my-helm"
    shutil.copy(helm_bin, other)
    assert find_helm({"PATH": "", "CLOUDCTL_HELM": str(other)}) == (
        str(other), f"CLOUDCTL_HELM={other}")
    missing = tmp_path / "absent"
    assert find_helm({"PATH": str(Path(helm_bin).parent), "CLOUDCTL_HELM": str(missing)}) == (
        None, f"CLOUDCTL_HELM={missing} is not an executable")


def test_parse_manifest_sorts_crds_objects_and_hooks() -> None:
    text = (
        "---\n# Source: demo/crds/a.yaml\napiVersion: apiextensions.k8s.io/v1\n"
        "kind: CustomResourceDefinition\nmetadata: {name: a.example.org}\n"
        "---\n# Source: demo/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\n"
        "metadata: {name: cm}\n"
        "---\n# Source: demo/templates/job.yaml\napiVersion: batch/v1\nkind: Job\n"
        "metadata: {name: j, annotations: {helm.sh/hook: pre-install}}\n"
        "---\n# Source: demo/templates/empty.yaml\n"
    )
    out = parse_manifest(text, "demo")
    assert [c["metadata"]["name"] for c in out.crds] == ["a.example.org"]
    assert [o["metadata"]["name"] for o in out.objects] == ["cm"]
    assert out.hooks == 1


def test_vendored_crds_of_an_unreadable_chart_are_installed_by_the_action(
    flux_docs: list[dict[str, Any]],
) -> None:
    """metallb's chart is not available offline; its vendored crds/ are installed (and served)
    when the action succeeds, whether or not helm exists, unless the CRD policy is Skip."""
    crd = yaml.safe_load(WIDGET_CRD)
    store, ctl = _flux_cluster(flux_docs, HelmInstaller(None, None, chart_crds={
        "metallb": (crd,), "skipper": (crd,)}))
    _apply(store, _repo_release("skipper", crds="Skip"))
    ctl.reconcile(1.0)
    assert _ready(_hr(store, "skipper"))["reason"] == "InstallSucceeded"
    assert store.type_of("example.org/v1", "Widget") is None
    _apply(store, _repo_release("metallb"))
    ctl.reconcile(2.0)
    assert _ready(_hr(store, "metallb"))["reason"] == "InstallSucceeded"
    assert store.type_of("example.org/v1", "Widget") is not None  # served when Ready
    stored = _get(store, "apiextensions.k8s.io/v1", "CustomResourceDefinition",
                  "widgets.example.org", None)
    assert stored is not None
    assert any(c["type"] == "Established" and c["status"] == "True"
               for c in stored["status"]["conditions"])
    assert ctl.helm is not None
    assert ctl.helm.not_installed["flux-system/metallb"].endswith(
        "release Ready without its objects (the chart's 1 vendored CRDs installed)")
