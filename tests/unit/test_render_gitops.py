"""render_gitops: the GitOps tree for inventory.example.yaml and modified copies.

Contract checks here are independent of the renderer's own check: the rendered files are parsed
back and validated against the vendored CRDs / values schemas through cloudctl.contracts.
"""

from __future__ import annotations

import copy
import itertools
import json
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.contracts import CrdRegistry, validate_values
from cloudctl.errors import InputError
from cloudctl.inventory.models import Inventory
from cloudctl.render.files import Files
from cloudctl.render.gitops import platform_releases, render_gitops
from cloudctl.render.gitops.flux import CONTROLLERS, RESERVED_HOST_PORTS
from cloudctl.render.gitops.localcharts import OPERATORS, split_documents
from cloudctl.render.gitops.metallb import metallb_objects
from cloudctl.resources import read_text
from cloudctl.util.merge import deep_merge

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# DESIGN.md #9 with every component enabled
DESIGN_EDGES = {
    "cilium": set(),
    "kube-ovn": {"cilium"},
    "cert-manager": {"kube-ovn"},
    "metallb": {"kube-ovn"},
    "metallb-config": {"metallb"},
    "piraeus-operator": {"kube-ovn"},
    "linstor": {"piraeus-operator"},
    "kubevirt-operator": {"kube-ovn"},
    "kubevirt": {"kubevirt-operator"},
    "cdi-operator": {"kube-ovn"},
    "cdi": {"cdi-operator"},
    "kamaji": {"cert-manager"},
    "capi-operator": {"cert-manager"},
    "capi-providers": {"capi-operator", "kamaji", "kubevirt", "cdi"},
}

AFTER_KUBE_OVN = [n for n, deps in DESIGN_EDGES.items() if deps == {"kube-ovn"}]

FLUX_KINDS = {"HelmRelease", "HelmRepository", "OCIRepository", "GitRepository", "Kustomization"}


def _example_data() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def _inventory(edit: Callable[[dict[str, Any]], None] | None = None) -> Inventory:
    """The example inventory (optionally edited), validated by the typed model.

    The semantic checks of ``parse_inventory`` (Talos release catalog, node rules) are not run:
    the GitOps renderer does not depend on them, and this keeps these tests about the renderer.
    """
    data = _example_data()
    if edit:
        edit(data)
    return Inventory.model_validate(data)


def _modified(data: dict[str, Any]) -> None:
    """A different rack: Git sync, BGP MetalLB, own CIDRs, overrides, 1 control plane."""
    data["cluster"]["name"] = "rack2"
    data["nodes"] = [n for n in data["nodes"] if n["name"] != "cp3" and n["name"] != "cp2"]
    data["cluster"]["serviceSubnets"] = ["10.112.0.0/16"]
    p = data["platform"]
    p["kubeOvn"].update({"podCidr": "10.250.0.0/16", "joinCidr": "100.70.0.0/16"})
    p["cilium"]["values"] = {"operator": {"replicas": 2}, "hubble": {"enabled": True}}
    p["metallb"] = {
        "enabled": True,
        "mode": "bgp",
        "myAsn": 64512,
        "peers": [
            {"address": "10.20.0.1", "asn": 64513},
            {"address": "10.20.0.254", "asn": 64513, "name": "tor-b"},
        ],
        "pools": [
            {"name": "public", "addresses": ["192.0.2.0/28", "192.0.2.100-192.0.2.110"]},
            {"name": "private", "addresses": ["10.20.0.200-10.20.0.210"], "autoAssign": False},
        ],
        "values": {"controller": {"logLevel": "debug"}},
    }
    p["kubevirt"]["values"] = {
        "spec": {"configuration": {"developerConfiguration": {"featureGates": ["LiveMigration"]}}}
    }
    p["linstor"]["operatorVersion"] = "2.7.1"
    data["gitops"] = {
        "repo": "ssh://git@git.example.com/infra/racks.git",
        "branch": "prod",
        "path": "clusters/{cluster}/gitops",
        "secretRef": "flux-git-auth",
    }


@pytest.fixture(scope="module")
def example() -> Inventory:
    return _inventory()


@pytest.fixture(scope="module")
def modified() -> Inventory:
    return _inventory(_modified)


@pytest.fixture(scope="module")
def example_files(example: Inventory) -> Files:
    return render_gitops(example)


@pytest.fixture(scope="module")
def modified_files(modified: Inventory) -> Files:
    return render_gitops(modified)


@pytest.fixture(scope="module", params=["example", "modified"])
def files(request: pytest.FixtureRequest, example_files: Files, modified_files: Files) -> Files:
    return example_files if request.param == "example" else modified_files


