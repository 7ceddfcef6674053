"""Per-node Talos machine configs: schema-valid per minor, right links, right secrets, stable."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.catalog import talos_catalog
from cloudctl.errors import RenderError
from cloudctl.inventory import Inventory, parse_inventory
from cloudctl.render.machineconfig import (
    REDACTED,
    redact_config,
    render_machine_configs,
    render_node_config,
)
from cloudctl.secrets import SecretsBundle, generate_bundle
from cloudctl.talos_schema import split_documents, validate_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventory.example.yaml"
MINORS = ["v1.11", "v1.12", "v1.13"]
NETWORK_KINDS = ["HostnameConfig", "ResolverConfig", "TimeSyncConfig"]


@pytest.fixture(scope="module")
def bundle() -> SecretsBundle:
    return generate_bundle()


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def versions_for(minor: str) -> tuple[str, str]:
    """A Talos release the catalog lists for this minor (or minor.0 when it lists none yet)
    and the newest Kubernetes the minor supports."""
    catalog = talos_catalog()
    releases = catalog.releases_of(minor)
    talos = releases[-1] if releases else f"{minor}.0"
    info = catalog.minor(talos)
    assert info is not None, f"{minor} missing from talos/catalog.yaml"
    return talos, f"v{info.kubernetes_max}.0"


def inventory(minor: str, edit: Any = None) -> Inventory:
    data = example()
    data["cluster"]["talosVersion"], data["cluster"]["kubernetesVersion"] = versions_for(minor)
    if edit is not None:
        edit(data)
    return parse_inventory(yaml.safe_dump(data, sort_keys=False)).inventory


def docs_of(files: Any, node: str) -> list[dict[str, Any]]:
    return split_documents(files[f"talos/nodes/{node}.yaml"].data.decode())


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


# ------------------------------------------------------------------------------ per minor


@pytest.mark.parametrize("minor", MINORS)
def test_every_config_validates_and_has_the_expected_documents(
    minor: str, bundle: SecretsBundle
) -> None:
    inv = inventory(minor)
    files = render_machine_configs(inv, bundle)
    assert sorted(files) == sorted(
        [f"talos/nodes/{n.name}.yaml" for n in inv.nodes] + ["talos/talosconfig"]
    )
    for node in inv.nodes:
        text = files[f"talos/nodes/{node.name}.yaml"].data.decode()
        assert files[f"talos/nodes/{node.name}.yaml"].secret
        assert validate_config(text, inv.cluster.talos_version) == []
        docs = split_documents(text)
        assert docs[0]["version"] == "v1alpha1"
        assert docs[0]["debug"] is False and docs[0]["persist"] is True
        assert docs[0]["machine"]["type"] == node.role
        kinds = [d.get("kind") for d in docs[1:]]
        if minor == "v1.11":
            assert kinds == []
            assert docs[0]["machine"]["network"]["hostname"] == node.name
        else:
            assert kinds[:3] == NETWORK_KINDS
            assert "RegistryMirrorConfig" in kinds
            assert ("Layer2VIPConfig" in kinds) == node.is_controlplane
            assert "network" not in docs[0]["machine"]
            assert "registries" not in docs[0]["machine"]
            assert "time" not in docs[0]["machine"]
            assert by_kind(docs, "HostnameConfig")[0]["hostname"] == node.name


@pytest.mark.parametrize("minor", MINORS)
def test_cozystack_settings(minor: str, bundle: SecretsBundle) -> None:
    inv = inventory(minor)
    files = render_machine_configs(inv, bundle)
    for node in inv.nodes:
        doc = docs_of(files, node.name)[0]
        machine, cluster = doc["machine"], doc["cluster"]
        modules = {m["name"]: m.get("parameters") for m in machine["kernel"]["modules"]}
        assert modules == {
            "openvswitch": None,
            "drbd": ["usermode_helper=disabled"],
            "drbd_transport_tcp": None,
            "zfs": None,
            "spl": None,
            "vfio_pci": None,
            "vfio_iommu_type1": None,
        }
        assert machine["sysctls"]["net.ipv4.neigh.default.gc_thresh3"] == "16384"
        assert machine["sysctls"]["net.ipv4.tcp_fin_timeout"] == "30"
        assert machine["kubelet"]["nodeIP"]["validSubnets"] == ["10.20.0.0/24"]
        assert machine["kubelet"]["extraConfig"] == {"maxPods": 512}
        kubelet = f"ghcr.io/siderolabs/kubelet:{inv.cluster.kubernetes_version}"
        assert machine["kubelet"]["image"] == kubelet
        assert machine["features"]["kubePrism"] == {"enabled": True, "port": 7445}
        paths = {f["path"]: f["op"] for f in machine["files"]}
        assert paths == {
            "/etc/cri/conf.d/20-customization.part": "create",
            "/etc/lvm/lvm.conf": "overwrite",
        }
        assert "127.0.0.1" in machine["certSANs"]
        assert machine["install"]["image"].endswith(f":{inv.cluster.talos_version}")
        assert cluster["network"] == {
            "cni": {"name": "none"},
            "dnsDomain": "cozy.local",
            "podSubnets": ["100.65.0.0/16"],
            "serviceSubnets": ["10.96.0.0/16"],
        }
        assert cluster["controlPlane"]["endpoint"] == "https://10.20.0.10:6443"
        assert cluster["discovery"] == {"enabled": False}
        labels = machine.get("nodeLabels", {})
        assert "node.kubernetes.io/exclude-from-external-load-balancers" not in labels
        if node.is_controlplane:
            assert cluster["allowSchedulingOnControlPlanes"] is True
            assert cluster["proxy"]["disabled"] is True
            assert cluster["controllerManager"]["extraArgs"] == {"bind-address": "0.0.0.0"}
            assert cluster["scheduler"]["extraArgs"] == {"bind-address": "0.0.0.0"}
            assert cluster["etcd"]["advertisedSubnets"] == ["10.20.0.0/24"]
            assert cluster["etcd"]["extraArgs"] == {"quota-backend-bytes": "8589934592"}
            assert {"10.20.0.10", "127.0.0.1"} <= set(cluster["apiServer"]["certSANs"])
            assert cluster["apiServer"]["image"].endswith(inv.cluster.kubernetes_version)


def test_install_disk_selector_and_labels(bundle: SecretsBundle) -> None:
    files = render_machine_configs(inventory("v1.13"), bundle)
    assert docs_of(files, "cp1")[0]["machine"]["install"]["disk"] == "/dev/sda"
    assert docs_of(files, "cp2")[0]["machine"]["install"]["diskSelector"] == {
        "size": ">= 100GB",
        "type": "ssd",
    }
    assert docs_of(files, "worker2")[0]["machine"]["install"]["diskSelector"] == {
        "model": "SAMSUNG MZ7*"
    }
    assert docs_of(files, "worker1")[0]["machine"]["nodeLabels"] == {
        "topology.kubernetes.io/zone": "rack1-a"
    }


# ------------------------------------------------------------------------------ network


def test_v1_11_bond_vlan_and_vip_land_on_the_right_link(bundle: SecretsBundle) -> None:
    files = render_machine_configs(inventory("v1.11"), bundle)
    network = docs_of(files, "cp3")[0]["machine"]["network"]
    assert network["nameservers"] == ["10.20.0.1"]
    (bond,) = network["interfaces"]
    assert bond["interface"] == "bond0"
    assert bond["bond"]["deviceSelectors"] == [
        {"permanentAddr": "52:54:00:10:00:13"},
        {"permanentAddr": "52:54:00:10:01:13"},
    ]
    assert bond["bond"]["mode"] == "802.3ad" and bond["bond"]["lacpRate"] == "fast"
    assert bond["addresses"] == ["10.20.0.13/24"]
    assert bond["routes"] == [{"network": "0.0.0.0/0", "gateway": "10.20.0.1"}]
    assert bond["vip"] == {"ip": "10.20.0.10"}
    assert bond["vlans"] == [{"vlanId": 100, "addresses": ["10.100.0.13/24"]}]

    (nic,) = docs_of(files, "worker1")[0]["machine"]["network"]["interfaces"]
    assert nic["deviceSelector"] == {"permanentAddr": "52:54:00:10:00:21"}
    assert nic["addresses"] == ["10.20.0.21/24"] and "vip" not in nic
    machine = docs_of(files, "worker1")[0]["machine"]
    assert machine["time"] == {"servers": ["10.20.0.1"]}
    assert machine["registries"] == {"mirrors": {"docker.io": {"endpoints": ["https://mirror.gcr.io"]}}}


@pytest.mark.parametrize("minor", ["v1.12", "v1.13"])
def test_multidoc_bond_vlan_and_vip_land_on_the_right_link(
    minor: str, bundle: SecretsBundle
) -> None:
    files = render_machine_configs(inventory(minor), bundle)
    docs = docs_of(files, "cp3")
    aliases = {d["name"]: d["selector"]["match"] for d in by_kind(docs, "LinkAliasConfig")}
    assert aliases == {
        "net0": 'mac(link.permanent_addr) == "52:54:00:10:00:13"',
        "net1": 'mac(link.permanent_addr) == "52:54:00:10:01:13"',
    }
    (bond,) = by_kind(docs, "BondConfig")
    assert bond["name"] == "bond0" and bond["links"] == ["net0", "net1"]
    assert bond["bondMode"] == "802.3ad"
    assert bond["addresses"] == [{"address": "10.20.0.13/24"}]
    assert bond["routes"] == [{"destination": "0.0.0.0/0", "gateway": "10.20.0.1"}]
    (vlan,) = by_kind(docs, "VLANConfig")
    assert vlan == {
        "apiVersion": "v1alpha1",
        "kind": "VLANConfig",
        "name": "bond0.100",
        "vlanID": 100,
        "parent": "bond0",
        "addresses": [{"address": "10.100.0.13/24"}],
    }
    assert by_kind(docs, "Layer2VIPConfig") == [
        {"apiVersion": "v1alpha1", "kind": "Layer2VIPConfig", "name": "10.20.0.10", "link": "bond0"}
    ]
    assert by_kind(docs, "LinkConfig") == []  # bond members need no LinkConfig

    docs = docs_of(files, "cp1")
    (link,) = by_kind(docs, "LinkConfig")
    assert link["name"] == "net0" and link["addresses"] == [{"address": "10.20.0.11/24"}]
    assert by_kind(docs, "Layer2VIPConfig")[0]["link"] == "net0"
    assert by_kind(docs_of(files, "worker1"), "Layer2VIPConfig") == []
    assert by_kind(docs, "ResolverConfig")[0]["nameservers"] == [{"address": "10.20.0.1"}]
    assert by_kind(docs, "TimeSyncConfig")[0]["ntp"] == {"servers": ["10.20.0.1"]}
    assert by_kind(docs, "RegistryMirrorConfig") == [
        {
            "apiVersion": "v1alpha1",
            "kind": "RegistryMirrorConfig",
            "name": "docker.io",
            "endpoints": [{"url": "https://mirror.gcr.io"}],
        }
    ]


def _ip_on_vlan_of_a_nic(data: dict[str, Any]) -> None:
    """cp1: second NIC, node IP on VLAN 20 of the first NIC, storage VLAN 30 on the second."""
    cp1 = data["nodes"][0]
    cp1["macs"] = ["52:54:00:10:00:11", "52:54:00:10:02:11"]
    cp1["link"] = "mgmt"
    cp1["vlans"] = [
        {"id": 20, "parent": "52:54:00:10:00:11", "name": "mgmt", "mtu": 1400},
        {"id": 30, "parent": "52:54:00:10:02:11", "addresses": ["10.30.0.11/24"]},
    ]
    data["network"]["mtu"] = 9000


@pytest.mark.parametrize("minor", MINORS)
def test_node_ip_and_vip_on_a_vlan_of_a_plain_nic(minor: str, bundle: SecretsBundle) -> None:
    inv = inventory(minor, _ip_on_vlan_of_a_nic)
    files = render_machine_configs(inv, bundle)
    docs = docs_of(files, "cp1")
    if minor == "v1.11":
        first, second = docs[0]["machine"]["network"]["interfaces"]
        assert first["deviceSelector"] == {"permanentAddr": "52:54:00:10:00:11"}
        assert "addresses" not in first and "vip" not in first
        assert first["vlans"] == [
            {
                "vlanId": 20,
                "addresses": ["10.20.0.11/24"],
                "routes": [{"network": "0.0.0.0/0", "gateway": "10.20.0.1"}],
                "mtu": 1400,
                "vip": {"ip": "10.20.0.10"},
            }
        ]
        assert second["deviceSelector"] == {"permanentAddr": "52:54:00:10:02:11"}
        assert second["vlans"] == [{"vlanId": 30, "addresses": ["10.30.0.11/24"]}]
        return
    links = {d["name"]: d for d in by_kind(docs, "LinkConfig")}
    assert set(links) == {"net0", "net1"}
    assert "addresses" not in links["net0"] and links["net0"]["mtu"] == 1400
    vlans = {d["name"]: d for d in by_kind(docs, "VLANConfig")}
    assert vlans["mgmt"]["parent"] == "net0" and vlans["mgmt"]["vlanID"] == 20
    assert vlans["mgmt"]["addresses"] == [{"address": "10.20.0.11/24"}]
    assert vlans["mgmt"]["routes"] == [{"destination": "0.0.0.0/0", "gateway": "10.20.0.1"}]
    assert vlans["vlan30"]["parent"] == "net1"
    assert vlans["vlan30"]["addresses"] == [{"address": "10.30.0.11/24"}]
    assert "routes" not in vlans["vlan30"]
    assert by_kind(docs, "Layer2VIPConfig")[0]["link"] == "mgmt"


def test_network_mtu_goes_to_the_node_ip_link(bundle: SecretsBundle) -> None:
    inv = inventory("v1.13", lambda d: d["network"].__setitem__("mtu", 9000))
    files = render_machine_configs(inv, bundle)
    (link,) = by_kind(docs_of(files, "worker1"), "LinkConfig")
    assert link["mtu"] == 9000
    (bond,) = by_kind(docs_of(files, "cp3"), "BondConfig")
    assert bond["mtu"] == 9000
    (vlan,) = by_kind(docs_of(files, "cp3"), "VLANConfig")
    assert "mtu" not in vlan


# ------------------------------------------------------------------------------ secrets


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("minor", MINORS)
def test_workers_carry_no_ca_private_keys(minor: str, bundle: SecretsBundle) -> None:
    inv = inventory(minor)
    files = render_machine_configs(inv, bundle)
    ca_keys = [
        bundle.os.key,
        bundle.k8s.key,
        bundle.k8s_aggregator.key,
        bundle.etcd.key,
        bundle.k8s_service_account_key,
    ]
    for node in inv.workers:
        text = files[f"talos/nodes/{node.name}.yaml"].data.decode()
        doc = split_documents(text)[0]
        assert doc["machine"]["ca"] == {"crt": _b64(bundle.os.crt)}
        assert doc["cluster"]["ca"] == {"crt": _b64(bundle.k8s.crt)}
        for absent in ("aggregatorCA", "serviceAccount", "etcd", "secretboxEncryptionSecret"):
            assert absent not in doc["cluster"]
        assert "key:" not in text
        for key in ca_keys:
            assert key and _b64(key) not in text
        assert doc["machine"]["token"] == bundle.trustd_token
        assert doc["cluster"]["token"] == bundle.bootstrap_token
    for node in inv.controlplanes:
        doc = docs_of(files, node.name)[0]
        assert doc["machine"]["ca"]["key"] == _b64(bundle.os.key or b"")
        cluster = doc["cluster"]
        assert cluster["ca"]["key"] == _b64(bundle.k8s.key or b"")
        assert cluster["aggregatorCA"]["key"] == _b64(bundle.k8s_aggregator.key or b"")
        assert cluster["serviceAccount"] == {"key": _b64(bundle.k8s_service_account_key)}
        assert cluster["etcd"]["ca"]["key"] == _b64(bundle.etcd.key or b"")
        assert cluster["secretboxEncryptionSecret"] == bundle.secretbox_encryption_secret
        assert cluster["id"] == bundle.cluster_id and cluster["secret"] == bundle.cluster_secret


def test_talosconfig(bundle: SecretsBundle) -> None:
    files = render_machine_configs(inventory("v1.13"), bundle)
    rendered = files["talos/talosconfig"]
    assert rendered.secret
    tc = yaml.safe_load(rendered.data)
    assert tc["context"] == "rack1"
    ctx = tc["contexts"]["rack1"]
    assert ctx["endpoints"] == ["10.20.0.11", "10.20.0.12", "10.20.0.13"]
    assert ctx["nodes"] == ["10.20.0.11", "10.20.0.12", "10.20.0.13", "10.20.0.21", "10.20.0.22"]
    assert ctx["ca"] == _b64(bundle.os.crt)
    assert ctx["key"] == _b64(bundle.admin.key or b"")


@pytest.mark.parametrize("minor", ["v1.11", "v1.13"])
def test_redaction_removes_every_secret(minor: str, bundle: SecretsBundle) -> None:
    files = render_machine_configs(inventory(minor), bundle)
    secrets = bundle.secret_strings()
    for path, rendered in files.items():
        redacted = redact_config(rendered.data.decode())
        leaked = [s for s in secrets if s in redacted]
        assert leaked == [], f"{path} leaks a secret after redaction"
        assert REDACTED in redacted
        original = split_documents(rendered.data.decode())
        again = split_documents(redacted)
        assert len(again) == len(original)
    cp = split_documents(redact_config(files["talos/nodes/cp1.yaml"].data.decode()))[0]
    assert cp["machine"]["ca"] == {"crt": _b64(bundle.os.crt), "key": REDACTED}
    assert cp["cluster"]["secret"] == REDACTED and cp["cluster"]["token"] == REDACTED
    assert cp["cluster"]["id"] == bundle.cluster_id  # not a secret: kept for diffs
    plain = split_documents(files["talos/nodes/cp1.yaml"].data.decode())[0]
    assert cp["machine"]["install"] == plain["machine"]["install"]


# ------------------------------------------------------------------------------ stability


def test_deterministic_output(bundle: SecretsBundle) -> None:
    inv = inventory("v1.13")
    first = render_machine_configs(inv, bundle)
    second = render_machine_configs(inventory("v1.13"), bundle)
    assert {p: f.data for p, f in first.items()} == {p: f.data for p, f in second.items()}
    node = inv.node("cp3")
    assert render_node_config(inv, bundle, node) == first["talos/nodes/cp3.yaml"].data.decode()


@pytest.mark.parametrize("minor", ["v1.11", "v1.13"])
def test_changing_one_node_changes_only_its_file(minor: str, bundle: SecretsBundle) -> None:
    before = render_machine_configs(inventory(minor), bundle)

    def edit(data: dict[str, Any]) -> None:
        data["nodes"][3]["labels"]["storage"] = "fast"
        data["nodes"][3]["vlans"] = [{"id": 7, "parent": "52:54:00:10:00:21"}]

    after = render_machine_configs(inventory(minor, edit), bundle)
    changed = sorted(p for p in before if before[p].data != after[p].data)
    assert changed == ["talos/nodes/worker1.yaml"]


# ------------------------------------------------------------------------------ patches


def _patch(node_index: int, *patches: dict[str, Any]) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["nodes"][node_index]["configPatches"] = list(patches)

    return edit


@pytest.mark.parametrize("minor", MINORS)
def test_patches_merge_replace_and_delete(minor: str, bundle: SecretsBundle) -> None:
    inv = inventory(
        minor,
        _patch(
            3,
            {
                "machine": {
                    "kubelet": {"extraConfig": {"cpuManagerPolicy": "static"}},
                    "certSANs": ["worker1.rack1.example.com"],
                    "sysctls": {"vm.nr_hugepages": "1024", "net.ipv4.tcp_fin_timeout": None},
                    "features": {"hostDNS": {"$patch": "delete"}},
                }
            },
            {"machine": {"install": {"wipe": True}}},
        ),
    )
    files = render_machine_configs(inv, bundle)
    text = files["talos/nodes/worker1.yaml"].data.decode()
    assert validate_config(text, inv.cluster.talos_version) == []
    machine = split_documents(text)[0]["machine"]
    assert machine["kubelet"]["extraConfig"] == {"maxPods": 512, "cpuManagerPolicy": "static"}
    assert machine["certSANs"] == ["worker1.rack1.example.com"]
    assert machine["sysctls"]["vm.nr_hugepages"] == "1024"
    assert "net.ipv4.tcp_fin_timeout" not in machine["sysctls"]
    assert "hostDNS" not in machine["features"]
    assert machine["install"]["wipe"] is True
    other = docs_of(files, "worker2")[0]["machine"]
    assert "cpuManagerPolicy" not in other["kubelet"]["extraConfig"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"machine": {"kubelet": {"maxPods": 100}}}, "machine.kubelet.maxPods: unknown field"),
        ({"machine": {"install": {"wipe": "yes"}}}, "machine.install.wipe: wrong type"),
        ({"cluster": {"network": {"cni": {"name": "calico"}}}}, "'calico' is not one of"),
    ],
)
def test_bad_patch_names_node_patch_and_schema_message(
    patch: dict[str, Any], message: str, bundle: SecretsBundle
) -> None:
    inv = inventory("v1.13", _patch(4, {"machine": {"sysctls": {"vm.swappiness": "10"}}}, patch))
    with pytest.raises(RenderError) as excinfo:
        render_machine_configs(inv, bundle)
    text = str(excinfo.value)
    assert "node worker2: configPatches[1]" in text
    assert message in text
    assert excinfo.value.exit_code == 4


def test_patch_reintroducing_a_moved_field_is_rejected_on_multidoc(bundle: SecretsBundle) -> None:
    patch = {"machine": {"network": {"hostname": "other"}}}
    inv = inventory("v1.12", _patch(0, patch))
    expected = r"(?s)node cp1: configPatches\[0\].*machine\.network\.hostname: unknown field"
    with pytest.raises(RenderError, match=expected):
        render_machine_configs(inv, bundle)
    inv = inventory("v1.11", _patch(0, patch))
    doc = docs_of(render_machine_configs(inv, bundle), "cp1")[0]
    assert doc["machine"]["network"]["hostname"] == "other"
    assert doc["machine"]["network"]["interfaces"]  # merged, not replaced


def test_bond_named_like_a_nic_alias_is_refused(bundle: SecretsBundle) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["nodes"][2]["bonds"][0]["name"] = "net1"
        data["nodes"][2]["link"] = "net1"
        data["nodes"][2]["vlans"][0]["parent"] = "net1"

    inv = inventory("v1.13", edit)
    with pytest.raises(RenderError, match="node cp3: link name 'net1' collides"):
        render_machine_configs(inv, bundle)
