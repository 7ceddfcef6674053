"""The Talos release catalog (``talos/catalog.yaml``): supported minors, Kubernetes ranges,
extension names per minor and pinned extension images per release."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from .resources import read_text
from .util.yamlcache import safe_load as yaml_safe_load


def parse_version(v: str) -> tuple[int, int, int]:
    core = v.strip().lstrip("v").split("-", 1)[0]
    parts = [int(p) for p in core.split(".")]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def minor_of(v: str) -> str:
    major, minor, _ = parse_version(v)
    return f"v{major}.{minor}"


@dataclass(frozen=True)
class PinnedExtension:
    name: str  # siderolabs/zfs
    tag: str  # 2.4.3-v1.13.9
    digest: str  # sha256:...

    @property
    def image_ref(self) -> str:
        return f"ghcr.io/{self.name}:{self.tag}@{self.digest}"


@dataclass(frozen=True)
class TalosMinor:
    minor: str
    kubernetes_min: str
    kubernetes_max: str
    multi_doc: bool
    schema: str
    extensions: frozenset[str] = field(default_factory=frozenset)
    aliases: dict[str, str] = field(default_factory=dict)

    def canonical_extension(self, name: str) -> str:
        """The current name of an extension (siderolabs/i915-ucode is an alias of i915)."""
        return self.aliases.get(name, name)

    def supports_kubernetes(self, k8s_version: str) -> bool:
        k = parse_version(k8s_version)[:2]
        return parse_version(self.kubernetes_min)[:2] <= k <= parse_version(self.kubernetes_max)[:2]


@dataclass(frozen=True)
class TalosRelease:
    version: str
    extensions: dict[str, PinnedExtension]
    source: str = ""
    """Where the pinned references were read (repo@commit:path), for provenance."""


@dataclass(frozen=True)
class TalosCatalog:
    minors: dict[str, TalosMinor]
    releases: dict[str, TalosRelease]

    def minor(self, version: str) -> TalosMinor | None:
        return self.minors.get(minor_of(version))

    def release(self, version: str) -> TalosRelease | None:
        return self.releases.get("v" + version.lstrip("v"))

    def releases_of(self, minor: str) -> list[str]:
        return sorted((v for v in self.releases if minor_of(v) == minor), key=parse_version)


def _load(raw: dict[str, Any]) -> TalosCatalog:
    minors: dict[str, TalosMinor] = {}
    for name, m in (raw.get("minors") or {}).items():
        minors[name] = TalosMinor(
            minor=name,
            kubernetes_min=str(m["kubernetes"]["min"]),
            kubernetes_max=str(m["kubernetes"]["max"]),
            multi_doc=bool(m.get("multiDoc", False)),
            schema=str(m["schema"]),
            extensions=frozenset(m.get("extensions") or ()),
            aliases=dict(m.get("aliases") or {}),
        )
    releases: dict[str, TalosRelease] = {}
    for version, r in (raw.get("releases") or {}).items():
        exts = {
            name: PinnedExtension(name=name, tag=str(e["tag"]), digest=str(e["digest"]))
            for name, e in (r.get("extensions") or {}).items()
        }
        releases[version] = TalosRelease(
            version=version, extensions=exts, source=str(r.get("source") or "")
        )
    return TalosCatalog(minors=minors, releases=releases)


@functools.cache
def talos_catalog() -> TalosCatalog:
    return _load(yaml_safe_load(read_text("talos", "catalog.yaml")))