def _docs(files: Files, path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(files[path].data.decode(), Loader=LOADER) if d]


def _manifests(files: Files) -> list[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object of the kustomize inputs (charts/ excluded)."""
    out = []
    for path in files:
        if path.endswith(".yaml") and not path.startswith("gitops/charts/"):
            for d in _docs(files, path):
                if d.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
                    out.append((path, d))
    return out


def _by_kind(files: Files, kind: str) -> list[dict[str, Any]]:
    return [d for d in _docs(files, "gitops/platform/sources.yaml") if d.get("kind") == kind]


def _helmreleases(files: Files) -> dict[str, dict[str, Any]]:
    out = {}
    for path in files:
        if path.startswith("gitops/platform/releases/"):
            (hr,) = _docs(files, path)
            out[hr["metadata"]["name"]] = hr
    return out


def _local(files: Files) -> dict[str, list[dict[str, Any]]]:
    """Direct mode: release -> the plain manifests of gitops/local/<release>.yaml."""
    out = {}
    for path in files:
        if path.startswith("gitops/local/") and not path.endswith("/kustomization.yaml"):
            name = posixpath.basename(path).removesuffix(".yaml")
            out[name] = _docs(files, path)
    return out


def _local_chart_objects(files: Files, name: str) -> list[dict[str, Any]]:
    """What the local chart ``name`` installs: its plain manifests in direct mode, the objects
    its chart renders from the HelmRelease values in GitOps mode."""
    local = _local(files)
    if local:
        return local[name]
    from cloudctl.render.gitops.localcharts import cr_object

    hr = _helmreleases(files)[name]["spec"]
    if name == "metallb-config":
        return metallb_objects(hr["values"], hr["targetNamespace"])
    chart_defaults = yaml.safe_load(files[f"gitops/charts/{name}/values.yaml"].data)
    return [cr_object(name, deep_merge(chart_defaults, hr["values"]), hr["targetNamespace"])]


@pytest.fixture(scope="module")
def crds() -> CrdRegistry:
    reg = CrdRegistry.from_documents(
        yaml.load_all(read_text("flux", "gotk-components-v2.9.3.yaml"), Loader=LOADER)
    )
    for name in ["ipaddresspools", "l2advertisements", "bgppeers", "bgpadvertisements"]:
        reg.merge(
            CrdRegistry.from_documents(
                yaml.safe_load_all(
                    read_text(
                        "helm-values", f"_upstream/metallb/0.16.1/crds/metallb.io_{name}.yaml"
                    )
                )
            )
        )
    reg.merge(
        CrdRegistry.from_documents(
            yaml.safe_load_all(
                read_text(
                    "helm-values",
                    "_upstream/piraeus/2.7.1/crds/piraeus.io_linstorsatelliteconfigurations.yaml",
                )
            )
        )
    )
    for manifest in ["kubevirt-operator-v1.8.4.yaml", "cdi-operator-v1.66.0.yaml"]:
        reg.merge(
            CrdRegistry.from_documents(
                yaml.load_all(read_text("flux", f"vendor/kubevirt/{manifest}"), Loader=LOADER)
            )
        )
    return reg


# --------------------------------------------------------------------------- contracts


def test_every_flux_object_validates_against_its_crd(files: Files, crds: CrdRegistry) -> None:
    seen = set()
    for path, obj in _manifests(files):
        if obj["kind"] in FLUX_KINDS:
            seen.add(obj["kind"])
            assert crds.validate(obj) == [], f"{path} {obj['kind']}/{obj['metadata']['name']}"
    assert {"HelmRelease", "HelmRepository", "OCIRepository"} <= seen


def test_api_versions_are_the_served_ones(files: Files) -> None:
    for _, obj in _manifests(files):
        if obj["kind"] == "HelmRelease":
            assert obj["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
        if obj["kind"] in ("HelmRepository", "OCIRepository", "GitRepository"):
            assert obj["apiVersion"] == "source.toolkit.fluxcd.io/v1"


def test_sync_objects_with_gitops(modified_files: Files, crds: CrdRegistry) -> None:
    docs = _docs(modified_files, "gitops/flux-system/gotk-sync.yaml")
    # the example inventory has a tenant: its Kustomization follows the platform's
    assert [d["kind"] for d in docs] == ["GitRepository", "Kustomization", "Kustomization"]
    repo, ks, tenants = docs
    assert tenants["spec"]["path"] == "./clusters/rack2/gitops/tenants"
    assert tenants["spec"]["dependsOn"] == [{"name": ks["metadata"]["name"]}]
    assert tenants["spec"]["prune"] is True
    assert repo["spec"]["url"] == "ssh://git@git.example.com/infra/racks.git"
    assert repo["spec"]["ref"] == {"branch": "prod"}
    assert repo["spec"]["secretRef"] == {"name": "flux-git-auth"}
    assert ks["spec"]["path"] == "./clusters/rack2/gitops"
    assert ks["spec"]["sourceRef"] == {"kind": "GitRepository", "name": repo["metadata"]["name"]}
    for d in docs:
        assert crds.validate(d) == []
    chart = _helmreleases(modified_files)["kubevirt"]["spec"]["chart"]["spec"]
    assert chart["chart"] == "./clusters/rack2/gitops/charts/kubevirt"
    assert chart["sourceRef"]["name"] == repo["metadata"]["name"]
    assert "gitops/charts/kubevirt/Chart.yaml" in modified_files


def test_no_sync_objects_without_gitops(example_files: Files) -> None:
    assert "gitops/flux-system/gotk-sync.yaml" not in example_files
    readme = example_files["gitops/README.md"].data.decode()
    assert "no `gitops:` section" in readme and "clusters/rack1/" in readme


def _merged_with_chart_defaults(chart_dir: str, values: dict[str, Any]) -> dict[str, Any]:
    from cloudctl.render.gitops.values import deep_merge

    defaults = yaml.load(
        read_text("helm-values", f"_upstream/{chart_dir}/values.yaml"), Loader=LOADER
    )
    return deep_merge(defaults, values)


@pytest.mark.parametrize(
    ("release", "chart_dir"),
    [
        ("cilium", "cilium/1.19.6"),
        ("metallb", "metallb/0.16.1"),
        ("linstor", "linstor-cluster/1.1.1"),
    ],
)
def test_values_validate_against_chart_schema(files: Files, release: str, chart_dir: str) -> None:
    hr = _helmreleases(files)[release]
    assert hr["spec"]["chart"]["spec"]["version"] == chart_dir.split("/")[1]
    schema = json.loads(read_text("helm-values", f"_upstream/{chart_dir}/values.schema.json"))
    values = _merged_with_chart_defaults(chart_dir, hr["spec"]["values"])
    assert validate_values(values, schema) == []


def test_cilium_values_also_valid_for_1_20(example_files: Files) -> None:
    values = _helmreleases(example_files)["cilium"]["spec"]["values"]
    schema = json.loads(read_text("helm-values", "_upstream/cilium/1.20.0/values.schema.json"))
    assert validate_values(_merged_with_chart_defaults("cilium/1.20.0", values), schema) == []


def test_metallb_objects_validate(files: Files, crds: CrdRegistry) -> None:
    assert _edges(files)["metallb-config"] == {"metallb"}
    objs = _local_chart_objects(files, "metallb-config")
    assert objs
    for obj in objs:
        assert crds.validate(obj) == [], obj


def test_metallb_modes(example_files: Files, modified_files: Files) -> None:
    l2 = _local(example_files)["metallb-config"]
    assert [(o["kind"], o["metadata"]["name"], o["spec"]) for o in l2] == [
        (
            "IPAddressPool",
            "public",
            {"addresses": ["10.20.0.100-10.20.0.150"], "autoAssign": True},
        ),
        ("L2Advertisement", "cloudctl", {"ipAddressPools": ["public"]}),
    ]
    assert {o["metadata"]["namespace"] for o in l2} == {"metallb-system"}
    bgp = _helmreleases(modified_files)["metallb-config"]["spec"]["values"]
    assert "l2Advertisements" not in bgp
    assert [p["spec"] for p in bgp["bgpPeers"]] == [
        {"myASN": 64512, "peerASN": 64513, "peerAddress": "10.20.0.1"},
        {"myASN": 64512, "peerASN": 64513, "peerAddress": "10.20.0.254"},
    ]
    assert [p["name"] for p in bgp["bgpPeers"]] == ["peer-1", "tor-b"]
    assert bgp["bgpAdvertisements"][0]["spec"]["ipAddressPools"] == ["public", "private"]


def test_kubevirt_and_cdi_crs_validate(files: Files, crds: CrdRegistry) -> None:
    for name, kind in [("kubevirt", "KubeVirt"), ("cdi", "CDI")]:
        (obj,) = _local_chart_objects(files, name)
        assert obj["kind"] == kind
        assert crds.validate(obj) == []
        # a wrong field in the CR is caught by the same CRD
        bad = copy.deepcopy(obj)
        bad["spec"]["imagePullPolicy"] = 7
        assert {p.path for p in crds.validate(bad)} == {"spec.imagePullPolicy"}


def test_kubevirt_cr_settings(example_files: Files, modified_files: Files) -> None:
    (cr,) = _local(example_files)["kubevirt"]
    spec = cr["spec"]
    assert "LiveMigration" in spec["configuration"]["developerConfiguration"]["featureGates"]
    assert spec["configuration"]["evictionStrategy"] == "LiveMigrate"
    assert spec["workloadUpdateStrategy"]["workloadUpdateMethods"] == ["LiveMigrate", "Evict"]
    # inventory override: lists replace, maps merge
    spec2 = _helmreleases(modified_files)["kubevirt"]["spec"]["values"]["spec"]
    assert spec2["configuration"]["developerConfiguration"]["featureGates"] == ["LiveMigration"]
    assert spec2["configuration"]["evictionStrategy"] == "LiveMigrate"


def test_linstor_talos_satellite_override(files: Files, crds: CrdRegistry) -> None:
    values = _helmreleases(files)["linstor"]["spec"]["values"]
    (sat,) = values["linstorSatelliteConfigurations"]
    deleted = {
        c["name"]
        for c in sat["podTemplate"]["spec"]["initContainers"]
        if c.get("$patch") == "delete"
    }
    assert deleted == {"drbd-module-loader", "drbd-shutdown-guard"}
    obj = {
        "apiVersion": "piraeus.io/v1",
        "kind": "LinstorSatelliteConfiguration",
        "metadata": {"name": sat["name"]},
        "spec": {k: v for k, v in sat.items() if k != "name"},
    }
    assert crds.validate(obj) == []


# --------------------------------------------------------------------------- invalid overrides


def _with_values(component: str, values: dict[str, Any]) -> Inventory:
    def edit(d: dict[str, Any]) -> None:
        d["platform"][component]["values"] = values

    return _inventory(edit)


def test_invalid_kube_proxy_replacement_is_caught() -> None:
    inv = _with_values("cilium", {"kubeProxyReplacement": "maybe"})
    with pytest.raises(InputError) as exc:
        render_gitops(inv)
    assert exc.value.exit_code == 2
    paths = [p.path for p in exc.value.problems]
    assert paths == ["platform.cilium.values.kubeProxyReplacement"]
    assert "'maybe' is not one of" in str(exc.value)


def test_invalid_value_caught_by_upstream_cilium_schema() -> None:
    inv = _with_values(
        "cilium", {"cgroup": {"autoMount": {"enabled": "no"}}, "k8sServicePort": [7445]}
    )
    with pytest.raises(InputError) as exc:
        render_gitops(inv)
    paths = {p.path for p in exc.value.problems}
    assert "platform.cilium.values.cgroup.autoMount.enabled" in paths
    assert "platform.cilium.values.k8sServicePort" in paths
    assert "_upstream/cilium/1.19.6/values.schema.json" in str(exc.value)


def test_invalid_metallb_override_caught_by_draft7_schema() -> None:
    inv = _with_values("metallb", {"speaker": {"logLevel": "chatty"}})
    with pytest.raises(InputError) as exc:
        render_gitops(inv)
    assert [p.path for p in exc.value.problems] == ["platform.metallb.values.speaker.logLevel"]


def test_invalid_kubevirt_override_caught_by_crd() -> None:
    inv = _with_values("kubevirt", {"spec": {"configuration": {"evictionStrategy": 3}}})
    with pytest.raises(InputError) as exc:
        render_gitops(inv)
    paths = {p.path for p in exc.value.problems}
    assert paths == {"platform.kubevirt.values.spec.configuration.evictionStrategy"}
    assert "CRD KubeVirt" in str(exc.value)


def test_invalid_linstor_satellite_override_caught_by_crd() -> None:
    inv = _with_values(
        "linstor", {"linstorSatelliteConfigurations": [{"name": "x", "podTemplate": "oops"}]}
    )
    with pytest.raises(InputError) as exc:
        render_gitops(inv)
    paths = [p.path for p in exc.value.problems]
    assert paths == ["platform.linstor.values (LinstorSatelliteConfiguration/x) spec.podTemplate"]


def test_cilium_version_selects_its_schema() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["platform"]["cilium"]["version"] = "1.20.0"
        d["platform"]["cilium"]["values"] = {"hubble": {"enabled": "yes"}}

    with pytest.raises(InputError) as exc:
        render_gitops(_inventory(edit))
    assert [p.path for p in exc.value.problems] == ["platform.cilium.values.hubble.enabled"]
    assert "_upstream/cilium/1.20.0/values.schema.json" in str(exc.value)


def test_local_chart_version_cannot_change() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["platform"]["kubevirt"]["version"] = "1.9.0"

    with pytest.raises(InputError) as exc:
        render_gitops(_inventory(edit))
    assert exc.value.problems[0].path == "platform.kubevirt.version"


# --------------------------------------------------------------------------- dependsOn DAG


def _edges(files: Files) -> dict[str, set[str]]:
    """Release -> its dependencies: HelmRelease dependsOn, and in direct mode the
    ``cloudctl.io/depends-on`` annotation every object of gitops/local/<release>.yaml carries."""
    edges = {
        n: {d["name"] for d in hr["spec"].get("dependsOn", [])}
        for n, hr in _helmreleases(files).items()
    }
    for name, objs in _local(files).items():
        annotations = [o["metadata"]["annotations"] for o in objs]
        assert all(a["cloudctl.io/release"] == name for a in annotations), name
        deps = {a.get("cloudctl.io/depends-on", "") for a in annotations}
        assert len(deps) == 1, name
        edges[name] = {d for d in deps.pop().split(",") if d}
    return edges


def _assert_acyclic(edges: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        assert state.get(n) != 1, f"cycle through {n}"
        if state.get(n) == 2:
            return
        state[n] = 1
        for m in edges[n]:
            visit(m)
        state[n] = 2

    for n in edges:
        visit(n)


def test_depends_on_matches_design(example_files: Files) -> None:
    edges = _edges(example_files)
    assert edges == DESIGN_EDGES
    _assert_acyclic(edges)


def _release_like(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The dependsOn / targetNamespace a local component's plain manifests stand for."""
    deps = objs[0]["metadata"]["annotations"].get("cloudctl.io/depends-on", "")
    namespaces = {o["metadata"].get("namespace") for o in objs} - {None}
    assert len(namespaces) <= 1, namespaces  # none: only cluster-scoped objects (the CDI CR)
    return {
        "spec": {
            "dependsOn": [{"name": d} for d in deps.split(",") if d],
            "targetNamespace": namespaces.pop() if namespaces else None,
        }
    }


def test_platform_releases_api_matches_render(
    files: Files, example: Inventory, modified: Inventory
) -> None:
    inv = example if "gitops/flux-system/gotk-sync.yaml" not in files else modified
    releases = platform_releases(inv)
    hrs = _helmreleases(files)
    local = _local(files)
    assert not (set(hrs) & set(local))
    assert sorted(r.name for r in releases) == sorted([*hrs, *local])
    if inv.gitops is None:  # direct mode: a local chart is never a HelmRelease
        assert sorted(local) == sorted(r.name for r in releases if r.source.type == "git")
        order = _docs(files, "gitops/local/kustomization.yaml")[0]["resources"]
        assert order == [f"{r.name}.yaml" for r in releases if r.source.type == "git"]
    else:
        assert not local
    hrs = {**hrs, **{n: _release_like(objs) for n, objs in local.items()}}
    position = {r.name: i for i, r in enumerate(releases)}
    for r in releases:
        hr = hrs[r.name]["spec"]
        assert set(r.depends_on) == {d["name"] for d in hr.get("dependsOn", [])}
        assert all(position[d] < position[r.name] for d in r.depends_on)
        assert hr["targetNamespace"] == r.namespace or (
            r.name in local and hr["targetNamespace"] is None
        )
        if "chart" in hr and r.source.type == "helm":
            assert hr["chart"]["spec"]["version"] == r.version
            assert hr["chart"]["spec"]["chart"] == r.chart


def test_oci_version_override(modified_files: Files) -> None:
    oci = _by_kind(modified_files, "OCIRepository")
    assert [(o["metadata"]["name"], o["spec"]["ref"]["tag"]) for o in oci] == [
        ("piraeus-operator", "2.7.1")
    ]
    assert (
        _helmreleases(modified_files)["piraeus-operator"]["spec"]["chartRef"]["kind"]
        == "OCIRepository"
    )


def _disable(*components: str) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        for c in components:
            if c == "cdi":
                d["platform"]["kubevirt"]["cdi"]["enabled"] = False
            else:
                d["platform"][c]["enabled"] = False

    return edit


@pytest.mark.parametrize(
    ("disabled", "absent", "expected"),
    [
        (("kubeOvn",), {"kube-ovn"}, {n: {"cilium"} for n in AFTER_KUBE_OVN}),
        (
            ("certManager",),
            {"cert-manager"},
            {"kamaji": {"kube-ovn"}, "capi-operator": {"kube-ovn"}},
        ),
        (
            ("kubeOvn", "certManager"),
            {"kube-ovn", "cert-manager"},
            {
                **{n: {"cilium"} for n in AFTER_KUBE_OVN},
                "kamaji": {"cilium"},
                "capi-operator": {"cilium"},
            },
        ),
        (("linstor",), {"piraeus-operator", "linstor"}, {}),
        (
            ("kubevirt",),
            {"kubevirt-operator", "kubevirt", "cdi-operator", "cdi"},
            {"capi-providers": {"capi-operator", "kamaji", "kube-ovn"}},
        ),
        (
            ("cdi",),
            {"cdi-operator", "cdi"},
            {
                "kubevirt": {"kubevirt-operator"},
                "capi-providers": {"capi-operator", "kamaji", "kubevirt", "kube-ovn"},
            },
        ),
        (("clusterApi",), {"capi-operator", "capi-providers"}, {}),
        (("metallb",), {"metallb", "metallb-config"}, {}),
        (("cilium",), {"cilium"}, {"kube-ovn": set()}),
    ],
)
def test_disabling_drops_cleanly(
    disabled: tuple[str, ...], absent: set[str], expected: dict[str, set[str]]
) -> None:
    files = render_gitops(_inventory(_disable(*disabled)))
    edges = _edges(files)
    assert set(edges) == set(DESIGN_EDGES) - absent
    for name, deps in edges.items():
        assert deps <= set(edges), f"{name} depends on a release that is not rendered"
        want = expected.get(name, DESIGN_EDGES[name])
        assert deps == want, name
    _assert_acyclic(edges)
    # nothing else mentions a disabled release's chart or namespace-only objects
    text = b"".join(f.data for p, f in files.items() if p.startswith("gitops/platform/"))
    for name in absent:
        assert f"releases/{name}.yaml".encode() not in text
    if "cilium" not in absent:
        # everything still (transitively) after cilium
        def reaches_cilium(n: str) -> bool:
            return n == "cilium" or any(reaches_cilium(m) for m in edges[n])

        assert all(reaches_cilium(n) for n in edges)


def test_kube_ovn_disabled_drops_chaining() -> None:
    files = render_gitops(_inventory(_disable("kubeOvn")))
    values = _helmreleases(files)["cilium"]["spec"]["values"]
    assert "cni" not in values and "routingMode" not in values
    assert "gitops/platform/cilium-cni-configuration.yaml" not in files
    assert values["k8sServicePort"] == 7445 and values["cgroup"]["autoMount"]["enabled"] is False


# --------------------------------------------------------------------------- inventory values


def test_cilium_overlays(example_files: Files, modified_files: Files) -> None:
    v = _helmreleases(example_files)["cilium"]["spec"]["values"]
    assert v["k8sServiceHost"] == "localhost" and v["k8sServicePort"] == 7445
    assert v["cgroup"] == {"autoMount": {"enabled": False}, "hostRoot": "/sys/fs/cgroup"}
    assert v["kubeProxyReplacement"] is True
    assert v["cni"]["chainingMode"] == "generic-veth" and v["cni"]["chainingTarget"] == "kube-ovn"
    assert v["cni"]["configMap"] == "cni-configuration"
    cm = _docs(example_files, "gitops/platform/cilium-cni-configuration.yaml")[0]
    assert (
        cm["metadata"]["namespace"]
        == _helmreleases(example_files)["cilium"]["spec"]["targetNamespace"]
    )
    conflist = json.loads(cm["data"]["cni-config"])
    assert [p["type"] for p in conflist["plugins"]] == ["kube-ovn", "portmap", "cilium-cni"]
    v2 = _helmreleases(modified_files)["cilium"]["spec"]["values"]
    assert v2["operator"]["replicas"] == 2 and v2["hubble"]["enabled"] is True


def test_kube_ovn_values_from_inventory(example_files: Files, modified_files: Files) -> None:
    v = _helmreleases(example_files)["kube-ovn"]["spec"]["values"]
    assert v["ipv4"] == {
        "POD_CIDR": "10.244.0.0/16",
        "POD_GATEWAY": "10.244.0.1",
        "SVC_CIDR": "10.96.0.0/16",
        "JOIN_CIDR": "100.64.0.0/16",
    }
    assert v["MASTER_NODES"] == "10.20.0.11,10.20.0.12,10.20.0.13"
    assert v["func"]["ENABLE_NP"] is False and v["func"]["ENABLE_LB"] is False
    v2 = _helmreleases(modified_files)["kube-ovn"]["spec"]["values"]
    assert v2["ipv4"] == {
        "POD_CIDR": "10.250.0.0/16",
        "POD_GATEWAY": "10.250.0.1",
        "SVC_CIDR": "10.112.0.0/16",
        "JOIN_CIDR": "100.70.0.0/16",
    }
    assert v2["MASTER_NODES"] == "10.20.0.11"


def test_namespaces_and_pod_security(files: Files) -> None:
    ns = {
        d["metadata"]["name"]: d["metadata"]["labels"]
        for d in _docs(files, "gitops/platform/namespaces.yaml")
    }
    targets = {hr["spec"]["targetNamespace"] for hr in _helmreleases(files).values()}
    targets |= {_release_like(objs)["spec"]["targetNamespace"] for objs in _local(files).values()}
    targets.discard(None)
    assert set(ns) == targets
    privileged = {"cilium", "kube-ovn", "piraeus-datastore", "kubevirt", "cdi", "metallb-system"}
    for name, labels in ns.items():
        want = "privileged" if name in privileged else "baseline"
        assert labels["pod-security.kubernetes.io/enforce"] == want, name


# --------------------------------------------------------------------------- Flux before CNI


def _deployments(files: Files) -> dict[str, dict[str, Any]]:
    docs = _docs(files, "gitops/flux-system/gotk-components.yaml")
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


def _addr_port(value: str) -> int:
    return int(value.rstrip("/").rsplit(":", 1)[1])


def test_flux_deployments_run_before_cni(example_files: Files) -> None:
    deps = _deployments(example_files)
    assert set(deps) == set(CONTROLLERS)
    for name, d in deps.items():
        spec = d["spec"]["template"]["spec"]
        assert spec["hostNetwork"] is True, name
        assert spec["dnsPolicy"] == "Default", name
        (c,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["KUBERNETES_SERVICE_HOST"] == "localhost"
        assert env["KUBERNETES_SERVICE_PORT"] == "7445"
        keys = {t["key"] for t in spec["tolerations"]}
        assert {
            "node.kubernetes.io/not-ready",
            "node.cilium.io/agent-not-ready",
            "node.cloudprovider.kubernetes.io/uninitialized",
            "node-role.kubernetes.io/control-plane",
        } <= keys
        term = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert (
            term["labelSelector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        )


def test_flux_host_ports_pairwise_distinct(example_files: Files) -> None:
    port_sets: dict[str, set[int]] = {}
    for name, d in _deployments(example_files).items():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        ports = [p["containerPort"] for p in c["ports"]]
        assert all(p["hostPort"] == p["containerPort"] for p in c["ports"])
        assert len(ports) == len(set(ports))
        # every listener address given in the args is one of the declared ports
        listen = {
            a.split("=", 1)[0]: _addr_port(a.split("=", 1)[1])
            for a in c["args"]
            if a.split("=", 1)[0]
            in ("--metrics-addr", "--health-addr", "--storage-addr", "--receiverAddr")
            or (name == "notification-controller" and a.startswith("--events-addr"))
        }
        assert {"--metrics-addr", "--health-addr"} <= set(listen)
        assert set(listen.values()) <= set(ports), name
        port_sets[name] = set(ports)
    for (a, pa), (b, pb) in itertools.combinations(port_sets.items(), 2):
        assert not pa & pb, f"{a} and {b} share host ports {pa & pb}"
    reserved = {p for ports in RESERVED_HOST_PORTS.values() for p in ports}
    used = set().union(*port_sets.values())
    assert not used & reserved
    assert not used & {8080, 9090, 9440, 9292}  # upstream defaults, which would collide


def test_flux_controllers_reach_each_other_over_loopback(example_files: Files) -> None:
    deps = _deployments(example_files)

    def args(name: str) -> dict[str, str]:
        (c,) = deps[name]["spec"]["template"]["spec"]["containers"]
        return dict(a.split("=", 1) for a in c["args"] if "=" in a)

    def port(name: str, port_name: str) -> int:
        (c,) = deps[name]["spec"]["template"]["spec"]["containers"]
        return next(p["containerPort"] for p in c["ports"] if p["name"] == port_name)

    src = args("source-controller")
    assert src["--storage-adv-addr"] == f"127.0.0.1:{port('source-controller', 'http')}"
    assert src["--storage-addr"] == src["--storage-adv-addr"]
    events = args("notification-controller")["--events-addr"]
    assert events == f"127.0.0.1:{port('notification-controller', 'http')}"
    for name in ("source-controller", "kustomize-controller", "helm-controller"):
        assert args(name)["--events-addr"] == f"http://{events}/"
    text = example_files["gitops/flux-system/gotk-components.yaml"].data.decode()
    assert "svc.cluster.local" not in text


def test_flux_dropped_objects(example_files: Files) -> None:
    docs = _docs(example_files, "gitops/flux-system/gotk-components.yaml")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert not [k for k in kinds if k[0] == "NetworkPolicy"]
    assert not [k for k in kinds if "image-" in k[1] or k[1].endswith("image.toolkit.fluxcd.io")]
    assert ("Service", "webhook-receiver") in kinds
    (ns,) = [d for d in docs if d["kind"] == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert {
        "helmreleases.helm.toolkit.fluxcd.io",
        "kustomizations.kustomize.toolkit.fluxcd.io",
    } <= crds


def test_vendored_flux_manifest_is_unedited() -> None:
    import hashlib

    digest = hashlib.sha256(read_text("flux", "gotk-components-v2.9.3.yaml").encode()).hexdigest()
    assert digest == "4e2b0567407b1ebb5e772bbb3ef0da088e0a1ad3039d0d913249c2661bb2d365"


# --------------------------------------------------------------------------- tree shape


def test_kustomizations_list_existing_files(files: Files) -> None:
    for path in files:
        if posixpath.basename(path) == "kustomization.yaml":
            base = posixpath.dirname(path)
            (k,) = _docs(files, path)
            for res in k["resources"]:
                target = posixpath.normpath(posixpath.join(base, res))
                assert target in files or any(p.startswith(target + "/") for p in files), (
                    path,
                    res,
                )
    platform = _docs(files, "gitops/platform/kustomization.yaml")[0]["resources"]
    rendered = sorted(
        p.removeprefix("gitops/platform/")
        for p in files
        if p.startswith("gitops/platform/") and not p.endswith("kustomization.yaml")
    )
    assert sorted(platform) == rendered


def test_operator_charts_keep_upstream_documents(
    example_files: Files, modified_files: Files
) -> None:
    for chart, bundle in OPERATORS.items():
        upstream = split_documents(read_text("flux", bundle.manifest))
        kept = [d for d in upstream if yaml.load(d, Loader=LOADER).get("kind") != "Namespace"]
        assert len(kept) == len(upstream) - 1
        # GitOps mode: a chart whose template is the upstream text
        rendered = modified_files[f"gitops/charts/{chart}/templates/operator.yaml"].data.decode()
        body = rendered.split("\n", 1)[1]  # after the generated-by comment
        assert split_documents(body) == kept
        assert "{{" not in body  # no Go template actions in a static manifest
        meta = yaml.safe_load(modified_files[f"gitops/charts/{chart}/Chart.yaml"].data)
        assert meta["apiVersion"] == "v2" and meta["appVersion"] == bundle.app_version
        # direct mode: the same objects, plus cloudctl's ordering annotations
        plain = _local(example_files)[chart]
        for obj in plain:
            annotations = obj["metadata"].pop("annotations")
            assert annotations.pop("cloudctl.io/release") == chart
            assert annotations.pop("cloudctl.io/depends-on") == "kube-ovn"
            if annotations:
                obj["metadata"]["annotations"] = annotations
        assert plain == [yaml.load(d, Loader=LOADER) for d in kept]


def test_local_chart_manifests(example: Inventory, example_files: Files, crds: CrdRegistry) -> None:
    from cloudctl.render.gitops import local_chart_manifests

    manifests = local_chart_manifests(example)
    assert manifests == _local(example_files)  # what cloudctl applies is what the tree holds
    assert list(manifests) == [r.name for r in platform_releases(example) if r.source.type == "git"]
    kinds = {name: [o["kind"] for o in objs] for name, objs in manifests.items()}
    assert kinds["kubevirt"] == ["KubeVirt"] and kinds["cdi"] == ["CDI"]
    assert "Namespace" not in kinds["kubevirt-operator"]
    assert "Deployment" in kinds["kubevirt-operator"] and "Deployment" in kinds["cdi-operator"]
    assert kinds["metallb-config"] == ["IPAddressPool", "L2Advertisement"]
    for name in ("kubevirt", "cdi", "metallb-config"):
        for obj in manifests[name]:
            assert crds.validate(obj) == []


def test_no_secrets_and_relative_paths(files: Files) -> None:
    for path, f in files.items():
        assert path.startswith("gitops/") and ".." not in path.split("/")
        assert not f.secret


def test_render_is_deterministic(
    example: Inventory, modified: Inventory, example_files: Files, modified_files: Files
) -> None:
    assert render_gitops(example) == example_files
    assert render_gitops(_inventory()) == example_files  # a fresh, equal inventory
    assert render_gitops(modified) == modified_files
    assert example_files != modified_files
    assert list(example_files) == sorted(example_files)


def test_example_through_the_inventory_loader(example_files: Files) -> None:
    from cloudctl.inventory import load_inventory

    loaded = load_inventory(EXAMPLE)
    assert render_gitops(loaded.inventory) == example_files
