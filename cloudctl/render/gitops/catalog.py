"""The platform catalog (``flux/platform.yaml``) and the releases an inventory enables.

``platform_releases(inv)`` is the pure API the bootstrap pipeline uses: the enabled releases in
dependency order, each with its effective version and dependsOn (edges to disabled releases are
replaced by those releases' own dependencies, so the order of what remains is unchanged).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic.alias_generators import to_camel

from ...errors import InputError, Problem, RenderError
from ...inventory.models import Component, Inventory
from ...resources import read_text
from ...util.yamlcache import safe_load as yaml_safe_load

SourceType = Literal["helm", "oci", "git"]


@dataclass(frozen=True)
class Source:
    name: str
    type: SourceType
    url: str | None


@dataclass(frozen=True)
class CatalogRelease:
    name: str
    component: str
    values_key: str | None
    version_key: str | None
    chart: str | None
    source: str
    version: str
    namespace: str
    privileged: bool
    depends_on: tuple[str, ...]
    values_files: tuple[str, ...]
    schemas: dict[str, str]
    contract: str | None
    # release name -> values files merged (after values_files) when that release is enabled
    overlays: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Catalog:
    sources: dict[str, Source]
    releases: dict[str, CatalogRelease]
    flux_version: str | None = None
    """The pinned Flux release (``flux.version``); its manifest is gotk-components-<v>.yaml."""


@dataclass(frozen=True)
class PlatformRelease:
    """One HelmRelease of the rendered platform (all live in namespace flux-system)."""

    name: str
    namespace: str  # target namespace of the Helm release
    chart: str  # chart name, local chart path, or OCI URL
    version: str
    depends_on: tuple[str, ...]
    source: Source
    privileged: bool
    catalog: CatalogRelease


def _parse_catalog(text: str) -> Catalog:
    data = yaml_safe_load(text)
    sources = {
        name: Source(name=name, type=spec["type"], url=spec.get("url"))
        for name, spec in data["sources"].items()
    }
    releases: dict[str, CatalogRelease] = {}
    for name, spec in data["releases"].items():
        if spec["source"] not in sources:
            raise RenderError(
                f"flux/platform.yaml: release {name}: unknown source {spec['source']}"
            )
        component = spec["component"]
        releases[name] = CatalogRelease(
            name=name,
            component=component,
            values_key=spec.get("valuesKey", component),
            version_key=spec.get("versionKey", "version"),
            chart=spec.get("chart"),
            source=spec["source"],
            version=str(spec["version"]),
            namespace=spec["namespace"],
            privileged=bool(spec.get("privileged", False)),
            depends_on=tuple(spec.get("dependsOn") or ()),
            values_files=tuple(spec.get("values") or ()),
            schemas={str(k): v for k, v in (spec.get("schema") or {}).items()},
            contract=spec.get("contract"),
            overlays={str(k): tuple(v or ()) for k, v in (spec.get("overlays") or {}).items()},
        )
    for rel in releases.values():
        for dep in rel.depends_on:
            if dep not in releases:
                raise RenderError(
                    f"flux/platform.yaml: release {rel.name}: unknown dependency {dep}"
                )
        for other in rel.overlays:
            if other not in releases:
                raise RenderError(
                    f"flux/platform.yaml: release {rel.name}: overlay for unknown release {other}"
                )
    flux = data.get("flux") or {}
    version = flux.get("version")
    return Catalog(
        sources=sources,
        releases=releases,
        flux_version=None if version is None else str(version),
    )


@functools.cache
def load_catalog() -> Catalog:
    return _parse_catalog(read_text("flux", "platform.yaml"))


def component_of(inv: Inventory, path: str) -> Component:
    """``kube_ovn`` -> inv.platform.kube_ovn; ``kubevirt.cdi`` -> inv.platform.kubevirt.cdi."""
    obj: Any = inv.platform
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def inventory_path(path: str) -> str:
    """Inventory (camelCase) spelling of a component path, for error messages."""
    return "platform." + ".".join(to_camel(p) for p in path.split("."))


def is_enabled(inv: Inventory, rel: CatalogRelease) -> bool:
    parts = rel.component.split(".")
    # a nested component (kubevirt.cdi) needs its parent enabled too
    for i in range(1, len(parts) + 1):
        if not component_of(inv, ".".join(parts[:i])).enabled:
            return False
    if rel.name == "metallb-config":
        return bool(inv.platform.metallb.pools)
    return True


def _version(inv: Inventory, rel: CatalogRelease, source: Source) -> str:
    if rel.version_key is None:
        return rel.version
    override = getattr(component_of(inv, rel.component), rel.version_key)
    if override is None or str(override) == rel.version:
        return rel.version
    if source.type == "git":
        where = f"{inventory_path(rel.component)}.{rel.version_key}"
        raise InputError(
            Problem(
                where,
                f"{rel.name} is a local chart built from the vendored upstream manifests of "
                f"version {rel.version}; no other version can be rendered",
            )
        )
    return str(override)


def _effective_deps(name: str, catalog: Catalog, enabled: set[str]) -> tuple[str, ...]:
    out: list[str] = []

    def visit(dep: str, trail: tuple[str, ...]) -> None:
        if dep in trail:
            raise RenderError(f"flux/platform.yaml: dependency cycle {' -> '.join((*trail, dep))}")
        if dep in enabled:
            if dep not in out:
                out.append(dep)
            return
        for sub in catalog.releases[dep].depends_on:
            visit(sub, (*trail, dep))

    for dep in catalog.releases[name].depends_on:
        visit(dep, (name,))
    return tuple(out)


def _toposort(graph: dict[str, tuple[str, ...]], order: list[str]) -> list[str]:
    """Kahn's algorithm; ties broken by catalog order so the result is deterministic."""
    remaining = {n: set(d) for n, d in graph.items()}
    out: list[str] = []
    while remaining:
        ready = [n for n in order if n in remaining and not remaining[n]]
        if not ready:
            raise RenderError(f"dependency cycle among {sorted(remaining)}")
        for n in ready:
            out.append(n)
            del remaining[n]
        for deps in remaining.values():
            deps.difference_update(ready)
    return out


def platform_releases(inv: Inventory) -> list[PlatformRelease]:
    """Enabled platform releases in dependency (topological) order."""
    catalog = load_catalog()
    order = list(catalog.releases)
    enabled = {n for n, r in catalog.releases.items() if is_enabled(inv, r)}
    graph = {n: _effective_deps(n, catalog, enabled) for n in order if n in enabled}
    out: list[PlatformRelease] = []
    for name in _toposort(graph, order):
        rel = catalog.releases[name]
        source = catalog.sources[rel.source]
        chart = source.url or "" if source.type == "oci" else rel.chart or name
        out.append(
            PlatformRelease(
                name=name,
                namespace=rel.namespace,
                chart=chart,
                version=_version(inv, rel, source),
                depends_on=graph[name],
                source=source,
                privileged=rel.privileged,
                catalog=rel,
            )
        )
    return out
