"""Real kubectl (its built-in kustomize) and helm against every rendered tree (issue 13, 1a/1b).

a. ``kubectl kustomize`` builds every kustomization directory of the rendered ``gitops/`` tree
   (direct and GitOps mode; the example inventory and a 100-node synthetic one), and what it
   builds equals what cloudctl applies: in direct mode the objects of the flux and platform
   stages (``install_flux``, ``install_platform_direct``: Flux, the platform, the local charts'
   manifests); in GitOps mode the Flux install and sync objects cloudctl applies itself, and the
   tree it pushes to Git, which the (emulated) kustomize-controller applies.
b. ``helm lint`` and ``helm template`` of every local chart of the GitOps tree with its
   HelmRelease's release name, namespace and values, and what helm renders equals what direct
   mode applies for that release (``local_chart_manifests``) apart from the two ordering
   annotations only direct mode carries.

"Equal" compares parsed objects keyed by (apiVersion, kind, namespace, name), bodies included.
The tools are the ones ``.ci/run`` installs (kubectl v1.35, helm v4): missing here they skip the
tests with the reason, missing in CI (``CI=true``) they fail them.
"""

from __future__ import annotations

import copy
import functools
import inspect
import io
import json
import os
import posixpath
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dulwich.repo import Repo

from cloudctl.emulate.kube_helm import find_helm
from cloudctl.emulate.kube_types import BUILTIN_TYPES
from cloudctl.emulate.rack_gitops import read_objects
from cloudctl.inventory import parse_inventory
from cloudctl.inventory.models import Inventory
from cloudctl.inventory.synthetic import synthetic_inventory
from cloudctl.kube import apply_manifests
from cloudctl.pipeline.gitpush import push_tree
from cloudctl.pipeline.platform import (
    flux_objects,
    kustomize_resources,
    platform_objects,
    sync_objects,
    tree_objects,
)
from cloudctl.pipeline.tenants import TENANTS, tenant_tree
from cloudctl.render.files import Files
from cloudctl.render.gitops import (
    DEPENDS_ON_ANNOTATION,
    RELEASE_ANNOTATION,
    local_chart_manifests,
    platform_releases,
    render_gitops,
)
from cloudctl.render.gitops.contracts import crd_registry
from cloudctl.render.gitops.platform import GIT_SOURCE, gitops_path
from cloudctl.render.output import write_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "inventory.example.yaml"
ROOT = "gitops"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# rendered into the GitRepository (its CRD accepts http(s)/ssh URLs only); pushes go to a local
# bare repository instead
GIT_URL = "https://git.example.com/infra/rack.git"
TOOL_TIMEOUT = 120.0

Key = tuple[str, str, str, str]

INVENTORIES: dict[str, Callable[[], dict[str, Any]]] = {
    "example": lambda: yaml.safe_load(EXAMPLE.read_text()),
    "100-node": lambda: synthetic_inventory(100),
}
MODES = ("direct", "gitops")


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}; CI installs it (.ci/run)")
    pytest.skip(f"{what}; CI installs it (.ci/run)")


@pytest.fixture(scope="module")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        _missing("kubectl (with its built-in kustomize) is not on PATH")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def helm() -> str:
    found, how = find_helm()
    if found is None:
        _missing(f"helm not found ({how})")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def git() -> str:
    found = shutil.which("git")
    if found is None:
        _missing("git is not on PATH (the emulated kustomize-controller reads Git with it)")
    assert found is not None
    return found


# --------------------------------------------------------------------------- renders


@dataclass(frozen=True)
class Rendered:
    inv: Inventory
    files: Files


@functools.cache
def _rendered(inventory: str, mode: str) -> Rendered:
    """One render per inventory and mode for the whole session."""
    data = INVENTORIES[inventory]()
    if mode == "gitops":
        data["gitops"] = {"repo": GIT_URL, "branch": "main", "path": "clusters/{cluster}"}
    inv = parse_inventory(yaml.safe_dump(data, sort_keys=False), f"{inventory}-{mode}").inventory
    assert (inv.gitops is not None) == (mode == "gitops")
    return Rendered(inv, render_gitops(inv))


def _write(r: Rendered, dest: Path) -> Path:
    """The tree on disk as ``cloudctl render -o DIR`` writes it."""
    write_tree(r.files, dest, r.inv.cluster.name)
    return dest


