"""The rendered GitOps tree is self-consistent in each mode (fault 5e).

Direct mode (no ``gitops:``) has no GitRepository, so the local charts (KubeVirt, CDI, MetalLB
pools) must not be HelmReleases there: they are plain manifests under ``gitops/local/``. For
both modes: every HelmRelease's chart source is an object of the tree (``EXTERNAL_SOURCES``
lists the sources a tree may rely on without rendering them: none today), every dependency
names something the tree installs, and every kustomization lists only files of the tree, so
``kubectl kustomize`` (and ``kubectl apply -k``) accepts it.
"""

from __future__ import annotations

import posixpath
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.inventory.models import Inventory
from cloudctl.render.files import Files
from cloudctl.render.gitops import local_chart_manifests, platform_releases, render_gitops
from cloudctl.render.gitops.platform import gitops_path

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ROOT = "gitops"

# (kind, namespace, name) of chart sources a rendered tree may reference without containing
# them (for example a source shared by several clusters and created by hand). None today.
EXTERNAL_SOURCES: frozenset[tuple[str, str, str]] = frozenset()

SOURCE_KINDS = {"GitRepository", "HelmRepository", "OCIRepository", "Bucket", "HelmChart"}


def _inventory(gitops: bool, **platform: Any) -> Inventory:
    data = yaml.safe_load(EXAMPLE.read_text())
    if gitops:
        data["gitops"] = {"repo": "https://git.example.com/infra/rack1.git", "path": "c/{cluster}"}
    for key, value in platform.items():
        data["platform"][key] = {**data["platform"].get(key, {}), **value}
    return Inventory.model_validate(data)


