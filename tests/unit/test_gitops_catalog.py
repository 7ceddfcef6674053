"""The platform catalog (flux/platform.yaml): its parser rejects what would break the DAG, and
every file it names exists in the data directories."""

from __future__ import annotations

import pytest

from cloudctl.errors import RenderError
from cloudctl.render.gitops import catalog as cat
from cloudctl.resources import data_path

HEADER = """
sources:
  repo: {type: helm, url: https://charts.example.com}
releases:
"""


def _release(name: str, deps: list[str]) -> str:
    return (
        f"  {name}:\n    component: cilium\n    chart: {name}\n    source: repo\n"
        f"    version: 1.0.0\n    namespace: ns\n    dependsOn: {deps}\n"
    )


def test_unknown_dependency_is_rejected() -> None:
    with pytest.raises(RenderError, match="unknown dependency ghost"):
        cat._parse_catalog(HEADER + _release("a", ["ghost"]))


def test_unknown_source_is_rejected() -> None:
    text = HEADER + _release("a", []).replace("source: repo", "source: nowhere")
    with pytest.raises(RenderError, match="unknown source nowhere"):
        cat._parse_catalog(text)


def test_cycle_is_detected() -> None:
    catalog = cat._parse_catalog(HEADER + _release("a", ["b"]) + _release("b", ["a"]))
    graph = {n: r.depends_on for n, r in catalog.releases.items()}
    with pytest.raises(RenderError, match="cycle"):
        cat._toposort(graph, list(graph))


def test_toposort_is_deterministic_and_ordered() -> None:
    graph = {"d": ("b", "c"), "c": ("a",), "b": ("a",), "a": ()}
    assert cat._toposort(graph, ["d", "c", "b", "a"]) == ["a", "c", "b", "d"]


def test_dependencies_through_disabled_releases() -> None:
    catalog = cat._parse_catalog(
        HEADER + _release("a", []) + _release("b", ["a"]) + _release("c", ["b"])
    )
    assert cat._effective_deps("c", catalog, {"a", "c"}) == ("a",)
    assert cat._effective_deps("c", catalog, {"c"}) == ()


def test_every_catalog_file_exists() -> None:
    catalog = cat.load_catalog()
    for rel in catalog.releases.values():
        for relative in (*rel.values_files, *rel.schemas.values()):
            assert data_path("helm-values", relative).is_file(), (rel.name, relative)
        if rel.contract:
            assert data_path("helm-values", rel.contract).is_file()
        for schema in rel.schemas.values():
            defaults = schema.rsplit("/", 1)[0] + "/values.yaml"
            assert data_path("helm-values", defaults).is_file()


def test_chart_values_problems_without_inventory() -> None:
    from cloudctl.render.gitops.values import chart_values_problems

    cilium = cat.load_catalog().releases["cilium"]
    assert chart_values_problems(cilium, "1.19.6", {"kubeProxyReplacement": True}) == []
    problems = chart_values_problems(cilium, "1.19.6", {"kubeProxyReplacement": "maybe"})
    assert [p.path for p in problems] == ["values.kubeProxyReplacement"]
    # a chart version without a vendored schema is checked by cloudctl's contract only
    problems = chart_values_problems(cilium, "1.18.0", {"cgroup": {"autoMount": {"enabled": 1}}})
    assert problems == []


# DESIGN.md #9, the full graph, and which inventory switch enables each release
DESIGN = {
    "cilium": (),
    "kube-ovn": ("cilium",),
    "cert-manager": ("kube-ovn",),
    "metallb": ("kube-ovn",),
    "metallb-config": ("metallb",),
    "piraeus-operator": ("kube-ovn",),
    "linstor": ("piraeus-operator",),
    "kubevirt-operator": ("kube-ovn",),
    "kubevirt": ("kubevirt-operator",),
    "cdi-operator": ("kube-ovn",),
    "cdi": ("cdi-operator",),
    "kamaji": ("cert-manager",),
    "capi-operator": ("cert-manager",),
    "capi-providers": ("capi-operator", "kamaji", "kubevirt", "cdi"),
}
SWITCH = {
    "cilium": "cilium",
    "kube-ovn": "kubeOvn",
    "cert-manager": "certManager",
    "metallb": "metallb",
    "metallb-config": "metallb",
    "piraeus-operator": "linstor",
    "linstor": "linstor",
    "kubevirt-operator": "kubevirt",
    "kubevirt": "kubevirt",
    "cdi-operator": "cdi",
    "cdi": "cdi",
    "kamaji": "kamaji",
    "capi-operator": "clusterApi",
    "capi-providers": "clusterApi",
}
SWITCHES = sorted(set(SWITCH.values()))


def _expected_deps(name: str, enabled: set[str]) -> set[str]:
    """Nearest enabled releases reachable through disabled ones only."""
    out: set[str] = set()
    todo = list(DESIGN[name])
    while todo:
        dep = todo.pop()
        if dep in enabled:
            out.add(dep)
        else:
            todo.extend(DESIGN[dep])
    return out


def test_every_combination_of_switches() -> None:
    import copy
    from pathlib import Path

    import yaml

    from cloudctl.inventory.models import Inventory

    base = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "inventory.example.yaml").read_text()
    )
    for bits in range(2 ** len(SWITCHES)):
        on = {s for i, s in enumerate(SWITCHES) if bits >> i & 1}
        data = copy.deepcopy(base)
        for s in SWITCHES:
            if s == "cdi":
                data["platform"]["kubevirt"]["cdi"]["enabled"] = s in on
            else:
                data["platform"][s]["enabled"] = s in on
        releases = cat.platform_releases(Inventory.model_validate(data))
        names = [r.name for r in releases]
        want = {n for n, s in SWITCH.items() if s in on and (s != "cdi" or "kubevirt" in on)}
        assert set(names) == want, on
        seen: set[str] = set()
        for r in releases:
            assert set(r.depends_on) == _expected_deps(r.name, want), (on, r.name)
            assert set(r.depends_on) <= seen  # topological order
            seen.add(r.name)