@dataclass(frozen=True)
class Case:
    inventory: str
    mode: str
    inv: Inventory
    files: Files
    tree: Path
    """The rendered files on disk (``tree / "gitops"`` is the rendered tree)."""


@pytest.fixture(
    scope="module",
    params=[(i, m) for i in INVENTORIES for m in MODES],
    ids=[f"{i}-{m}" for i in INVENTORIES for m in MODES],
)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    inventory, mode = request.param
    r = _rendered(inventory, mode)
    tree = _write(r, tmp_path_factory.mktemp(f"{inventory}-{mode}") / "render")
    return Case(inventory, mode, r.inv, r.files, tree)


# --------------------------------------------------------------------------- comparison


def _key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return (str(obj["apiVersion"]), str(obj["kind"]), str(meta.get("namespace", "")),
            str(meta["name"]))


def _index(objs: Iterable[dict[str, Any]], what: str) -> dict[Key, dict[str, Any]]:
    out: dict[Key, dict[str, Any]] = {}
    for obj in objs:
        key = _key(obj)
        assert key not in out, f"{what}: {key} twice"
        out[key] = obj
    return out


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'the build' if k in a else 'what is applied'}"
            if a[k] != b[k]:
                return _first_difference(a[k], b[k], f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {json.dumps(a, default=str)[:200]} != {json.dumps(b, default=str)[:200]}"


def assert_same_objects(
    built: Iterable[dict[str, Any]], applied: Iterable[dict[str, Any]], what: str
) -> None:
    """Same objects (keyed by apiVersion/kind/namespace/name), bodies equal."""
    b, a = _index(built, f"{what} (built)"), _index(applied, f"{what} (applied)")
    assert b, f"{what}: nothing built"
    assert sorted(set(b) - set(a)) == [], f"{what}: built but not applied"
    assert sorted(set(a) - set(b)) == [], f"{what}: applied but not built"
    differ = [f"{k}: {_first_difference(b[k], a[k])}" for k in sorted(b) if b[k] != a[k]]
    assert differ == [], f"{what}: bodies differ"


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=LOADER) if d]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)


def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    out = _run([kubectl, "kustomize", str(directory)])
    assert out.returncode == 0, f"kubectl kustomize {directory}: {out.stderr}"
    return _docs(out.stdout)


def _kustomization_dirs(files: Files) -> list[str]:
    return sorted(posixpath.dirname(p) for p in files
                  if posixpath.basename(p) == "kustomization.yaml")


def _tree_dirs(files: Files, directory: str) -> list[str]:
    """``directory`` and the kustomization directories its ``resources:`` reach."""
    out = [directory]
    for res in kustomize_resources(files, directory):
        sub = posixpath.normpath(posixpath.join(directory, res))
        if f"{sub}/kustomization.yaml" in files:
            out += _tree_dirs(files, sub)
    return sorted(out)


# --------------------------------------------------------------------------- 1a: kustomize


def _applied_by_cloudctl(c: Case) -> dict[str, list[dict[str, Any]]]:
    """Rendered directory -> the objects cloudctl applies from it, as the flux, platform and
    tenants stages build them (``cloudctl.pipeline.platform``, ``cloudctl.pipeline.tenants``)."""
    if c.mode == "direct":
        local = [o for objs in local_chart_manifests(c.inv).values() for o in objs]
        flux = flux_objects(c.files)
        platform = platform_objects(c.inv, c.files, direct=True)
        out = {f"{ROOT}/flux-system": flux, f"{ROOT}/platform": platform, ROOT: flux + platform}
        if local:
            out[f"{ROOT}/local"] = local
            out[ROOT] = out[ROOT] + local
        tenants = tenant_tree(c.files)
        if tenants:  # its own root, applied by the tenants stage
            out[TENANTS] = tenants
        return out
    # GitOps mode: cloudctl applies the Flux install (flux stage) and the sync objects
    # (platform stage); Flux applies the rest from Git (test_flux_applies_the_pushed_tree...)
    return {f"{ROOT}/flux-system": flux_objects(c.files) + sync_objects(c.files)}


