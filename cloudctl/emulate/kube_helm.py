"""The emulated helm-controller's Helm actions: charts rendered by the real ``helm`` binary.

:class:`HelmInstaller` is what ``kube_reconcile.Controllers`` calls when a HelmRelease's install
or upgrade runs. For a chart whose source it can read (a ``ChartLocator`` turns the source
object and the chart path into a local chart directory; the rack's locator reads
``GitRepository`` artifacts from Git on loopback, :mod:`cloudctl.emulate.rack_gitops`) it does
Helm's part of the action:

- ``helm template <release> <chart dir> --namespace <release namespace> --values <file>``
  (the release's merged values: ``valuesFrom`` then ``spec.values``), with ``--kube-version``
  the emulated API server's version, ``--api-versions`` every served group/version and
  group/version/kind, ``--skip-tests`` and, unless the action's CRD policy is ``Skip``,
  ``--include-crds``. helm's own error (its stderr) is the action's error.
- CRDs of the chart's ``crds/`` directory are created (policy ``Create``) or applied
  (``CreateReplace``) first, without ownership metadata, and served at once (Helm waits for
  them to be Established before it installs the rest).
- Every other object must map to a served kind, as with Helm ("resource mapping not found ...
  ensure CRDs are installed first": nothing is applied then). A namespaced object without a
  namespace gets the release namespace. An object that already exists and does not carry this
  release's ownership metadata is refused, as Helm refuses to adopt it.
- The objects are server-side applied in dependency order (CRDs, namespaces, RBAC, ...,
  workloads, custom resources) with the field manager ``helm-controller``, each labelled
  ``app.kubernetes.io/managed-by: Helm`` plus helm-controller's origin labels
  (``helm.toolkit.fluxcd.io/name``/``namespace``) and annotated ``meta.helm.sh/release-name``
  / ``meta.helm.sh/release-namespace``. An upgrade deletes the objects of the previous manifest
  that the new one no longer has (unless annotated ``helm.sh/resource-policy: keep``).

A failure (render, mapping, ownership, API rejection) is a failed Helm action: the caller
counts it and applies helm-controller's retry/stall rules. Objects applied before an API
rejection stay, as with a failed Helm install.

Charts from other sources (HelmRepository, OCI: not available offline) and every chart when no
``helm`` binary is found are not rendered: the release becomes Ready without objects (but with
the CRDs its chart ships when they are vendored, :attr:`HelmInstaller.chart_crds`), and the
reason is kept in :attr:`HelmInstaller.not_installed` (the rack publishes it in ``rack.json``
and logs it).

Not done: hooks (documents annotated ``helm.sh/hook`` are not run and not installed), waiting
for the installed workloads to become ready (``--wait``), uninstall when a HelmRelease is
deleted, Helm's release Secrets in the storage namespace, post-renderers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..kube.objects import order_for_apply
from ..util.yamlcache import safe_load as yaml_safe_load
from .kube_fields import clone
from .kube_store import ApiError, Store

__all__ = [
    "HELM_ENV",
    "ChartLocator",
    "ChartUnavailable",
    "HelmAction",
    "HelmInstaller",
    "Outcome",
    "find_helm",
]

HELM_ENV = "CLOUDCTL_HELM"
"""Environment variable naming the helm binary (a path or a name on PATH); default ``helm``."""
MANAGER = "helm-controller"
MANAGED_BY = "app.kubernetes.io/managed-by"
RELEASE_NAME = "meta.helm.sh/release-name"
RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"
ORIGIN_NAME = "helm.toolkit.fluxcd.io/name"
ORIGIN_NAMESPACE = "helm.toolkit.fluxcd.io/namespace"
RESOURCE_POLICY = "helm.sh/resource-policy"
HOOK = "helm.sh/hook"
RENDER_TIMEOUT = 60.0

_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)
_SOURCE = re.compile(r"^# Source: (.+)$", re.MULTILINE)


class ChartUnavailable(Exception):
    """The chart's source is readable here but does not yield the chart (Flux: the chart
    artifact failed); the release is not attempted."""


ChartLocator = Callable[[Mapping[str, Any], str], "Path | None"]
"""(source object, chart path in it) -> a local directory holding the chart, or None when the
source cannot be read here (nothing to render). Raises :class:`ChartUnavailable`."""


def find_helm(env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(path of the helm binary or None, how it was looked up): ``$CLOUDCTL_HELM`` when set
    (a path or a name on PATH), else ``helm`` on PATH."""
    env = os.environ if env is None else env
    wanted = env.get(HELM_ENV, "").strip()
    if wanted:
        found = shutil.which(wanted, path=env.get("PATH"))
        how = f"{HELM_ENV}={wanted}"
        return found, how if found else f"{how} is not an executable"
    found = shutil.which("helm", path=env.get("PATH"))
    return found, "helm on PATH" if found else f"no helm on PATH and {HELM_ENV} not set"