CASES = {
    "direct": _inventory(False),
    "gitops": _inventory(True),
    "direct-no-kubevirt-no-metallb": _inventory(
        False, kubevirt={"enabled": False}, metallb={"enabled": False}
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[Inventory, Files]:
    inv = CASES[request.param]
    return inv, render_gitops(inv)


def _docs(files: Files, path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(files[path].data.decode(), Loader=LOADER) if d]


def _resources(files: Files, directory: str) -> list[str]:
    (k,) = _docs(files, f"{directory}/kustomization.yaml")
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    assert set(k) <= {"apiVersion", "kind", "resources"}, f"{directory}: unexpected fields"
    return [str(r) for r in k["resources"]]


def _walk(files: Files, directory: str = ROOT) -> tuple[list[str], list[str]]:
    """(kustomization directories, resource files) reachable from ``directory``; asserts that
    each listed resource exists (a file, or a directory with a kustomization.yaml)."""
    dirs, leaves = [directory], []
    for res in _resources(files, directory):
        target = posixpath.normpath(posixpath.join(directory, res))
        assert not target.startswith(".."), (directory, res)
        if f"{target}/kustomization.yaml" in files:
            sub_dirs, sub_leaves = _walk(files, target)
            dirs += sub_dirs
            leaves += sub_leaves
        else:
            assert target in files, f"{directory}/kustomization.yaml lists missing {res}"
            leaves.append(target)
    return dirs, leaves


def _tree_objects(files: Files) -> list[dict[str, Any]]:
    _, leaves = _walk(files)
    return [d for path in leaves for d in _docs(files, path)]


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


def _source_refs(hr: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of the chart source of a HelmRelease (chart.spec.sourceRef or
    chartRef); the namespace defaults to the HelmRelease's, as Flux does."""
    spec, ns = hr["spec"], hr["metadata"]["namespace"]
    refs = []
    if "chart" in spec:
        ref = spec["chart"]["spec"]["sourceRef"]
        refs.append((ref["kind"], ref.get("namespace", ns), ref["name"]))
    if "chartRef" in spec:
        ref = spec["chartRef"]
        refs.append((ref["kind"], ref.get("namespace", ns), ref["name"]))
    assert len(refs) == 1, f"HelmRelease {hr['metadata']['name']}: exactly one chart source"
    return refs


def _check_sources_resolve(inv: Inventory, files: Files, objects: list[dict[str, Any]]) -> None:
    present = {_key(o) for o in objects}
    releases = [o for o in objects if o["kind"] == "HelmRelease"]
    assert releases
    for hr in releases:
        for ref in _source_refs(hr):
            assert ref[0] in SOURCE_KINDS, ref
            assert ref in present or ref in EXTERNAL_SOURCES, (
                f"HelmRelease {hr['metadata']['name']}: source {ref} is not in the tree"
            )
            if ref[0] == "GitRepository":
                # the chart path is relative to the repository root, where the tree lives at
                # gitops_path(inv)
                chart = hr["spec"]["chart"]["spec"]["chart"]
                prefix = f"./{gitops_path(inv)}/"
                assert chart.startswith(prefix), chart
                assert f"{ROOT}/{chart.removeprefix(prefix)}/Chart.yaml" in files, chart


def test_every_kustomization_lists_existing_files_and_nothing_is_orphaned(
    case: tuple[Inventory, Files],
) -> None:
    _, files = case
    dirs, leaves = _walk(files)
    if f"{ROOT}/tenants/kustomization.yaml" in files:  # its own root (applied after the platform)
        tenant_dirs, tenant_leaves = _walk(files, f"{ROOT}/tenants")
        dirs += tenant_dirs
        leaves += tenant_leaves
    kustomizations = {p for p in files if posixpath.basename(p) == "kustomization.yaml"}
    assert kustomizations == {f"{d}/kustomization.yaml" for d in dirs}, "unreachable kustomization"
    manifests = {
        p
        for p in files
        if p.endswith(".yaml") and p not in kustomizations and not p.startswith(f"{ROOT}/charts/")
    }
    assert manifests == set(leaves), "a manifest no kustomization lists"
    assert len(leaves) == len(set(leaves)), "a manifest listed twice"


def test_every_helmrelease_source_is_in_the_tree(case: tuple[Inventory, Files]) -> None:
    inv, files = case
    _check_sources_resolve(inv, files, _tree_objects(files))


def test_dependencies_name_what_the_tree_installs(case: tuple[Inventory, Files]) -> None:
    inv, files = case
    objects = _tree_objects(files)
    helm = {o["metadata"]["name"] for o in objects if o["kind"] == "HelmRelease"}
    for o in objects:
        if o["kind"] == "HelmRelease":
            for dep in o["spec"].get("dependsOn", []):
                assert dep["name"] in helm, (o["metadata"]["name"], dep)
    local_order = [] if inv.gitops else [r.removesuffix(".yaml") for r in _local_resources(files)]
    for o in objects:
        annotations = o["metadata"].get("annotations") or {}
        if "cloudctl.io/release" not in annotations:
            continue
        name = annotations["cloudctl.io/release"]
        for dep in filter(None, annotations.get("cloudctl.io/depends-on", "").split(",")):
            # a HelmRelease, or a local component listed before this one
            assert dep in helm or dep in local_order[: local_order.index(name)], (name, dep)


def _local_resources(files: Files) -> list[str]:
    if f"{ROOT}/local/kustomization.yaml" not in files:
        return []
    return _resources(files, f"{ROOT}/local")


def test_each_mode_renders_the_local_charts_its_own_way(case: tuple[Inventory, Files]) -> None:
    inv, files = case
    local = [r.name for r in platform_releases(inv) if r.source.type == "git"]
    objects = _tree_objects(files)
    helm = [o["metadata"]["name"] for o in objects if o["kind"] == "HelmRelease"]
    if inv.gitops:
        assert set(local) <= set(helm)
        assert not any(p.startswith(f"{ROOT}/local/") for p in files)
        assert all(f"{ROOT}/charts/{n}/Chart.yaml" in files for n in local)
    else:
        assert not set(local) & set(helm)
        assert not any(p.startswith(f"{ROOT}/charts/") for p in files)
        assert not any(o["kind"] == "GitRepository" for o in objects)
        assert _local_resources(files) == [f"{n}.yaml" for n in local]
        assert ("local" in _resources(files, ROOT)) == bool(local)
        # what cloudctl applies itself is exactly what the tree holds
        manifests = local_chart_manifests(inv)
        assert list(manifests) == local
        for name in local:
            assert manifests[name] == _docs(files, f"{ROOT}/local/{name}.yaml")


def test_kubectl_kustomize_builds_a_consistent_tree(
    case: tuple[Inventory, Files], tmp_path: Path
) -> None:
    """Real kustomize (kubectl's) builds each tree; in what it outputs, every HelmRelease's
    source is there too."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("needs kubectl (its built-in kustomize) on PATH")
    inv, files = case
    for rel, f in files.items():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.data)
    out = subprocess.run(
        [kubectl, "kustomize", str(tmp_path / ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.load_all(out.stdout, Loader=LOADER) if d]
    assert sorted(_key(o) for o in built) == sorted(_key(o) for o in _tree_objects(files))
    _check_sources_resolve(inv, files, built)