def test_kustomize_builds_every_rendered_tree_as_cloudctl_applies_it(
    kubectl: str, case: Case
) -> None:
    dirs = _kustomization_dirs(case.files)
    assert ROOT in dirs
    applied = _applied_by_cloudctl(case)
    assert set(applied) <= set(dirs), "cloudctl applies a directory kustomize cannot build"
    for d in dirs:
        built = kustomize(kubectl, case.tree / d)
        # how cloudctl itself reads a kustomization (platform facts, Flux install)
        assert_same_objects(built, tree_objects(case.files, d), f"{d}: cloudctl's reading")
        if d in applied:
            assert_same_objects(built, applied[d], f"{d}: what cloudctl applies")
    if case.mode == "direct":
        # the flux and platform stages apply every directory of the root's tree, the tenants
        # stage the tenants root
        roots = sorted(_tree_dirs(case.files, ROOT) + ([TENANTS] if TENANTS in applied else []))
        assert sorted(applied) == roots


def _checkout(git: str, repo: Path, rev: str, path: str, dest: Path) -> None:
    out = subprocess.run([git, "--git-dir", str(repo), "archive", "--format=tar", rev, path],
                         capture_output=True, timeout=TOOL_TIMEOUT, check=True)
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member) if member.isfile() else None
            if f is not None:
                target = dest / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(f.read())


@pytest.mark.parametrize("inventory", list(INVENTORIES))
def test_flux_applies_the_pushed_tree_as_kustomize_builds_it(
    inventory: str, kubectl: str, git: str, tmp_path: Path
) -> None:
    """GitOps mode: the tree cloudctl pushes, checked out, builds with kustomize at each sync
    Kustomization's path into what the emulated kustomize-controller applies from Git there
    and what cloudctl rendered."""
    case = _rendered(inventory, "gitops")
    assert case.inv.gitops is not None
    remote = tmp_path / "remote.git"
    Repo.init_bare(str(remote), mkdir=True, default_branch=b"main").close()
    local = case.inv.model_copy(
        update={"gitops": case.inv.gitops.model_copy(update={"repo": str(remote)})}
    )
    rev = push_tree(case.files, local, cache=tmp_path / "cache.git")
    checkout = tmp_path / "checkout"
    _checkout(git, remote, rev, gitops_path(case.inv), checkout)
    kustomizations = [o for o in sync_objects(case.files) if o["kind"] == "Kustomization"]
    assert GIT_SOURCE in [o["metadata"]["name"] for o in kustomizations]
    for ks in kustomizations:
        # each Flux Kustomization builds its path of the repository
        path = posixpath.normpath(str(ks["spec"]["path"]))
        rel = posixpath.relpath(path, gitops_path(case.inv))
        assert not rel.startswith(".."), f"{ks['metadata']['name']}: {path} is outside the tree"
        what = f"Kustomization {ks['metadata']['name']} ({path})"
        built = kustomize(kubectl, checkout / path)
        assert_same_objects(built, read_objects(str(remote), rev, str(ks["spec"]["path"])),
                            f"{what}: the emulated kustomize-controller")
        rendered = posixpath.normpath(posixpath.join(ROOT, rel))
        assert_same_objects(built, tree_objects(case.files, rendered), f"{what}: the render")


# --------------------------------------------------------------------------- 1b: helm


def _local_chart_releases(files: Files) -> dict[str, dict[str, Any]]:
    """HelmReleases of the GitOps tree whose chart is a local chart (GitRepository source)."""
    out = {}
    for hr in tree_objects(files, f"{ROOT}/platform"):
        if hr["kind"] != "HelmRelease" or "chart" not in hr["spec"]:
            continue
        if hr["spec"]["chart"]["spec"]["sourceRef"]["kind"] == "GitRepository":
            out[str(hr["metadata"]["name"])] = hr
    return out


