"""What a commit of the GitOps repository changes, in words (pure).

:func:`summarize` compares two snapshots of the paths cloudctl owns in the repository (repo
path -> bytes, before and after) and says what changed for a reviewer: each HelmRelease's chart
and version (``spec.chart.spec.version``; a ``chartRef`` to an ``OCIRepository`` reads its
``ref``; a chart kept in the repository reads its ``Chart.yaml``), whose values changed
(``spec.values`` and ``spec.valuesFrom``, compared as data), releases added or removed, and
from the cluster record (:mod:`cloudctl.gitops.layout`) the Talos and Kubernetes versions, the
installer image and the nodes added, removed or changed; then the files. No I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

RECORD_API = "cloudctl.io/v1alpha1"
RECORD_KIND = "ClusterRecord"
MAX_FILE_LINES = 40
"""Files listed one per line in a commit message; the rest are counted."""


@dataclass(frozen=True)
class FileChange:
    kind: Literal["added", "modified", "removed"]
    path: str

    @property
    def mark(self) -> str:
        return {"added": "A", "modified": "M", "removed": "D"}[self.kind]


@dataclass(frozen=True)
class Release:
    """One HelmRelease as a reviewer sees it."""

    name: str
    chart: str
    version: str
    values: str
    """``spec.values`` + ``spec.valuesFrom`` as canonical JSON (compared, never shown)."""
    spec: str
    """The rest of ``spec`` as canonical JSON."""
    chart_dir: str = ""
    """Repository path of a chart kept in the repository (``""``: a chart from elsewhere)."""


@dataclass(frozen=True)
class Record:
    """The cluster record's facts (versions and nodes)."""

    talos: str = ""
    kubernetes: str = ""
    installer: str = ""
    nodes: dict[str, str] = field(default_factory=dict)
    """node name -> its description ("role ip")."""


@dataclass(frozen=True)
class ChangeSummary:
    files: tuple[FileChange, ...]
    lines: tuple[str, ...]
    """What changed, one fact a line (versions, values, nodes), then the files."""
    highlights: tuple[str, ...]
    """Short phrases for a commit subject (most important first)."""
    releases_changed: tuple[str, ...] = ()
    """Releases whose chart version, values or settings changed, or that were added/removed."""

    @property
    def empty(self) -> bool:
        return not self.files


