"""Tenant clusters on the management cluster: apply ``gitops/tenants/`` and wait until Ready.

Direct mode (no ``gitops:``): cloudctl server-side applies the tenants tree once the Cluster
API kinds are served (the providers run), then deletes what an earlier render applied and the
inventory no longer has: objects labelled ``cloudctl.io/tenant`` of the kinds the tenants tree
renders (a removed worker pool, a removed tenant with its namespace). The controllers delete
what those owned (machines, VMs, the tenant control plane).

GitOps mode: the stage pushes the tree (as the platform stage does; no commit when nothing
changed); the Flux Kustomization ``cloudctl-tenants`` applies it (and prunes what left the
tree). cloudctl waits for that Kustomization, then for the tenants.

Either way the stage ends when every tenant is Ready as the inventory asks
(:func:`cloudctl.kube.tenants.wait_tenants`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..inventory.models import Inventory
from ..kube import Applied, Kube, ObjectRef, apply_manifests, wait_ready
from ..kube.tenants import TenantStatus, TenantWant, wait_tenants
from ..render.files import Files
from ..render.tenants import RENDERED_KINDS, TENANT_LABEL
from .platform import ROOT, tree_objects, wait_kinds_served

TENANTS = f"{ROOT}/tenants"
TENANTS_SYNC = "cloudctl-tenants"


def wants(inv: Inventory) -> list[TenantWant]:
    return [
        TenantWant(t.name, {p.name: p.replicas for p in t.workers}, t.control_plane.replicas)
        for t in inv.tenants
    ]


def tenant_tree(files: Files) -> list[dict[str, Any]]:
    """The objects of ``gitops/tenants/`` ([] when the render has no tenants)."""
    if f"{TENANTS}/kustomization.yaml" not in files:
        return []
    return tree_objects(files, TENANTS)


def stale_objects(kube: Kube, rendered: list[dict[str, Any]]) -> list[ObjectRef]:
    """Objects a cloudctl render applied (``cloudctl.io/tenant`` label) that the current
    render does not have, in delete order."""
    keep = {ObjectRef.of(o) for o in rendered}
    out: list[ObjectRef] = []
    for api_version, kind in RENDERED_KINDS:
        if kube.resource(api_version, kind) is None:
            continue
        for obj in kube.list(api_version, kind, label_selector=TENANT_LABEL):
            ref = ObjectRef.of(obj)
            if ref not in keep:
                out.append(ref)
    return out


def install_tenants(
    kube: Kube,
    inv: Inventory,
    files: Files,
    *,
    timeout: float,
    poll: float,
    on_applied: Callable[[Applied], None],
    on_deleted: Callable[[ObjectRef], None],
    on_status: Callable[[TenantStatus], None],
) -> list[TenantStatus]:
    objs = tenant_tree(files)
    if inv.gitops is None:
        if objs:
            wait_kinds_served(kube, objs, timeout=timeout, poll=poll)
            apply_manifests(kube, objs, on_applied=on_applied)
        kube.refresh_discovery()
        for ref in stale_objects(kube, objs):
            if kube.delete(ref):
                on_deleted(ref)
    elif objs:
        wait_ready(kube, [ObjectRef("kustomize.toolkit.fluxcd.io/v1", "Kustomization",
                                    TENANTS_SYNC, "flux-system")],
                   timeout=timeout, interval=poll)
    if not inv.tenants:
        return []
    return wait_tenants(kube, wants(inv), timeout=timeout, interval=poll, on_status=on_status)
