"""Tenant clusters: the inventory model and checks, the rendered Cluster API objects (strictly
against the vendored CRDs), the provider pins, the pure tenant status, and bad tenant
definitions refused by `cloudctl render` with exit 2 and nothing written."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cloudctl.capi_catalog import capi_catalog, parse_minor
from cloudctl.cli import main
from cloudctl.errors import InventoryError
from cloudctl.inventory import load_inventory, parse_inventory
from cloudctl.kube.tenants import TenantWant, tenant_status
from cloudctl.render.gitops import render_gitops
from cloudctl.render.gitops.contracts import registry_for
from cloudctl.render.tenants import (
    RENDERED_KINDS,
    tenant_files,
    tenant_objects,
    tenant_problems,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventory.example.yaml"
GOLDEN_SECRETS = ROOT / "tests" / "golden" / "secrets" / "rack1"


def _data() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def _text(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def _second_tenant(data: dict[str, Any], **network: str) -> dict[str, Any]:
    t = copy.deepcopy(data["tenants"][0])
    t["name"] = "team-b"
    t["network"] = {"subnet": "10.230.0.0/24", "podCidr": "10.231.0.0/16",
                    "serviceCidr": "10.232.0.0/16", **network}
    return t


# --------------------------------------------------------------------------- render + contract


def test_example_tenant_objects_validate_strictly_against_the_vendored_crds() -> None:
    inv = load_inventory(EXAMPLE).inventory
    objs = tenant_objects(inv, inv.tenants[0])
    kinds = {o["kind"] for o in objs}
    assert {"Cluster", "KamajiControlPlane", "KubevirtCluster", "KubevirtMachineTemplate",
            "MachineDeployment", "KubeadmConfigTemplate", "MachineHealthCheck", "DataStore",
            "HelmRelease", "Namespace", "Subnet"} == kinds
    checked = 0
    for obj in objs:
        if "." not in obj["apiVersion"].split("/")[0] or obj["kind"] == "Subnet":
            continue
        reg = registry_for(obj["apiVersion"])
        assert reg.schema(obj["apiVersion"], obj["kind"]) is not None, obj["kind"]
        assert reg.validate(obj) == [], obj["kind"]
        # strict: an unknown field anywhere in the spec is a contract break
        broken = copy.deepcopy(obj)
        broken["spec"]["notAField"] = True
        assert [p.path for p in reg.validate(broken)] == ["spec.notAField"], obj["kind"]
        checked += 1
    assert checked == 9
    assert tenant_problems(inv) == []


def test_the_kinds_pruning_looks_at_are_the_rendered_ones() -> None:
    data = _data()
    data["tenants"][0]["workers"][0]["image"] = {"dataVolume": {"url": "https://x/img.qcow2"}}
    inv = parse_inventory(_text(data)).inventory
    rendered = {(o["apiVersion"], o["kind"]) for o in tenant_objects(inv, inv.tenants[0])}
    assert rendered == set(RENDERED_KINDS)
    assert len(RENDERED_KINDS) == len(set(RENDERED_KINDS))


def test_rendered_objects_match_the_inventory() -> None:
    inv = load_inventory(EXAMPLE).inventory
    t = inv.tenants[0]
    files = tenant_files(inv, t)
    cluster, kcp, _ = files["cluster.yaml"]
    assert cluster["apiVersion"] == "cluster.x-k8s.io/v1beta2"
    assert cluster["spec"]["clusterNetwork"]["pods"]["cidrBlocks"] == [str(t.network.pod_cidr)]
    assert cluster["spec"]["controlPlaneRef"] == {
        "apiGroup": "controlplane.cluster.x-k8s.io", "kind": "KamajiControlPlane",
        "name": t.name}
    assert kcp["spec"]["replicas"] == 2 and kcp["spec"]["version"] == "v1.35.4"
    assert kcp["spec"]["dataStoreName"] == files["datastore.yaml"][0]["metadata"]["name"]
    assert set(kcp["spec"]["addons"]) == {"coreDNS", "kubeProxy", "konnectivity"}
    tmpl, boot, md, mhc = files["workers-md-0.yaml"]
    assert md["spec"]["replicas"] == 3
    assert md["spec"]["template"]["spec"]["infrastructureRef"]["name"] == tmpl["metadata"]["name"]
    assert md["spec"]["template"]["spec"]["bootstrap"]["configRef"]["name"] == \
        boot["metadata"]["name"]
    assert mhc["spec"]["selector"]["matchLabels"].items() <= \
        md["spec"]["template"]["metadata"]["labels"].items()
    vm = tmpl["spec"]["template"]["spec"]["virtualMachineTemplate"]["spec"]["template"]["spec"]
    assert vm["domain"]["cpu"]["cores"] == 2 and vm["domain"]["memory"]["guest"] == "4Gi"
    cni = files["cni.yaml"][0]
    assert cni["spec"]["kubeConfig"]["secretRef"] == {"name": "team-a-kubeconfig", "key": "value"}
    subnet = files["namespace.yaml"][1]
    assert subnet["spec"]["cidrBlock"] == "10.240.0.0/24"
    assert subnet["spec"]["namespaces"] == ["tenant-team-a"]


def test_a_data_volume_pool_renders_a_cdi_import_of_the_disk_size() -> None:
    data = _data()
    data["tenants"][0]["workers"][0]["image"] = {"dataVolume": {"url": "https://x/img.qcow2"}}
    inv = parse_inventory(_text(data)).inventory
    tmpl = tenant_files(inv, inv.tenants[0])["workers-md-0.yaml"][0]
    vm = tmpl["spec"]["template"]["spec"]["virtualMachineTemplate"]["spec"]
    dv = vm["dataVolumeTemplates"][0]
    assert dv["spec"]["source"]["http"]["url"] == "https://x/img.qcow2"
    assert dv["spec"]["storage"]["resources"]["requests"]["storage"] == "20Gi"
    assert vm["template"]["spec"]["volumes"] == [
        {"name": "root", "dataVolume": {"name": dv["metadata"]["name"]}}]
    assert tenant_problems(inv) == []


def test_tenants_tree_is_its_own_kustomize_root_and_gitops_mode_syncs_it() -> None:
    data = _data()
    files = render_gitops(parse_inventory(_text(data)).inventory)
    root = yaml.safe_load(files["gitops/kustomization.yaml"].data)
    assert "tenants" not in root["resources"]
    assert yaml.safe_load(files["gitops/tenants/kustomization.yaml"].data)["resources"] == \
        ["team-a"]
    data["tenants"] = []
    files = render_gitops(parse_inventory(_text(data)).inventory)
    assert not any(p.startswith("gitops/tenants/") for p in files)


def test_provider_pins_keep_to_the_contract_rules() -> None:
    cat = capi_catalog()
    core = cat.provider("core")
    assert core.contract == "v1beta2"
    # a provider of the deprecated v1beta1 contract only works with a core before its end
    for p in cat.providers:
        if p.contract == "v1beta1":
            assert parse_minor(core.version) < parse_minor(cat.v1beta1_contract_ends), p.name
    # the tenant range is inside Cluster API's workload-cluster support (v1.31..v1.36)
    assert parse_minor(cat.tenant_min) >= (1, 31)
    assert parse_minor(cat.tenant_max_minor) <= (1, 36)
    for p in cat.providers:
        for f in p.crds:
            assert (ROOT / "flux" / f).is_file(), f


# --------------------------------------------------------------------------- bad definitions


@pytest.mark.parametrize(
    ("edit", "path", "needle"),
    [
        (lambda d: d["tenants"][0]["network"].update(subnet="10.20.0.0/24"),
         "tenants[0].network.subnet", "overlaps the node subnet"),
        (lambda d: d["tenants"][0]["network"].update(podCidr="10.244.0.0/16"),
         "tenants[0].network.podCidr", "overlaps the kube-ovn pod CIDR"),
        (lambda d: d["tenants"].append(_second_tenant(d, podCidr="10.241.128.0/17")),
         "tenants[1].network.podCidr", "overlaps the tenant team-a pod CIDR"),
        (lambda d: d["tenants"][0]["network"].update(serviceCidr="10.241.0.0/24"),
         "tenants[0].network.serviceCidr", "overlaps tenant team-a pod CIDR"),
        (lambda d: d["tenants"][0].update(kubernetesVersion="v1.29.4"),
         "tenants[0].kubernetesVersion", "not supported for tenants"),
        (lambda d: d["tenants"][0].update(kubernetesVersion="v1.36.0"),
         "tenants[0].kubernetesVersion", "not supported for tenants"),
        (lambda d: d["tenants"][0]["workers"][0].update(replicas=0),
         "tenants[0].workers[0].replicas", "greater than or equal to 1"),
        (lambda d: d["tenants"][0]["controlPlane"].update(replicas=0),
         "tenants[0].controlPlane.replicas", "greater than or equal to 1"),
        (lambda d: d["tenants"][0].update(colour="blue"),
         "tenants[0].colour", "unknown key 'colour'"),
        (lambda d: d["tenants"][0]["workers"][0].update(memory="lots"),
         "tenants[0].workers[0].memory", "not a Kubernetes quantity"),
        (lambda d: d["tenants"][0]["workers"][0].update(image={}),
         "tenants[0].workers[0].image", "exactly one of containerDisk or dataVolume"),
        (lambda d: d["tenants"].append(_second_tenant(d) | {"name": "team-a"}),
         "tenants[1].name", "duplicate tenant name"),
        (lambda d: d["platform"]["clusterApi"].update(enabled=False),
         "platform.clusterApi.enabled", "must be enabled"),
        (lambda d: d["tenants"][0]["addons"].update(kubeProxy=False),
         "tenants[0].addons.kubeProxy", "keep kubeProxy: true"),
    ],
    ids=["subnet-nodes", "pods-kubeovn", "pods-tenant", "svc-own-pods", "old-version",
         "new-version", "zero-workers", "zero-cp", "unknown-key", "quantity", "image",
         "duplicate", "no-capi", "no-kube-proxy"],
)
def test_bad_tenant_definitions_name_field_and_line(edit: Any, path: str, needle: str) -> None:
    data = _data()
    edit(data)
    with pytest.raises(InventoryError) as err:
        parse_inventory(_text(data), "inv.yaml")
    problems = [p for p in err.value.problems if p.path == path]
    assert problems, [str(p) for p in err.value.problems]
    assert needle in problems[0].message, problems[0].message
    assert problems[0].line is not None and problems[0].line > 0


def _run(cwd: Path, *args: str) -> tuple[int, str]:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
    return r.exit_code, r.stderr


def test_render_refuses_a_bad_tenant_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    shutil.copytree(GOLDEN_SECRETS, tmp_path / "secrets" / "rack1")
    data = _data()
    data["tenants"][0]["network"]["podCidr"] = "10.96.0.0/16"  # the cluster's service subnet
    (tmp_path / "inventory.yaml").write_text(_text(data))
    code, err = _run(tmp_path, "render", "-i", "inventory.yaml", "-o", "out")
    assert code == 2, err
    assert "tenants[0].network.podCidr" in err and "inventory.yaml:" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- status (pure)


def _cluster(phase: str = "Provisioned", available: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": "a", "namespace": "tenant-a"},
            "status": {"phase": phase, "conditions": [
                {"type": "Available", "status": "True" if available else "False"}]}}


def _kcp(ready: int, want: int = 2) -> dict[str, Any]:
    return {"spec": {"replicas": want, "version": "v1.35.4"},
            "status": {"ready": ready >= want, "readyReplicas": ready, "version": "v1.35.4"}}


def _tcp(state: str = "Ready") -> dict[str, Any]:
    return {"status": {"kubernetesResources": {"version": {"status": state}},
                       "controlPlaneEndpoint": "10.0.0.1:6443"}}


def _md(pool: str, spec: int, replicas: int, ready: int, observed: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": f"a-{pool}", "generation": 1},
            "spec": {"replicas": spec, "clusterName": "a"},
            "status": {"replicas": replicas, "readyReplicas": ready,
                       "observedGeneration": observed}}


def test_tenant_status_ready_only_when_everything_is() -> None:
    want = TenantWant("a", {"md-0": 3}, 2)
    ok = tenant_status("a", _cluster(), _kcp(2), _tcp(), [_md("md-0", 3, 3, 3)], want)
    assert ok.ready and ok.detail == "Ready" and ok.control_plane == "2/2"
    assert ok.pools[0].ready == 3 and ok.endpoint == "10.0.0.1:6443"
    cases = [
        (tenant_status("a", None, None, None, [], want), "no Cluster tenant-a/a"),
        (tenant_status("a", _cluster("Provisioning"), _kcp(0), _tcp("Provisioning"), [], want),
         "Cluster phase Provisioning"),
        (tenant_status("a", _cluster(), _kcp(1), _tcp(), [_md("md-0", 3, 3, 3)], want),
         "control plane 1/2 ready"),
        (tenant_status("a", _cluster(), _kcp(2), _tcp(), [_md("md-0", 3, 3, 2)], want),
         "pool md-0: 2/3 machines ready"),
        # the inventory asks for 5, the cluster still has the old spec
        (tenant_status("a", _cluster(), _kcp(2), _tcp(), [_md("md-0", 3, 3, 3)],
                       TenantWant("a", {"md-0": 5}, 2)),
         "pool md-0: 3 replicas requested, 5 in the inventory"),
        # scaled down in spec, a machine still being deleted
        (tenant_status("a", _cluster(), _kcp(2), _tcp(), [_md("md-0", 2, 3, 3)],
                       TenantWant("a", {"md-0": 2}, 2)), "(3 exist)"),
        (tenant_status("a", _cluster(), _kcp(2), _tcp(), [_md("md-0", 3, 3, 3, observed=0)],
                       want), "update not observed yet"),
        (tenant_status("a", _cluster(), _kcp(2), _tcp(), [],
                       want), "pool md-0: no MachineDeployment yet"),
    ]
    for st, needle in cases:
        assert not st.ready
        assert needle in st.detail, st.detail