def file_changes(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> tuple[FileChange, ...]:
    out = []
    for path in sorted(set(old) | set(new)):
        if path not in old:
            out.append(FileChange("added", path))
        elif path not in new:
            out.append(FileChange("removed", path))
        elif old[path] != new[path]:
            out.append(FileChange("modified", path))
    return tuple(out)


def _docs(path: str, data: bytes) -> list[dict[str, Any]]:
    if not path.endswith((".yaml", ".yml")) or "/templates/" in f"/{path}":
        return []
    try:
        return [d for d in yaml.safe_load_all(data) if isinstance(d, dict)]
    except (yaml.YAMLError, UnicodeDecodeError):
        return []  # not ours to judge here: the renderer checks its own YAML


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _get(doc: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(k)
    return doc


def releases(files: Mapping[str, bytes]) -> dict[str, Release]:
    """The HelmReleases in ``files`` by name (``<namespace>/<name>`` outside flux-system, e.g.
    a tenant's CNI release), with chart and version resolved."""
    helm: list[dict[str, Any]] = []
    oci: dict[str, dict[str, Any]] = {}
    charts: dict[str, tuple[str, str]] = {}
    for path, data in files.items():
        for doc in _docs(path, data):
            kind, api = doc.get("kind"), str(doc.get("apiVersion", ""))
            if kind == "HelmRelease" and api.startswith("helm.toolkit.fluxcd.io/"):
                helm.append(doc)
            elif kind == "OCIRepository" and api.startswith("source.toolkit.fluxcd.io/"):
                oci[str(_get(doc, "metadata", "name"))] = doc
            elif path.endswith("/Chart.yaml") or path == "Chart.yaml":
                charts[path[: -len("Chart.yaml")].rstrip("/")] = (
                    str(doc.get("name", "")), str(doc.get("version", "")))
    out = {}
    for doc in helm:
        name = str(_get(doc, "metadata", "name"))
        namespace = str(_get(doc, "metadata", "namespace") or "flux-system")
        if namespace != "flux-system":
            name = f"{namespace}/{name}"
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        chart, version, chart_dir = "?", "?", ""
        cspec = _get(spec, "chart", "spec")
        ref = spec.get("chartRef")
        if isinstance(cspec, dict):
            chart = str(cspec.get("chart", "?"))
            if cspec.get("version") is not None:
                version = str(cspec["version"])
            elif _get(cspec, "sourceRef", "kind") == "GitRepository":
                chart_dir = chart.removeprefix("./").rstrip("/")
                chart, version = charts.get(chart_dir, (chart, "?"))
        elif isinstance(ref, dict) and ref.get("kind") == "OCIRepository":
            src = oci.get(str(ref.get("name")), {})
            chart = str(_get(src, "spec", "url") or ref.get("name", "?")).rsplit("/", 1)[-1]
            tag = _get(src, "spec", "ref") or {}
            version = str(tag.get("tag") or tag.get("semver") or tag.get("digest") or "?") \
                if isinstance(tag, dict) else "?"
        values = {"values": spec.get("values"), "valuesFrom": spec.get("valuesFrom")}
        rest = {k: v for k, v in spec.items() if k not in ("values", "valuesFrom")}
        out[name] = Release(name, chart, version, _canon(values), _canon(rest), chart_dir)
    return out


def record(files: Mapping[str, bytes]) -> Record | None:
    """The cluster record in ``files`` (a ``ClusterRecord`` document), if there is one."""
    for path, data in sorted(files.items()):
        for doc in _docs(path, data):
            if doc.get("kind") == RECORD_KIND and doc.get("apiVersion") == RECORD_API:
                nodes = {}
                for n in doc.get("nodes") or []:
                    if isinstance(n, dict) and n.get("name"):
                        nodes[str(n["name"])] = " ".join(
                            str(n[k]) for k in ("role", "ip") if n.get(k))
                return Record(str(doc.get("talosVersion", "")),
                              str(doc.get("kubernetesVersion", "")),
                              str(doc.get("installerImage", "")), nodes)
    return None


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


def summarize(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> ChangeSummary:
    """What changes from ``old`` to ``new`` (repo path -> content of the paths cloudctl owns)."""
    files = file_changes(old, new)
    if not files:
        return ChangeSummary((), (), ())
    lines: list[str] = []
    high: list[str] = []
    rec_old, rec_new = record(old), record(new)
    if rec_new is not None:
        before = rec_old or Record()
        for label, a, b in (("Talos", before.talos, rec_new.talos),
                            ("Kubernetes", before.kubernetes, rec_new.kubernetes)):
            if a != b:
                lines.append(f"{label}: {a} -> {b}" if a else f"{label}: {b}")
                high.append(f"{label} {b}")
        if rec_old is not None and before.installer != rec_new.installer:
            lines.append(f"Installer image: {before.installer} -> {rec_new.installer}")
        added = [n for n in rec_new.nodes if n not in before.nodes]
        removed = [n for n in before.nodes if n not in rec_new.nodes]
        changed = [n for n in rec_new.nodes
                   if n in before.nodes and before.nodes[n] != rec_new.nodes[n]]
        if rec_old is not None:
            if added:
                lines.append("Nodes added: " + _names(
                    [f"{n} ({rec_new.nodes[n]})" for n in added]))
                high.append("+node " + _names(added))
            if removed:
                lines.append("Nodes removed: " + _names(removed))
                high.append("-node " + _names(removed))
            for n in changed:
                lines.append(f"Node changed: {n} ({before.nodes[n]} -> {rec_new.nodes[n]})")
        else:
            lines.append("Nodes: " + _names(list(rec_new.nodes)))
    rel_old, rel_new = releases(old), releases(new)
    touched: list[str] = []
    for name in sorted(set(rel_old) | set(rel_new)):
        ra, rb = rel_old.get(name), rel_new.get(name)
        if ra is None and rb is not None:
            lines.append(f"Release added: {name} ({rb.chart} {rb.version})")
            touched.append(name)
        elif rb is None and ra is not None:
            lines.append(f"Release removed: {name} (was {ra.chart} {ra.version})")
            high.append(f"-{name}")
            touched.append(name)
        elif ra is not None and rb is not None:
            if (ra.chart, ra.version) != (rb.chart, rb.version):
                chart = rb.chart if ra.chart == rb.chart else f"{ra.chart} -> {rb.chart}"
                lines.append(f"Release {name}: chart {chart} {ra.version} -> {rb.version}")
                high.append(f"{name} {ra.version} -> {rb.version}")
            if ra.values != rb.values or ra.spec != rb.spec or (ra.chart, ra.version) != (
                    rb.chart, rb.version):
                touched.append(name)
    if rel_old and sum(1 for n in rel_new if n not in rel_old) > 0:
        high.append("+release " + _names([n for n in rel_new if n not in rel_old]))
    vals = [n for n in sorted(set(rel_old) & set(rel_new))
            if rel_old[n].values != rel_new[n].values]
    if vals:
        lines.append("Values changed: " + _names(vals))
        high.append("values of " + _names(vals))
    other = [n for n in sorted(set(rel_old) & set(rel_new))
             if rel_old[n].spec != rel_new[n].spec
             and (rel_old[n].chart, rel_old[n].version) == (rel_new[n].chart, rel_new[n].version)]
    if other:
        lines.append("Release settings changed: " + _names(other))
    local = [n for n in sorted(set(rel_old) & set(rel_new))
             if rel_new[n].chart_dir and rel_old[n].version == rel_new[n].version
             and any(f.path.startswith(rel_new[n].chart_dir + "/") for f in files)]
    if local:
        lines.append("Chart files changed (same chart version): " + _names(local))
        touched += [n for n in local if n not in touched]
    counts = {k: sum(1 for f in files if f.kind == k) for k in ("added", "modified", "removed")}
    lines.append(f"Files: {counts['added']} added, {counts['modified']} modified, "
                 f"{counts['removed']} removed")
    lines += [f"  {f.mark} {f.path}" for f in files[:MAX_FILE_LINES]]
    if len(files) > MAX_FILE_LINES:
        lines.append(f"  ... and {len(files) - MAX_FILE_LINES} more")
    return ChangeSummary(files, tuple(lines), tuple(high), tuple(touched))


def commit_message(cluster: str, summary: ChangeSummary, *, first: bool = False,
                   extra: Sequence[str] = ()) -> str:
    """Subject line plus the summary's lines (and ``extra`` lines, e.g. from an upgrade)."""
    if first:
        subject = f"cloudctl: {cluster}: render ({len(summary.files)} files)"
    elif summary.highlights:
        subject = f"cloudctl: {cluster}: " + "; ".join(summary.highlights[:3])
        if len(summary.highlights) > 3:
            subject += f" (+{len(summary.highlights) - 3} more)"
    else:
        subject = f"cloudctl: {cluster}: {len(summary.files)} file(s) changed"
    body = [*summary.lines, *(["", *extra] if extra else [])]
    return subject + "\n\n" + "\n".join(body) + "\n"
