"""Objects of ``gitops/platform/``: namespaces, Flux sources, one HelmRelease per release, and
the sync objects (GitRepository + Kustomization) when ``inv.gitops`` is set."""

from __future__ import annotations

import json
from typing import Any

from ...inventory.models import Inventory
from .catalog import PlatformRelease, Source

FLUX_NS = "flux-system"
GIT_SOURCE = "cloudctl-platform"
DEFAULT_GITOPS_PATH = "clusters/{cluster}"

HELMRELEASE_API = "helm.toolkit.fluxcd.io/v2"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"

MANAGED_BY = {"app.kubernetes.io/managed-by": "cloudctl"}


def gitops_path(inv: Inventory) -> str:
    """Path of the rendered tree inside the Git repository (no leading './', no trailing '/')."""
    raw = inv.gitops.path if inv.gitops else DEFAULT_GITOPS_PATH
    path = raw.replace("{cluster}", inv.cluster.name).strip()
    while path.startswith("./"):
        path = path[2:]
    return path.strip("/")


def namespaces(releases: list[PlatformRelease]) -> list[dict[str, Any]]:
    privileged: dict[str, bool] = {}
    for rel in releases:
        privileged[rel.namespace] = privileged.get(rel.namespace, False) or rel.privileged
    out = []
    for ns in sorted(privileged):
        level = "privileged" if privileged[ns] else "baseline"
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": ns,
                    "labels": {
                        **MANAGED_BY,
                        "pod-security.kubernetes.io/enforce": level,
                        "pod-security.kubernetes.io/audit": level,
                        "pod-security.kubernetes.io/warn": level,
                    },
                },
            }
        )
    return out


def git_repository(inv: Inventory) -> dict[str, Any] | None:
    if inv.gitops is None:
        return None
    spec: dict[str, Any] = {
        "interval": inv.gitops.interval,
        "url": inv.gitops.repo,
        "ref": {"branch": inv.gitops.branch},
    }
    if inv.gitops.secret_ref:
        spec["secretRef"] = {"name": inv.gitops.secret_ref}
    return {
        "apiVersion": SOURCE_API,
        "kind": "GitRepository",
        "metadata": {"name": GIT_SOURCE, "namespace": FLUX_NS, "labels": dict(MANAGED_BY)},
        "spec": spec,
    }


def sync_kustomization(inv: Inventory) -> dict[str, Any] | None:
    if inv.gitops is None:
        return None
    return {
        "apiVersion": KUSTOMIZE_API,
        "kind": "Kustomization",
        "metadata": {"name": GIT_SOURCE, "namespace": FLUX_NS, "labels": dict(MANAGED_BY)},
        "spec": {
            "interval": "10m",
            "retryInterval": "1m",
            "path": f"./{gitops_path(inv)}",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": GIT_SOURCE},
            "timeout": "5m",
        },
    }


TENANTS_SYNC = "cloudctl-tenants"


def tenants_kustomization(inv: Inventory) -> dict[str, Any] | None:
    """GitOps mode with tenants: a second Flux Kustomization for ``<path>/tenants``, after the
    platform's (the Cluster API kinds exist only once the providers run; until then Flux retries
    it every minute without holding up the platform). Removing the last tenant removes it and
    Flux prunes what it applied."""
    if inv.gitops is None or not inv.tenants:
        return None
    return {
        "apiVersion": KUSTOMIZE_API,
        "kind": "Kustomization",
        "metadata": {"name": TENANTS_SYNC, "namespace": FLUX_NS, "labels": dict(MANAGED_BY)},
        "spec": {
            "dependsOn": [{"name": GIT_SOURCE}],
            "interval": "10m",
            "retryInterval": "1m",
            "path": f"./{gitops_path(inv)}/tenants",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": GIT_SOURCE},
            "timeout": "5m",
        },
    }


def sources(releases: list[PlatformRelease]) -> list[dict[str, Any]]:
    """One HelmRepository per Helm repository used, one OCIRepository per OCI chart."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for rel in releases:
        src = rel.source
        if src.type == "helm" and src.name not in seen:
            seen.add(src.name)
            out.append(
                {
                    "apiVersion": SOURCE_API,
                    "kind": "HelmRepository",
                    "metadata": {
                        "name": src.name,
                        "namespace": FLUX_NS,
                        "labels": dict(MANAGED_BY),
                    },
                    "spec": {"interval": "1h", "url": src.url, "timeout": "3m"},
                }
            )
        elif src.type == "oci":
            out.append(
                {
                    "apiVersion": SOURCE_API,
                    "kind": "OCIRepository",
                    "metadata": {
                        "name": rel.name,
                        "namespace": FLUX_NS,
                        "labels": dict(MANAGED_BY),
                    },
                    "spec": {
                        "interval": "1h",
                        "url": src.url,
                        "ref": {"tag": rel.version},
                        "layerSelector": {
                            "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                            "operation": "copy",
                        },
                    },
                }
            )
    return out


def _chart(rel: PlatformRelease, inv: Inventory) -> tuple[str, dict[str, Any]]:
    src: Source = rel.source
    if src.type == "oci":
        return "chartRef", {"kind": "OCIRepository", "name": rel.name, "namespace": FLUX_NS}
    if src.type == "git":
        return "chart", {
            "spec": {
                "chart": f"./{gitops_path(inv)}/charts/{rel.chart}",
                "reconcileStrategy": "Revision",
                "sourceRef": {"kind": "GitRepository", "name": GIT_SOURCE, "namespace": FLUX_NS},
                "interval": "10m",
            }
        }
    return "chart", {
        "spec": {
            "chart": rel.chart,
            "version": rel.version,
            "sourceRef": {"kind": "HelmRepository", "name": src.name, "namespace": FLUX_NS},
            "interval": "1h",
        }
    }


def helm_release(inv: Inventory, rel: PlatformRelease, values: dict[str, Any]) -> dict[str, Any]:
    chart_key, chart = _chart(rel, inv)
    spec: dict[str, Any] = {
        "interval": "10m",
        "releaseName": rel.name,
        "targetNamespace": rel.namespace,
        "storageNamespace": rel.namespace,
        chart_key: chart,
        "timeout": "15m",
        "maxHistory": 5,
        "install": {"crds": "CreateReplace", "remediation": {"retries": -1}},
        "upgrade": {"crds": "CreateReplace", "remediation": {"retries": -1}},
    }
    if rel.depends_on:
        spec["dependsOn"] = [{"name": d} for d in rel.depends_on]
    spec["values"] = values
    return {
        "apiVersion": HELMRELEASE_API,
        "kind": "HelmRelease",
        "metadata": {
            "name": rel.name,
            "namespace": FLUX_NS,
            "labels": {**MANAGED_BY, "cloudctl.io/component": rel.catalog.component},
        },
        "spec": spec,
    }


def cilium_cni_configuration(namespace: str) -> dict[str, Any]:
    """The chained CNI conflist Cilium installs when chained after kube-ovn (generic-veth):
    kube-ovn (interface + IPAM through its daemon socket) -> portmap -> cilium-cni."""
    sock = "/run/openvswitch/kube-ovn-daemon.sock"
    conflist = {
        "cniVersion": "0.3.1",
        "name": "generic-veth",
        "plugins": [
            {
                "type": "kube-ovn",
                "server_socket": sock,
                "ipam": {"type": "kube-ovn", "server_socket": sock},
            },
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
            {"type": "cilium-cni", "chaining-mode": "generic-veth"},
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "cni-configuration",
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
        },
        "data": {"cni-config": json.dumps(conflist, indent=2, sort_keys=False) + "\n"},
    }
