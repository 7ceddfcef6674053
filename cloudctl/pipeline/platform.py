"""Flux and the platform on the cluster: apply the rendered GitOps tree and wait.

Direct mode (no ``gitops:`` in the inventory): Flux has no source for the local charts
(KubeVirt, CDI, MetalLB pools), so the rendered tree holds their objects as plain manifests in
``gitops/local/`` instead of HelmReleases; once every other release is Ready, cloudctl applies
them (``local_chart_manifests``, in release order) itself with server-side apply and waits for
their workloads. The CRs are accepted only if they validate against the CRDs the operators
registered. In both modes the platform is up only when KubeVirt's and CDI's operators report
their component deployed (``wait_components_deployed``).

GitOps mode: the rendered ``gitops/`` tree is pushed to the repository (see
:mod:`cloudctl.pipeline.gitpush`) and the GitRepository + Kustomization make Flux pull it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import Timeout
from ..kube import (
    Applied,
    Kube,
    ObjectRef,
    ReleaseStatus,
    apply_manifests,
    parse_manifests,
    wait_helmreleases,
    wait_ready,
    wait_workloads,
)
from ..kube.wait import WORKLOAD_KINDS, WorkloadStatus, is_operator_cr, wait_operators
from ..render.files import Files
from ..render.gitops import local_chart_manifests, platform_releases
from ..render.gitops.platform import GIT_SOURCE
from ..util.yamlcache import safe_load as yaml_safe_load

ROOT = "gitops"
SYNC_FILE = "gotk-sync.yaml"


def kustomize_resources(files: Files, directory: str) -> list[str]:
    """The ``resources:`` of ``<directory>/kustomization.yaml`` in the rendered files."""
    doc = yaml_safe_load(files[f"{directory}/kustomization.yaml"].data) or {}
    return [str(r) for r in doc.get("resources") or []]


def tree_objects(files: Files, directory: str, *, skip: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Objects of a rendered kustomize directory, following ``resources:`` in order."""
    out: list[dict[str, Any]] = []
    skipped = set(skip)
    for res in kustomize_resources(files, directory):
        if res in skipped:
            continue
        path = f"{directory}/{res}"
        if f"{path}/kustomization.yaml" in files:
            out += tree_objects(files, path)
            continue
        out += parse_manifests(files[path].data, source=path)
    return out


def flux_objects(files: Files) -> list[dict[str, Any]]:
    """The Flux install (without the sync objects, applied after the push)."""
    return tree_objects(files, f"{ROOT}/flux-system", skip=(SYNC_FILE,))


def sync_objects(files: Files) -> list[dict[str, Any]]:
    path = f"{ROOT}/flux-system/{SYNC_FILE}"
    return parse_manifests(files[path].data, source=path) if path in files else []


def workload_refs(applied: Iterable[Applied]) -> list[ObjectRef]:
    return [a.ref for a in applied if a.ref.kind in WORKLOAD_KINDS]


def install_flux(
    kube: Kube,
    files: Files,
    *,
    timeout: float,
    poll: float,
    on_applied: Callable[[Applied], None] | None = None,
) -> list[ObjectRef]:
    applied = apply_manifests(kube, flux_objects(files), on_applied=on_applied)
    refs = workload_refs(applied)
    wait_workloads(kube, refs, timeout=timeout, interval=poll)
    return refs


def platform_objects(inv: Any, files: Files, *, direct: bool) -> list[dict[str, Any]]:
    """Namespaces, sources, extras and HelmReleases (HelmReleases in dependsOn order; local
    chart releases left out in direct mode)."""
    local = set(local_chart_manifests(inv)) if direct else set()
    objs = tree_objects(files, f"{ROOT}/platform")
    order = {r.name: i for i, r in enumerate(platform_releases(inv))}
    rest = [o for o in objs if o.get("kind") != "HelmRelease"]
    releases = [
        o for o in objs if o.get("kind") == "HelmRelease" and o["metadata"]["name"] not in local
    ]
    releases.sort(key=lambda o: order.get(o["metadata"]["name"], len(order)))
    return rest + releases


def rendered_release_specs(files: Files) -> dict[str, dict[str, Any]]:
    """release name -> spec of every HelmRelease in the rendered platform tree."""
    return {str(o["metadata"]["name"]): dict(o.get("spec") or {})
            for o in tree_objects(files, f"{ROOT}/platform") if o.get("kind") == "HelmRelease"}