@dataclass(frozen=True)
class HelmAction:
    """One install/upgrade of a HelmRelease, as helm-controller runs it."""

    hr_namespace: str
    hr_name: str
    release: str
    namespace: str
    """The release namespace (``spec.targetNamespace`` or the HelmRelease's)."""
    action: str
    """``install`` or ``upgrade``."""
    spec: Mapping[str, Any]
    source: Mapping[str, Any] | None
    chart_path: str
    values: Mapping[str, Any]

    @property
    def key(self) -> str:
        return f"{self.hr_namespace}/{self.hr_name}"

    @property
    def crd_policy(self) -> str:
        default = "Create" if self.action == "install" else "Skip"
        return str((self.spec.get(self.action) or {}).get("crds") or default)


@dataclass(frozen=True)
class Outcome:
    error: str | None = None
    """The Helm action failed with this error."""
    artifact: str | None = None
    """The chart could not be obtained from its (readable) source."""
    objects: int = 0
    """Objects installed (0 also when the chart was not rendered)."""


@dataclass(frozen=True)
class _Rendered:
    crds: tuple[dict[str, Any], ...]
    objects: tuple[dict[str, Any], ...]
    hooks: int


class _RenderError(Exception):
    pass


def _ref(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("apiVersion")), str(obj.get("kind")),
            str(meta.get("namespace") or ""), str(meta.get("name")))


def _describe(ref: tuple[str, str, str, str]) -> str:
    _api, kind, ns, name = ref
    return f'{kind} "{name}" in namespace "{ns}"' if ns else f'{kind} "{name}"'


def _chart_digest(chart_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(chart_dir.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(chart_dir).as_posix().encode() + b"\0")
            h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def parse_manifest(text: str, chart: str) -> _Rendered:
    """Split ``helm template`` output into crds/ CRDs, installable objects and hooks."""
    crds: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    hooks = 0
    for chunk in _DOC_SPLIT.split(text):
        m = _SOURCE.search(chunk)
        source = m.group(1).strip() if m else "manifest"
        try:
            doc = yaml_safe_load(chunk)
        except yaml.YAMLError as exc:
            raise _RenderError(f"YAML parse error on {source}: {exc}") from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise _RenderError(f"{source}: a manifest document must be a mapping")
        docs = (
            [d for d in doc["items"] if isinstance(d, dict)]
            if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list)
            else [doc]
        )
        for d in docs:
            if not d.get("apiVersion") or not d.get("kind"):
                raise _RenderError(f"{source}: object has no apiVersion or kind")
            if not (d.get("metadata") or {}).get("name"):
                raise _RenderError(f"{source}: {d['kind']} has no metadata.name")
            annotations = (d.get("metadata") or {}).get("annotations") or {}
            if HOOK in annotations:
                hooks += 1
            elif _from_crds_dir(source, chart):
                crds.append(d)
            else:
                objects.append(d)
    return _Rendered(tuple(crds), tuple(objects), hooks)


