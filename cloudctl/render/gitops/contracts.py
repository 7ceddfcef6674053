"""The vendored CRDs the GitOps tree is validated against, and the tree-wide check."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import yaml

from ...contracts import CrdRegistry
from ...errors import Problem
from ...resources import read_text
from .flux import vendored_documents
from .localcharts import OPERATORS, operator_documents

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

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
            CrdRegistry.from_documents(
                yaml.load_all(read_text("helm-values", relative), Loader=_LOADER)
            )
        )
    for chart in OPERATORS:
        reg.merge(CrdRegistry.from_documents(doc for _, doc in operator_documents(chart)))
    return reg


def custom_resource_problems(
    docs: Iterable[tuple[str, dict[str, Any]]],
) -> list[Problem]:
    """Validate every (where, object) whose kind a vendored CRD defines."""
    reg = crd_registry()
    problems: list[Problem] = []
    for where, obj in docs:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        if reg.schema(api_version, kind) is None:
            continue
        name = (obj.get("metadata") or {}).get("name", "?")
        for p in reg.validate(obj):
            problems.append(Problem(f"{where} {kind}/{name} {p.path}", p.message))
    return problems


def is_custom_resource(obj: dict[str, Any]) -> bool:
    return (
        crd_registry().schema(str(obj.get("apiVersion", "")), str(obj.get("kind", ""))) is not None
    )
