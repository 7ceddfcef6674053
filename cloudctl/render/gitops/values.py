"""Helm values per release: defaults + overlays (helm-values/, chosen by flux/platform.yaml's
``values`` and ``overlays``) + values computed from the inventory and the preset
(talos/preset.yaml) + the inventory's ``platform.<x>.values`` overrides; and their contract
check."""

from __future__ import annotations

import copy
import functools
import json
import posixpath
from collections.abc import Mapping
from typing import Any

from ...contracts import validate_values
from ...errors import Problem
from ...inventory.models import Inventory
from ...preset import preset
from ...resources import read_text
from ...util.merge import deep_merge
from ...util.yamlcache import safe_load as yaml_safe_load
from .catalog import CatalogRelease, PlatformRelease, component_of, inventory_path
from .metallb import metallb_config_values


@functools.cache
def _parsed_values_file(relative: str) -> dict[str, Any]:
    data = yaml_safe_load(read_text("helm-values", relative))
    return dict(data or {})


def _load_values_file(relative: str) -> dict[str, Any]:
    return copy.deepcopy(_parsed_values_file(relative))


@functools.cache
def _schema_text(relative: str) -> str:
    return read_text("helm-values", relative)


def load_schema(relative: str) -> dict[str, Any]:
    return json.loads(_schema_text(relative))  # type: ignore[no-any-return]


def chart_defaults(schema_file: str) -> dict[str, Any]:
    """The chart's own values.yaml, vendored next to its values.schema.json."""
    return _load_values_file(posixpath.join(posixpath.dirname(schema_file), "values.yaml"))


def _computed(inv: Inventory, rel: PlatformRelease) -> dict[str, Any]:
    """Values that follow from the inventory (not user-editable defaults)."""
    name = rel.name
    if name == "cilium":
        # Cilium reaches the API through KubePrism (no Service routing before it runs); the
        # Talos overlay names these keys, the endpoint itself is the preset's
        prism = preset().kube_prism
        return {"k8sServiceHost": prism.host, "k8sServicePort": prism.port}
    if name == "kube-ovn":
        kovn = inv.platform.kube_ovn
        return {
            "namespace": rel.namespace,
            "MASTER_NODES": ",".join(str(n.ip) for n in inv.controlplanes),
            "ipv4": {
                "POD_CIDR": str(kovn.pod_cidr),
                "POD_GATEWAY": str(kovn.pod_gateway),
                "SVC_CIDR": str(inv.cluster.service_subnets[0]),
                "JOIN_CIDR": str(kovn.join_cidr),
            },
        }
    if name == "metallb-config":
        return metallb_config_values(inv)
    return {}


def release_values(
    inv: Inventory, rel: PlatformRelease, enabled: set[str] | None = None
) -> dict[str, Any]:
    """The complete values document of one release, as written into its HelmRelease."""
    names = enabled if enabled is not None else {rel.name}
    values: dict[str, Any] = {}
    overlays = [f for other, files in rel.catalog.overlays.items() if other in names for f in files]
    for relative in (*rel.catalog.values_files, *overlays):
        values = deep_merge(values, _load_values_file(relative))
    values = deep_merge(values, _computed(inv, rel))
    if rel.catalog.values_key is not None:
        values = deep_merge(values, component_of(inv, rel.catalog.values_key).values)
    return values


def chart_values_problems(
    release: CatalogRelease, version: str, values: Mapping[str, Any], *, prefix: str = "values"
) -> list[Problem]:
    """Contract problems of one values document for a catalog release at a chart version: the
    chart's own ``values.schema.json`` (when vendored for that version; Helm validates the
    chart's defaults merged with the given values) and cloudctl's contract for the chart.
    Needs no inventory, so the Kubernetes API emulator can check applied HelmReleases too."""
    problems: list[Problem] = []
    checks: list[tuple[str, Mapping[str, Any]]] = []
    schema_file = release.schemas.get(version)
    if schema_file:
        checks.append((schema_file, deep_merge(chart_defaults(schema_file), values)))
    if release.contract:
        checks.append((release.contract, values))
    for relative, document in checks:
        for p in validate_values(document, load_schema(relative)):
            where = f"{prefix}.{p.path}" if p.path else prefix
            problems.append(Problem(where, f"{p.message} (contract: helm-values/{relative})"))
    return problems


def values_problems(rel: PlatformRelease, values: Mapping[str, Any]) -> list[Problem]:
    """``chart_values_problems`` for a rendered release. Each problem's path is the inventory
    field a user edits (``platform.cilium.values.kubeProxyReplacement``) when the release takes
    overrides from the inventory, else ``<release> values.<key>``."""
    if rel.catalog.values_key is not None:
        prefix = f"{inventory_path(rel.catalog.values_key)}.values"
    else:
        prefix = f"{rel.name} values"
    return chart_values_problems(rel.catalog, rel.version, values, prefix=prefix)