@dataclass
class HelmInstaller:
    """Helm's part of helm-controller's actions in the emulator (see the module docstring)."""

    helm: str | None
    locate: ChartLocator | None = None
    helm_lookup: str = ""
    """How the binary was looked up (shown when it was not found)."""
    log: Callable[[str], None] | None = None
    timeout: float = RENDER_TIMEOUT
    installed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """HelmRelease namespace/name -> its last successful action (release, action, objects)."""
    not_installed: dict[str, str] = field(default_factory=dict)
    """HelmRelease namespace/name -> why its chart's objects were not installed."""
    renders: int = 0
    """``helm template`` runs (cached renders not counted)."""
    chart_crds: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    """HelmRelease name -> the CRDs its chart ships in ``crds/``, vendored: installed by the
    action as Helm would when the chart itself cannot be rendered here."""
    _manifests: dict[str, set[tuple[str, str, str, str]]] = field(default_factory=dict)
    _cache: dict[str, _Rendered] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_environment(
        cls,
        locate: ChartLocator | None,
        *,
        log: Callable[[str], None] | None = None,
        chart_crds: Mapping[str, tuple[dict[str, Any], ...]] | None = None,
    ) -> HelmInstaller:
        helm, how = find_helm()
        return cls(helm, locate, helm_lookup=how, log=log, chart_crds=dict(chart_crds or {}))

    # ------------------------------------------------------------------ reporting

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "binary": self.helm,
                "lookup": self.helm_lookup,
                "renders": self.renders,
                "installed": clone(self.installed),
                "not_installed": dict(self.not_installed),
            }

    def _skip(self, key: str, why: str) -> Outcome:
        with self._lock:
            new = self.not_installed.get(key) != why
            self.not_installed[key] = why
        if new and self.log is not None:
            self.log(f"HelmRelease {key}: {why}")
        return Outcome()

    # ------------------------------------------------------------------ the action

    def run(self, store: Store, act: HelmAction, kube_version: str) -> Outcome:
        source = act.source or {}
        kind = str(source.get("kind") or "")
        meta = source.get("metadata") or {}
        where = f"{kind or 'source'} '{meta.get('namespace', '')}/{meta.get('name', '')}'"
        try:
            chart_dir = self.locate(source, act.chart_path) if self.locate and source else None
        except ChartUnavailable as exc:
            return Outcome(artifact=str(exc))
        if chart_dir is None or self.helm is None:
            crds = self.chart_crds.get(act.hr_name, ()) if act.crd_policy != "Skip" else ()
            error = self._install_crds(store, act, crds)
            if error is not None:
                return Outcome(error=error)
            extra = f" (the chart's {len(crds)} vendored CRDs installed)" if crds else ""
            if chart_dir is None:
                why = f"chart from {where} is not readable by the emulator (offline)"
            else:
                why = (f"helm not found ({self.helm_lookup or 'no helm on PATH'}): chart "
                       f"{act.chart_path} not rendered")
            return self._skip(act.key, f"{why}: release Ready without its objects{extra}")
        include_crds = act.crd_policy != "Skip"
        try:
            rendered = self._render(store, act, chart_dir, kube_version, include_crds)
        except _RenderError as exc:
            return Outcome(error=str(exc))
        error = self._install(store, act, rendered)
        if error is not None:
            return Outcome(error=error)
        count = len(rendered.crds) + len(rendered.objects)
        with self._lock:
            self.not_installed.pop(act.key, None)
            self.installed[act.key] = {
                "release": f"{act.namespace}/{act.release}",
                "action": act.action,
                "chart": act.chart_path,
                "objects": count,
                "hooks_skipped": rendered.hooks,
            }
        return Outcome(objects=count)

    def _render(
        self, store: Store, act: HelmAction, chart_dir: Path, kube_version: str, crds: bool
    ) -> _Rendered:
        assert self.helm is not None
        api_versions = sorted(
            {rt.api_version for rt in store.types()}
            | {f"{rt.api_version}/{rt.kind}" for rt in store.types()}
        )
        key = hashlib.sha256(
            json.dumps(
                [str(chart_dir), _chart_digest(chart_dir), act.release, act.namespace,
                 act.values, kube_version, api_versions, crds, act.action],
                sort_keys=True, default=str,
            ).encode()
        ).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="cloudctl-helm-") as tmp:
            values_file = Path(tmp) / "values.yaml"
            values_file.write_text(json.dumps(act.values))  # JSON is YAML
            cmd = [self.helm, "template", act.release, str(chart_dir),
                   "--namespace", act.namespace, "--values", str(values_file),
                   "--kube-version", kube_version, "--skip-tests"]
            if act.action == "upgrade":
                cmd.append("--is-upgrade")
            if crds:
                cmd.append("--include-crds")
            for v in api_versions:
                cmd += ["--api-versions", v]
            env = {**os.environ, "HELM_CACHE_HOME": f"{tmp}/cache",
                   "HELM_CONFIG_HOME": f"{tmp}/config", "HELM_DATA_HOME": f"{tmp}/data"}
            try:
                proc = subprocess.run(cmd, capture_output=True, timeout=self.timeout, env=env,
                                      cwd=tmp)
            except subprocess.TimeoutExpired:
                raise _RenderError(f"helm template timed out after {self.timeout:g}s") from None
            except OSError as exc:
                raise _RenderError(f"cannot run {self.helm}: {exc}") from None
        with self._lock:
            self.renders += 1
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise _RenderError(err or f"helm template exited with {proc.returncode}")
        chart_name = _chart_name(chart_dir)
        rendered = parse_manifest(proc.stdout.decode(errors="replace"), chart_name)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = rendered
        return rendered

    @staticmethod
    def _install_crds(
        store: Store, act: HelmAction, crds: tuple[dict[str, Any], ...]
    ) -> str | None:
        """Helm's ``crds/`` step: create (policy Create) or apply (CreateReplace) each CRD,
        without ownership metadata, and wait for it to be served."""
        crd_type = store.type_of("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        assert crd_type is not None
        for crd in crds:
            name = str(crd["metadata"]["name"])
            if act.crd_policy == "Create" and store.lookup(crd_type, None, name) is not None:
                continue
            try:
                store.apply(crd_type, None, name, crd, manager=MANAGER, force=True)
            except ApiError as exc:
                return f"failed to install CRD {name}: {exc.message}"
            stored = store.lookup(crd_type, None, name)
            if stored is not None and not store.is_established(name):
                store.register_crd(stored.obj)  # Helm waits for Established
        return None

    def _install(self, store: Store, act: HelmAction, rendered: _Rendered) -> str | None:
        error = self._install_crds(store, act, rendered.crds)
        if error is not None:
            return error
        objects: list[dict[str, Any]] = []
        unmapped: list[str] = []
        for obj in rendered.objects:
            rt = store.type_of(str(obj["apiVersion"]), str(obj["kind"]))
            meta = obj.get("metadata") or {}
            if rt is None:
                unmapped.append(
                    f'resource mapping not found for name: "{meta.get("name")}" namespace: '
                    f'"{meta.get("namespace") or ""}" from "": no matches for kind '
                    f'"{obj["kind"]}" in version "{obj["apiVersion"]}"'
                )
                continue
            objects.append(self._owned(obj, act, rt.namespaced))
        if unmapped:
            return ("unable to build kubernetes objects from release manifest: "
                    + "; ".join(unmapped) + "\nensure CRDs are installed first")
        with self._lock:
            previous = set(self._manifests.get(act.key, set()))
        refs = {_ref(o) for o in objects}
        conflicts = [
            problem
            for o in objects
            if _ref(o) not in previous
            for problem in [self._ownership_problem(store, o, act)]
            if problem
        ]
        if conflicts:
            return (f"rendered manifests contain a resource that already exists. Unable to "
                    f"continue with {act.action}: " + "; ".join(conflicts))
        for item in order_for_apply(objects):
            rt = store.type_of(str(item["apiVersion"]), str(item["kind"]))
            assert rt is not None
            meta = item["metadata"]
            try:
                store.apply(rt, meta.get("namespace"), meta["name"], item, manager=MANAGER,
                            force=True)
            except ApiError as exc:
                verb = "create" if _ref(item) not in previous else "update"
                return f"failed to {verb} resource: {exc.message}"
        for ref in sorted(previous - refs):
            self._delete(store, ref)
        with self._lock:
            self._manifests[act.key] = refs
        return None

    @staticmethod
    def _owned(obj: Mapping[str, Any], act: HelmAction, namespaced: bool) -> dict[str, Any]:
        out = clone(dict(obj))
        meta = out.setdefault("metadata", {})
        if namespaced:
            meta.setdefault("namespace", act.namespace)
        else:
            meta.pop("namespace", None)
        labels = meta.get("labels") or {}
        labels.update({MANAGED_BY: "Helm", ORIGIN_NAME: act.hr_name,
                       ORIGIN_NAMESPACE: act.hr_namespace})
        meta["labels"] = labels
        annotations = meta.get("annotations") or {}
        annotations.update({RELEASE_NAME: act.release, RELEASE_NAMESPACE: act.namespace})
        meta["annotations"] = annotations
        return out

    @staticmethod
    def _ownership_problem(store: Store, obj: Mapping[str, Any], act: HelmAction) -> str | None:
        """Why Helm would refuse to adopt the existing object (None: absent or ours)."""
        rt = store.type_of(str(obj["apiVersion"]), str(obj["kind"]))
        meta = obj["metadata"]
        stored = store.lookup(rt, meta.get("namespace"), meta["name"]) if rt else None
        if stored is None:
            return None
        have = stored.obj.get("metadata") or {}
        labels, annotations = have.get("labels") or {}, have.get("annotations") or {}
        problems = []
        if labels.get(MANAGED_BY) != "Helm":
            problems.append(f'label {MANAGED_BY}={labels.get(MANAGED_BY)!r}: must be "Helm"')
        for key, want in ((RELEASE_NAME, act.release), (RELEASE_NAMESPACE, act.namespace)):
            if annotations.get(key) != want:
                problems.append(f'annotation {key}={annotations.get(key)!r}: must be "{want}"')
        if not problems:
            return None
        return (f"{_describe(_ref(obj))} exists and cannot be imported into the current "
                f"release: invalid ownership metadata; " + "; ".join(problems))

    @staticmethod
    def _delete(store: Store, ref: tuple[str, str, str, str]) -> None:
        api_version, kind, ns, name = ref
        rt = store.type_of(api_version, kind)
        stored = store.lookup(rt, ns or None, name) if rt else None
        if rt is None or stored is None:
            return
        if ((stored.obj.get("metadata") or {}).get("annotations") or {}).get(
            RESOURCE_POLICY
        ) == "keep":
            return
        store.delete(rt, ns or None, name)


def _from_crds_dir(source: str, chart: str) -> bool:
    """Whether a ``# Source:`` path is in the ``crds/`` directory of the chart or a subchart."""
    parts = source.split("/")
    return parts[0] == chart and "crds" in parts[1:-1] and "templates" not in parts


def _chart_name(chart_dir: Path) -> str:
    try:
        doc = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return chart_dir.name
    return str((doc or {}).get("name") or chart_dir.name)