def wait_kinds_served(
    kube: Kube, objs: list[dict[str, Any]], *, timeout: float, poll: float
) -> None:
    """Until the API serves every custom kind in ``objs`` that no CRD in ``objs`` defines
    (CRDs a Helm release installed, e.g. MetalLB's before its address pools)."""
    defined = {
        (o["spec"]["group"], o["spec"]["names"]["kind"])
        for o in objs
        if o.get("kind") == "CustomResourceDefinition"
    }
    wanted = {
        (str(o["apiVersion"]), str(o["kind"]))
        for o in objs
        if "/" in str(o.get("apiVersion", ""))
        and (str(o["apiVersion"]).split("/")[0], o.get("kind")) not in defined
        and "." in str(o["apiVersion"]).split("/")[0]
        and not str(o["apiVersion"]).split("/")[0].endswith("k8s.io")
    }
    deadline = time.monotonic() + timeout
    while True:
        missing = sorted(w for w in wanted if kube.resource(*w) is None)
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise Timeout(
                "the API server does not serve "
                + ", ".join(f"{k} ({v})" for v, k in missing)
                + f" after {timeout:g}s (is the chart that ships their CRDs installed?)"
            )
        time.sleep(poll)
        kube.refresh_discovery()


def operator_refs(inv: Any) -> list[ObjectRef]:
    """The KubeVirt and CDI custom resources the platform creates (from the local charts,
    rendered the same way in both modes)."""
    return [ObjectRef.of(o) for objs in local_chart_manifests(inv).values() for o in objs
            if is_operator_cr(o)]


def wait_components_deployed(
    kube: Kube, inv: Any, *, timeout: float, poll: float,
    on_operator: Callable[[WorkloadStatus], None] | None = None,
) -> None:
    """Until KubeVirt's and CDI's operators report their component deployed; a release being
    Ready only means the operator and its CR were applied."""
    refs = operator_refs(inv)
    if refs:
        wait_operators(kube, refs, timeout=timeout, interval=poll, on_status=on_operator)


def install_platform_direct(
    kube: Kube,
    inv: Any,
    files: Files,
    *,
    timeout: float,
    poll: float,
    on_applied: Callable[[Applied], None],
    on_status: Callable[[ReleaseStatus], None],
    on_local: Callable[[str, str], None],
    on_operator: Callable[[WorkloadStatus], None] | None = None,
) -> None:
    objs = platform_objects(inv, files, direct=True)
    apply_manifests(kube, objs, on_applied=on_applied)
    names = [o["metadata"]["name"] for o in objs if o.get("kind") == "HelmRelease"]
    wait_helmreleases(kube, names=names, timeout=timeout, interval=poll, on_status=on_status)
    for name, manifests in local_chart_manifests(inv).items():
        on_local(name, "applying")
        wait_kinds_served(kube, manifests, timeout=timeout, poll=poll)
        applied = apply_manifests(kube, manifests, on_applied=on_applied)
        wait_workloads(kube, workload_refs(applied), timeout=timeout, interval=poll)
        on_local(name, "ready")
    wait_components_deployed(kube, inv, timeout=timeout, poll=poll, on_operator=on_operator)


def install_platform_gitops(
    kube: Kube,
    inv: Any,
    files: Files,
    *,
    timeout: float,
    poll: float,
    on_applied: Callable[[Applied], None],
    on_status: Callable[[ReleaseStatus], None],
    on_operator: Callable[[WorkloadStatus], None] | None = None,
) -> None:
    """Create the GitRepository + Kustomization and wait: Flux applies the platform from Git."""
    sync = sync_objects(files)
    apply_manifests(kube, sync, on_applied=on_applied)
    wait_ready(
        kube,
        [ObjectRef.of(o) for o in sync if o["metadata"]["name"] == GIT_SOURCE],
        timeout=timeout,
        interval=poll,
    )
    names = [r.name for r in platform_releases(inv)]
    wait_helmreleases(kube, names=names, timeout=timeout, interval=poll, on_status=on_status)
    wait_components_deployed(kube, inv, timeout=timeout, poll=poll, on_operator=on_operator)
