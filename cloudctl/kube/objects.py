"""Kubernetes objects as cloudctl handles them: references, manifest parsing and apply order.

Pure: no client, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import InputError, Problem
from ..util.yamlcache import SAFE_LOADER

__all__ = [
    "ObjectRef",
    "apply_rank",
    "order_for_apply",
    "parse_manifests",
]


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Names one object: ``HelmRelease flux-system/cilium`` (namespace None: cluster-scoped)."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion", "")),
            str(obj.get("kind", "")),
            str(meta.get("name", "")),
            meta.get("namespace") or None,
        )

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


# Namespaces -> CRDs -> cluster policy/RBAC/config -> services -> workloads -> webhooks ->
# everything else (custom resources: Flux sources before what consumes them).
_RANKS: dict[str, int] = {
    "Namespace": 0,
    "CustomResourceDefinition": 1,
    "PriorityClass": 2,
    "StorageClass": 2,
    "ResourceQuota": 3,
    "LimitRange": 3,
    "NetworkPolicy": 3,
    "PodSecurityPolicy": 3,
    "ServiceAccount": 4,
    "ClusterRole": 4,
    "Role": 4,
    "ClusterRoleBinding": 5,
    "RoleBinding": 5,
    "Secret": 6,
    "ConfigMap": 6,
    "PersistentVolume": 7,
    "PersistentVolumeClaim": 7,
    "Service": 8,
    "Endpoints": 8,
    "DaemonSet": 9,
    "Deployment": 9,
    "StatefulSet": 9,
    "ReplicaSet": 9,
    "Job": 9,
    "CronJob": 9,
    "PodDisruptionBudget": 10,
    "Ingress": 10,
    "MutatingWebhookConfiguration": 11,
    "ValidatingWebhookConfiguration": 11,
    # custom resources: sources, then their consumers
    "GitRepository": 20,
    "HelmRepository": 20,
    "OCIRepository": 20,
    "Bucket": 20,
    "HelmChart": 21,
    "Kustomization": 22,
    "HelmRelease": 22,
}
_CUSTOM_RANK = 19  # any other custom resource: after every built-in kind


def apply_rank(obj: Mapping[str, Any]) -> int:
    return _RANKS.get(str(obj.get("kind", "")), _CUSTOM_RANK)


def order_for_apply(objs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Stable sort into apply order (objects of one rank keep their order in the input)."""
    return sorted(objs, key=apply_rank)


def parse_manifests(data: bytes | str, *, source: str) -> list[dict[str, Any]]:
    """Every object of a multi-document YAML stream (``kind: List`` flattened, empty skipped)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        docs = list(yaml.load_all(text, Loader=SAFE_LOADER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(
            Problem("", f"not valid YAML: {exc}", line, source), source=source
        ) from exc
    out: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            problems.append(Problem(f"[{index}]", "a manifest document must be a mapping"))
            continue
        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            out.extend(item for item in doc["items"] if isinstance(item, dict))
            continue
        for key in ("apiVersion", "kind"):
            if not doc.get(key):
                problems.append(Problem(f"[{index}].{key}", "required"))
        if not (doc.get("metadata") or {}).get("name"):
            problems.append(Problem(f"[{index}].metadata.name", "required"))
        out.append(doc)
    if problems:
        raise InputError(problems, source=source)
    return out