def _without_order_annotations(obj: dict[str, Any], expected: dict[str, str]) -> dict[str, Any]:
    """Direct mode's object without the two annotations only it carries (checked first)."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    annotations = dict(meta.get("annotations") or {})
    ours = {k: annotations.pop(k) for k in (RELEASE_ANNOTATION, DEPENDS_ON_ANNOTATION)
            if k in annotations}
    assert ours == expected, f"{_key(obj)}: ordering annotations"
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return out


# the namespace cloudctl's server-side apply gives a namespaced object without one
DIRECT_DEFAULT_NAMESPACE = str(
    inspect.signature(apply_manifests).parameters["default_namespace"].default
)


@functools.cache
def _namespaced() -> dict[tuple[str, str], bool]:
    """(API group, kind) -> namespaced, for the built-in kinds (the emulator's table) and every
    CRD cloudctl validates rendered objects against (``crd_registry``: Flux, MetalLB, Piraeus,
    KubeVirt, CDI, ...)."""
    out = {(t.group, t.kind): t.namespaced for t in BUILTIN_TYPES}
    reg = crd_registry()
    for group, version, kind in reg.kinds():
        schema = reg.schema(f"{group}/{version}", kind)
        assert schema is not None
        out[(group, kind)] = schema.scope == "Namespaced"
    return out


def _in_namespace(obj: dict[str, Any], default: str) -> dict[str, Any]:
    """The object with the namespace it lands in: ``default`` for a namespaced object without
    one (Helm: the release namespace; cloudctl: DIRECT_DEFAULT_NAMESPACE), none when
    cluster-scoped. The scope must be known only for an object without a namespace."""
    group, kind = str(obj["apiVersion"]).rpartition("/")[0], str(obj["kind"])
    namespaced = _namespaced().get((group, kind))
    out = dict(obj)
    meta = out["metadata"] = dict(obj["metadata"])
    if "namespace" not in meta:
        assert namespaced is not None, f"{_key(obj)}: no namespace, scope of {kind} unknown"
        if namespaced:
            meta["namespace"] = default
    elif namespaced is False:
        del meta["namespace"]
    return out


@pytest.mark.parametrize("inventory", list(INVENTORIES))
def test_helm_lint_and_template_local_charts_as_direct_mode_applies_them(
    inventory: str, helm: str, tmp_path: Path
) -> None:
    gitops, direct = _rendered(inventory, "gitops"), _rendered(inventory, "direct")
    tree = _write(gitops, tmp_path / "render")
    releases = _local_chart_releases(gitops.files)
    applied = local_chart_manifests(direct.inv)
    charts = {posixpath.dirname(p) for p in gitops.files
              if p.startswith(f"{ROOT}/charts/") and p.endswith("/Chart.yaml")}
    # every local chart belongs to a HelmRelease, and direct mode applies each of them
    assert releases and sorted(releases) == sorted(applied)
    prefix = f"./{gitops_path(gitops.inv)}/"
    order = {r.name: r for r in platform_releases(direct.inv)}
    seen = set()
    for name, hr in releases.items():
        spec = hr["spec"]
        assert "valuesFrom" not in spec, f"{name}: valuesFrom is not rendered by this test"
        chart_path = str(spec["chart"]["spec"]["chart"])
        assert chart_path.startswith(prefix), chart_path
        chart = f"{ROOT}/{chart_path.removeprefix(prefix)}"
        assert chart in charts, f"{name}: {chart} is not a rendered chart"
        seen.add(chart)
        # Flux's release name and namespace (what the emulated helm-controller uses too)
        namespace = str(spec.get("targetNamespace") or hr["metadata"]["namespace"])
        release = str(spec.get("releaseName") or (
            f"{spec['targetNamespace']}-{name}" if spec.get("targetNamespace") else name))
        values = tmp_path / f"{name}.values.yaml"
        values.write_text(yaml.safe_dump(spec.get("values") or {}))
        lint = _run([helm, "lint", "--strict", str(tree / chart), "--namespace", namespace,
                     "--values", str(values)])
        assert lint.returncode == 0, f"helm lint {name}: {lint.stdout}{lint.stderr}"
        out = _run([helm, "template", release, str(tree / chart), "--namespace", namespace,
                    "--values", str(values), "--include-crds"])
        assert out.returncode == 0, f"helm template {name}: {out.stderr}"
        rel = order[name]
        expected = {RELEASE_ANNOTATION: name}
        if rel.depends_on:
            expected[DEPENDS_ON_ANNOTATION] = ",".join(rel.depends_on)
        # compared where each object lands: helm-controller puts a namespaced object without
        # a namespace into the release namespace, cloudctl's apply into its default one
        assert_same_objects(
            [_in_namespace(o, namespace) for o in _docs(out.stdout)],
            [_in_namespace(_without_order_annotations(o, expected), DIRECT_DEFAULT_NAMESPACE)
             for o in applied[name]],
            f"{inventory}: helm template of {chart} vs direct mode's {name}",
        )
    assert seen == charts, "a rendered chart no HelmRelease uses"
