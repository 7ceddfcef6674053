"""cloudctl.kube.wait: the pure decisions, and the waits against the emulator over TLS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cloudctl.emulate.kube_api import KubeApiEmulator
from cloudctl.errors import PlatformError, Timeout
from cloudctl.kube import (
    Kube,
    ObjectRef,
    ReleaseStatus,
    apply_manifests,
    parse_manifests,
    release_order,
    release_status,
    wait_helmreleases,
    wait_ready,
    wait_workloads,
    workload_status,
)
from cloudctl.resources import read_text

HR = "helm.toolkit.fluxcd.io/v2"


def _hr(
    name: str, deps: list[str], conditions: list[dict[str, Any]] | None = None, generation: int = 1
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": HR,
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": "flux-system", "generation": generation},
        "spec": {
            "interval": "10m",
            "dependsOn": [{"name": d} for d in deps],
            "chart": {
                "spec": {
                    "chart": name,
                    "version": "1.0.0",
                    "sourceRef": {"kind": "HelmRepository", "name": "charts"},
                }
            },
        },
    }
    if conditions is not None:
        obj["status"] = {"conditions": conditions}
    return obj


def _c(ctype: str, status: str, reason: str, message: str = "", gen: int = 1) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": gen,
    }


def test_release_status_decisions() -> None:
    assert release_status(_hr("a", [])).state == "progressing"
    assert release_status(_hr("a", [], [_c("Ready", "True", "InstallSucceeded")])).state == "ready"
    st = release_status(_hr("a", ["b"], [_c("Ready", "False", "DependencyNotReady", "dep")]))
    assert (st.state, st.depends_on) == ("waiting", ("flux-system/b",))
    # no remediation retries (helm-controller's default 0): the first failure is final
    st = release_status(_hr("a", [], [_c("Ready", "False", "InstallFailed", "boom")]))
    assert (st.state, st.reason, st.message) == ("failed", "InstallFailed", "boom")
    # Stalled wins whatever the reason
    st = release_status(
        _hr(
            "a",
            [],
            [_c("Ready", "False", "ArtifactFailed", "x"), _c("Stalled", "True", "RetriesExceeded")],
        )
    )
    assert st.state == "failed"
    # retries left (unlimited, or more than the failures counted): retrying, with attempts
    retrying = _hr("a", [], [_c("Ready", "False", "InstallFailed", "boom")])
    retrying["spec"]["install"] = {"remediation": {"retries": -1}}
    retrying["status"]["installFailures"] = 3
    st = release_status(retrying)
    assert (st.state, st.attempts) == ("retrying", 3)
    assert "retrying after 3 failed attempt(s); last: InstallFailed: boom" in st.describe()
    retrying["spec"]["install"] = {"remediation": {"retries": 3}}
    assert release_status(retrying).state == "retrying"
    retrying["status"]["installFailures"] = 4  # retries exhausted
    assert release_status(retrying).state == "failed"
    upgrade = _hr("a", [], [_c("Ready", "False", "UpgradeFailed", "x")])
    upgrade["spec"]["install"] = {"remediation": {"retries": -1}}  # install's retries only
    assert release_status(upgrade).state == "failed"
    upgrade["spec"]["upgrade"] = {"strategy": {"name": "RetryOnFailure"}}
    assert release_status(upgrade).state == "retrying"
    # a transient reason is a wait, not a failure
    assert release_status(_hr("a", [], [_c("Ready", "False", "ArtifactFailed")])).state == (
        "progressing"
    )
    # Ready=True of an older generation does not count
    stale = _hr("a", [], [_c("Ready", "True", "InstallSucceeded", gen=1)], generation=2)
    assert release_status(stale).state == "progressing"


def test_release_order_is_topological() -> None:
    objs = [
        _hr("kamaji", ["cert-manager"]),
        _hr("cert-manager", ["kube-ovn"]),
        _hr("cilium", []),
        _hr("kube-ovn", ["cilium"]),
        _hr("metallb", ["kube-ovn"]),
    ]
    order = [k.split("/")[1] for k in release_order(objs)]
    assert order == ["cilium", "kube-ovn", "cert-manager", "kamaji", "metallb"]


def test_workload_status_decisions() -> None:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "n", "generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 1},
    }
    assert not workload_status(dep).ready
    dep["status"] = {
        "observedGeneration": 2,
        "replicas": 2,
        "updatedReplicas": 2,
        "availableReplicas": 1,
    }
    assert workload_status(dep).detail == "1 of 2 updated replicas available"
    dep["status"]["availableReplicas"] = 2
    assert workload_status(dep).ready
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "x"},
        "status": {"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2},
    }
    assert workload_status(ds).detail == "2 of 3 pods available"


@pytest.fixture(scope="module")
def flux_docs() -> list[dict[str, Any]]:
    return parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"), source="gotk")


@pytest.fixture
def emulator() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator(release_delay=0.05, workload_delay=0.05) as emu:
        yield emu


@pytest.fixture
def kube(emulator: KubeApiEmulator, flux_docs: list[dict[str, Any]]) -> Iterator[Kube]:
    with Kube.from_kubeconfig(emulator.kubeconfig(), timeout=10) as k:
        wanted = (
            "helmreleases.helm.toolkit.fluxcd.io",
            "helmrepositories.source.toolkit.fluxcd.io",
        )
        apply_manifests(
            k, [d for d in flux_docs if d["kind"] == "Namespace" or d["metadata"]["name"] in wanted]
        )
        apply_manifests(
            k,
            [
                {
                    "apiVersion": "source.toolkit.fluxcd.io/v1",
                    "kind": "HelmRepository",
                    "metadata": {"name": "charts", "namespace": "flux-system"},
                    "spec": {"url": "https://charts.example.org", "interval": "1h"},
                }
            ],
        )
        yield k


def _chain(kube: Kube) -> None:
    releases = [_hr("cert-manager", ["kube-ovn"]), _hr("kube-ovn", ["cilium"]), _hr("cilium", [])]
    for r in releases:
        del r["metadata"]["generation"]
    apply_manifests(kube, releases)


def test_wait_reports_progress_in_dependency_order(kube: Kube) -> None:
    _chain(kube)
    seen: list[ReleaseStatus] = []
    final = wait_helmreleases(kube, timeout=10, interval=0.02, on_status=seen.append)
    assert [s.name for s in final] == ["cilium", "kube-ovn", "cert-manager"]
    assert all(s.state == "ready" for s in final)
    became_ready = [s.name for s in seen if s.state == "ready"]
    assert became_ready == ["cilium", "kube-ovn", "cert-manager"]
    assert any(s.name == "cert-manager" and s.state == "waiting" for s in seen)


def test_wait_surfaces_an_injected_failure(kube: Kube, emulator: KubeApiEmulator) -> None:
    emulator.fail_release(
        "kube-ovn",
        "InstallFailed",
        "Helm install failed for release kube-ovn/kube-ovn: context deadline exceeded",
    )
    _chain(kube)
    with pytest.raises(PlatformError) as exc:
        wait_helmreleases(kube, timeout=10, interval=0.02)
    assert exc.value.exit_code == 8
    assert str(exc.value).startswith("HelmRelease flux-system/kube-ovn failed: InstallFailed: ")
    assert "context deadline exceeded" in str(exc.value)


def test_wait_times_out_naming_release_and_blocking_dependency(
    kube: Kube, emulator: KubeApiEmulator
) -> None:
    emulator.set_release_delay("cilium", 3600)
    _chain(kube)
    with pytest.raises(Timeout) as exc:
        wait_helmreleases(kube, names=["kube-ovn"], timeout=0.3, interval=0.05)
    text = str(exc.value)
    assert exc.value.exit_code == 7
    assert (
        "flux-system/kube-ovn (DependencyNotReady: dependency 'flux-system/cilium' is not "
        "ready)" in text
    )
    assert "waits for flux-system/cilium (not found)" not in text
    assert "waits for flux-system/cilium" in text


def test_wait_for_a_release_that_does_not_exist(kube: Kube) -> None:
    with pytest.raises(Timeout) as exc:
        wait_helmreleases(kube, names=["ghost"], timeout=0.1, interval=0.05)
    assert "flux-system/ghost (not found)" in str(exc.value)


def test_wait_workloads_of_the_flux_install(
    kube: Kube, flux_docs: list[dict[str, Any]], emulator: KubeApiEmulator
) -> None:
    apply_manifests(kube, flux_docs)
    refs = [ObjectRef.of(d) for d in flux_docs]
    seen: list[str] = []
    done = wait_workloads(
        kube,
        refs,
        timeout=10,
        interval=0.02,
        on_status=lambda s: seen.append(f"{s.ref.name}:{s.ready}"),
    )
    names = sorted(s.ref.name for s in done)
    assert names == sorted(d["metadata"]["name"] for d in flux_docs if d["kind"] == "Deployment")
    assert all(s.ready for s in done)
    missing = ObjectRef("apps/v1", "Deployment", "absent", "flux-system")
    with pytest.raises(Timeout) as exc:
        wait_workloads(kube, [missing], timeout=0.1, interval=0.05)
    assert "Deployment flux-system/absent: not found" in str(exc.value)


def test_wait_ready_for_gitops_sync_objects(kube: Kube) -> None:
    flux = parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"), source="gotk")
    apply_manifests(
        kube,
        [
            d
            for d in flux
            if d["metadata"]["name"]
            in (
                "gitrepositories.source.toolkit.fluxcd.io",
                "kustomizations.kustomize.toolkit.fluxcd.io",
            )
        ],
    )
    ks = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "platform", "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "path": "./gitops",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "platform"},
        },
    }
    apply_manifests(kube, [ks])
    ref = ObjectRef.of(ks)
    with pytest.raises(Timeout) as exc:
        wait_ready(kube, [ref], timeout=0.1, interval=0.05)
    assert "Kustomization flux-system/platform: ArtifactFailed: " in str(exc.value)
    apply_manifests(
        kube,
        [
            {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": {"name": "platform", "namespace": "flux-system"},
                "spec": {
                    "url": "https://git.example.org/p.git",
                    "interval": "1m",
                    "ref": {"branch": "main"},
                },
            }
        ],
    )
    (done,) = wait_ready(kube, [ref], timeout=5, interval=0.02)
    assert done.ready and done.detail.startswith("ReconciliationSucceeded: Applied revision: main@")


def test_operator_status_decisions() -> None:
    """KubeVirt and CDI are deployed when their operator says so (phase Deployed and
    Available=True); otherwise the phase and the conditions that are not healthy are named."""
    from cloudctl.kube.wait import is_operator_cr, operator_status

    def cr(phase: str | None, *conds: tuple[str, str, str, str]) -> dict[str, Any]:
        status: dict[str, Any] = {"conditions": [
            {"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conds]}
        if phase:
            status["phase"] = phase
        return {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
                "metadata": {"name": "kubevirt", "namespace": "kubevirt"}, "status": status}

    assert is_operator_cr(cr(None)) and not is_operator_cr({"apiVersion": "v1", "kind": "Pod"})
    assert not operator_status(cr(None)).ready
    assert operator_status(cr(None)).detail == "phase not reported yet"
    ok = cr("Deployed", ("Available", "True", "AllComponentsReady", ""),
            ("Degraded", "False", "", ""))
    assert operator_status(ok).ready
    # Deployed but not Available (an operator mid-upgrade) is not deployed
    assert not operator_status(cr("Deployed", ("Available", "False", "x", "y"))).ready
    bad = operator_status(cr("Deploying", ("Available", "False", "DeploymentFailed", "boom"),
                             ("Progressing", "True", "", ""),
                             ("Degraded", "True", "DeploymentFailed", "boom")))
    assert not bad.ready
    assert bad.detail.startswith("phase Deploying; Available=False (DeploymentFailed: boom)")
    assert "Degraded=True (DeploymentFailed: boom)" in bad.detail
    cdi = {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "CDI", "metadata": {"name": "cdi"},
           "status": {"phase": "Deployed", "conditions": [
               {"type": "Available", "status": "True", "reason": "DeployCompleted"}]}}
    assert is_operator_cr(cdi) and operator_status(cdi).ready


def test_wait_operators_names_the_cr_when_time_runs_out(kube: Kube) -> None:
    """A kind nobody serves yet is pending (its CRD may still come), and running out of time is
    a platform failure (exit 8) naming each custom resource."""
    from cloudctl.kube.wait import wait_operators

    ref = ObjectRef("kubevirt.io/v1", "KubeVirt", "kubevirt", "kubevirt")  # no CRD applied
    with pytest.raises(PlatformError) as exc:
        wait_operators(kube, [ref], timeout=0.2, interval=0.05)
    assert exc.value.exit_code == 8
    assert "KubeVirt not deployed after 0.2s" in str(exc.value)
    assert "kind not served yet" in str(exc.value)


def test_a_retry_attempt_in_progress_when_time_runs_out_is_still_failing() -> None:
    """helm-controller shows a retry attempt as Ready=Unknown/Progressing: a release seen
    failing during the wait and in such an attempt at the deadline is reported as still
    failing (exit 8, with its last failure), not as a plain timeout."""
    failed = _hr("metallb", [], [_c("Ready", "False", "InstallFailed", "speaker crashed")])
    failed["spec"]["install"] = {"remediation": {"retries": -1}}
    failed["status"]["installFailures"] = 1
    attempt = _hr("metallb", [], [_c("Ready", "Unknown", "Progressing",
                                     "Running 'install' action with timeout of 5m0s")])
    attempt["spec"]["install"] = {"remediation": {"retries": -1}}
    attempt["status"]["installFailures"] = 1
    answers = iter([[failed], [attempt]])
    now = [0.0]

    class Scripted:
        def list(self, *args: Any, **kw: Any) -> list[dict[str, Any]]:
            return next(answers)

    def sleep(seconds: float) -> None:
        now[0] += 10

    seen: list[ReleaseStatus] = []
    with pytest.raises(PlatformError) as exc:
        wait_helmreleases(Scripted(), timeout=5, clock=lambda: now[0],  # type: ignore[arg-type]
                          sleep=sleep, on_status=seen.append)
    assert exc.value.exit_code == 8
    # observers (the pipeline's state.json) get the failing status last, not the attempt
    assert [s.state for s in seen] == ["retrying", "progressing", "retrying"]
    assert seen[-1].reason == "InstallFailed" and seen[-1].attempts == 1
    assert "HelmRelease flux-system/metallb still failing after 5s" in str(exc.value)
    assert "InstallFailed: speaker crashed" in str(exc.value)
