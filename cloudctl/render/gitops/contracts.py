"""The vendored CRDs the GitOps tree is validated against, and the tree-wide check."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from ...capi_catalog import capi_catalog
from ...contracts import CrdRegistry
from ...errors import Problem
from ...resources import vendored_crds
from .flux import vendored_documents
from .localcharts import OPERATORS, operator_documents

VENDORED_CRDS = (
    "_upstream/metallb/0.16.1/crds/metallb.io_ipaddresspools.yaml",
    "_upstream/metallb/0.16.1/crds/metallb.io_l2advertisements.yaml",
    "_upstream/metallb/0.16.1/crds/metallb.io_bgppeers.yaml",
    "_upstream/metallb/0.16.1/crds/metallb.io_bgpadvertisements.yaml",
    "_upstream/piraeus/2.7.1/crds/piraeus.io_linstorclusters.yaml",
    "_upstream/piraeus/2.7.1/crds/piraeus.io_linstorsatelliteconfigurations.yaml",
)


@functools.cache
def crd_registry() -> CrdRegistry:
    """Flux (from the pinned install), MetalLB, Piraeus, KubeVirt and CDI CRDs."""
    reg = CrdRegistry.from_documents(vendored_documents())
    for relative in VENDORED_CRDS:
        reg.merge(
            CrdRegistry.from_documents(vendored_crds("helm-values", relative))
        )
    for chart in OPERATORS:
        reg.merge(CrdRegistry.from_documents(doc for _, doc in operator_documents(chart)))
    return reg


def _group_files() -> dict[str, tuple[tuple[str, str], ...]]:
    """API group -> vendored CRD files (data dir, path) of the Cluster API stack and Kamaji,
    loaded only when an object of that group is validated (several MB of YAML)."""
    cat = capi_catalog()
    out: dict[str, list[tuple[str, str]]] = {}
    files = [("flux", f) for f in cat.operator_crds]
    files += [("flux", f) for p in cat.providers for f in p.crds]
    files += [("helm-values", f) for f in cat.kamaji_crds]
    for where, path in files:
        group = path.rsplit("/", 1)[-1].split("_", 1)[0]
        out.setdefault(group, []).append((where, path))
    return {g: tuple(v) for g, v in out.items()}


@functools.cache
def group_registry(group: str) -> CrdRegistry | None:
    """The vendored CRDs of one Cluster API / Kamaji group (None: not such a group)."""
    files = _group_files().get(group)
    if files is None:
        return None
    reg = CrdRegistry()
    for where, path in files:
        reg.merge(CrdRegistry.from_documents(vendored_crds(where, path)))
    return reg


def registry_for(api_version: str) -> CrdRegistry:
    """The registry that validates custom resources of ``api_version``."""
    group = api_version.rpartition("/")[0]
    return group_registry(group) or crd_registry()


def custom_resource_problems(
    docs: Iterable[tuple[str, dict[str, Any]]],
) -> list[Problem]:
    """Validate every (where, object) whose kind a vendored CRD defines."""
    problems: list[Problem] = []
    for where, obj in docs:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        reg = registry_for(api_version)
        if reg.schema(api_version, kind) is None:
            continue
        name = (obj.get("metadata") or {}).get("name", "?")
        for p in reg.validate(obj):
            problems.append(Problem(f"{where} {kind}/{name} {p.path}", p.message))
    return problems


def is_custom_resource(obj: dict[str, Any]) -> bool:
    api_version = str(obj.get("apiVersion", ""))
    return registry_for(api_version).schema(api_version, str(obj.get("kind", ""))) is not None
