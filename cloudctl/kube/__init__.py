"""The Kubernetes layer: kubeconfig -> client, server-side apply of manifest sets, waits.

Built on the official ``kubernetes`` client; its exceptions are translated into
``cloudctl.errors`` here and never leave the package.
"""

from .apply import Applied, apply_manifests, wait_crds_established
from .client import Kube, Resource, api_client, load_configuration
from .errors import KubeApiError, KubeUnreachable
from .objects import ObjectRef, order_for_apply, parse_manifests
from .wait import (
    ReleaseStatus,
    WorkloadStatus,
    release_order,
    release_status,
    wait_helmreleases,
    wait_ready,
    wait_workloads,
    workload_status,
)

__all__ = [
    "Applied",
    "Kube",
    "KubeApiError",
    "KubeUnreachable",
    "ObjectRef",
    "ReleaseStatus",
    "Resource",
    "WorkloadStatus",
    "api_client",
    "apply_manifests",
    "load_configuration",
    "order_for_apply",
    "parse_manifests",
    "release_order",
    "release_status",
    "wait_crds_established",
    "wait_helmreleases",
    "wait_ready",
    "wait_workloads",
    "workload_status",
]
