"""Inventory model, loader and semantic checks: the good example and a table of bad ones."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from cloudctl.errors import InventoryError
from cloudctl.inventory import load_inventory, parse_inventory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventory.example.yaml"


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def dump(d: Any) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def test_example_is_valid() -> None:
    loaded = load_inventory(EXAMPLE)
    inv = loaded.inventory
    assert inv.cluster.name == "rack1"
    assert len(inv.controlplanes) == 3 and len(inv.workers) == 2
    assert inv.cluster.api_url == "https://10.20.0.10:6443"
    assert loaded.warnings == ()
    # MACs normalised to lower-case colon form; extensions to factory names
    assert inv.nodes[0].macs == ["52:54:00:10:00:11"]
    assert "siderolabs/zfs" in inv.image.extensions


def test_models_are_frozen() -> None:
    inv = load_inventory(EXAMPLE).inventory
    with pytest.raises(ValidationError):
        inv.cluster.name = "other"  # type: ignore[misc]


def test_mac_forms_and_single_mac_alias() -> None:
    d = example()
    d["nodes"][3].pop("macs")
    d["nodes"][3]["mac"] = "52-54-00-AB-CD-EF"
    inv = parse_inventory(dump(d)).inventory
    assert inv.nodes[3].macs == ["52:54:00:ab:cd:ef"]


def test_even_controlplane_count_warns() -> None:
    d = example()
    d["nodes"][3]["role"] = "controlplane"
    loaded = parse_inventory(dump(d))
    assert any("odd count" in w.message for w in loaded.warnings)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(d: dict[str, Any]) -> None:
        cur: Any = d
        parts = path.split(".")
        for p in parts[:-1]:
            cur = cur[int(p)] if p.isdigit() else cur.setdefault(p, {})
        last = parts[-1]
        if last.isdigit():
            cur[int(last)] = value
        else:
            cur[last] = value

    return apply


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(d: dict[str, Any]) -> None:
        cur: Any = d
        parts = path.split(".")
        for p in parts[:-1]:
            cur = cur[int(p)] if p.isdigit() else cur[p]
        del cur[parts[-1]]

    return apply


def _all(*fns: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(d: dict[str, Any]) -> None:
        for f in fns:
            f(d)

    return apply


# (id, mutation, expected field path in the message, expected message fragment)
BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    (
        "duplicate-mac",
        _set("nodes.4.macs", ["52:54:00:10:00:11"]),
        "nodes[4].macs[0]",
        "duplicate MAC",
    ),
    ("duplicate-ip", _set("nodes.4.ip", "10.20.0.21"), "nodes[4].ip", "duplicate IP"),
    ("duplicate-hostname", _set("nodes.4.name", "worker1"), "nodes[4].name", "duplicate hostname"),
    ("node-ip-outside-subnet", _set("nodes.0.ip", "10.21.0.11"), "nodes[0].ip", "outside subnet"),
    ("vip-outside-subnet", _set("cluster.vip", "192.0.2.10"), "cluster.vip", "outside subnet"),
    (
        "gateway-outside-subnet",
        _set("network.gateway", "10.99.0.1"),
        "network.gateway",
        "outside subnet",
    ),
    (
        "vip-in-dhcp-range",
        _set("network.dhcp.range", {"start": "10.20.0.5", "end": "10.20.0.10"}),
        "cluster.vip",
        "dynamic range",
    ),
    (
        "node-ip-in-dhcp-range",
        _set("network.dhcp.range", {"start": "10.20.0.20", "end": "10.20.0.30"}),
        "nodes[3].ip",
        "dynamic range",
    ),
    (
        "node-ip-in-metallb-pool",
        _set("platform.metallb.pools", [{"name": "p", "addresses": ["10.20.0.0/27"]}]),
        "nodes[0].ip",
        "MetalLB pool",
    ),
    (
        "vip-in-metallb-pool",
        _set("platform.metallb.pools", [{"name": "p", "addresses": ["10.20.0.10-10.20.0.10"]}]),
        "cluster.vip",
        "MetalLB pool",
    ),
    (
        "pod-overlaps-service",
        _set("cluster.serviceSubnets", ["100.65.0.0/24"]),
        "cluster.serviceSubnets[0]",
        "overlaps",
    ),
    (
        "pod-overlaps-node-subnet",
        _set("cluster.podSubnets", ["10.20.0.0/16"]),
        "cluster.podSubnets[0]",
        "overlaps",
    ),
    (
        "join-overlaps-pod",
        _set("platform.kubeOvn.joinCidr", "100.65.0.0/16"),
        "platform.kubeOvn.joinCidr",
        "overlaps",
    ),
    (
        "talos-pod-equals-ovn-pod",
        _set("cluster.podSubnets", ["10.244.0.0/16"]),
        "platform.kubeOvn.podCidr",
        "kube-ovn pod CIDR",
    ),
    (
        "no-controlplane",
        lambda d: [n.__setitem__("role", "worker") for n in d["nodes"]],
        "nodes",
        "controlplane",
    ),
    (
        "k8s-too-new",
        _set("cluster.kubernetesVersion", "v1.40.0"),
        "cluster.kubernetesVersion",
        "not supported by Talos",
    ),
    (
        "k8s-too-old",
        _set("cluster.kubernetesVersion", "v1.25.3"),
        "cluster.kubernetesVersion",
        "not supported by Talos",
    ),
    (
        "talos-unsupported",
        _set("cluster.talosVersion", "v1.5.0"),
        "cluster.talosVersion",
        "not supported",
    ),
    (
        "unknown-extension",
        _set("image.extensions", ["siderolabs/zfs", "siderolabs/does-not-exist"]),
        "image.extensions[1]",
        "not available",
    ),
    ("wrong-type-port", _set("nodes.0.bmc.port", "eighty"), "nodes[0].bmc.port", "integer"),
    ("wrong-type-nodes", _set("nodes", {"cp1": {}}), "nodes", "list"),
    ("bad-mac", _set("nodes.1.macs", ["52:54:00:10:00"]), "nodes[1].macs[0]", "not a MAC"),
    ("multicast-mac", _set("nodes.1.macs", ["01:00:5e:00:00:01"]), "nodes[1].macs[0]", "multicast"),
    ("bad-ip", _set("nodes.1.ip", "10.20.0.300"), "nodes[1].ip", "not an IPv4"),
    ("bad-cidr", _set("network.subnet", "10.20.0.1/24"), "network.subnet", "CIDR"),
    ("unknown-key-top", _set("clutser", {}), "clutser", "unknown key"),
    (
        "unknown-key-nested",
        _set("nodes.0.instalDisk", "/dev/sda"),
        "nodes[0].instalDisk",
        "unknown key",
    ),
    ("missing-cluster-name", _delete("cluster.name"), "cluster.name", "required"),
    ("missing-nodes", _delete("nodes"), "nodes", "required"),
    ("bad-hostname", _set("nodes.0.name", "CP_1"), "nodes[0].name", "DNS label"),
    ("bad-role", _set("nodes.0.role", "master"), "nodes[0].role", "controlplane"),
    (
        "plaintext-bmc-password",
        _set("nodes.0.bmc.passwordRef", "hunter2"),
        "nodes[0].bmc.passwordRef",
        "secret reference",
    ),
    (
        "bmc-password-key",
        _set("nodes.0.bmc.password", "hunter2"),
        "nodes[0].bmc.password",
        "unknown key",
    ),
    (
        "disk-and-selector",
        _set("nodes.0.installDiskSelector", {"type": "ssd"}),
        "nodes[0]",
        "either installDisk",
    ),
    (
        "bond-member-not-node-mac",
        _set("nodes.2.bonds.0.members", ["52:54:00:99:99:99"]),
        "nodes[2].bonds[0].members[0]",
        "not one of",
    ),
    (
        "vlan-parent-unknown",
        _set("nodes.2.vlans.0.parent", "bond9"),
        "nodes[2].vlans[0].parent",
        "neither a bond",
    ),
    ("link-unknown", _set("nodes.2.link", "bond7"), "nodes[2].link", "not a bond or VLAN"),
    (
        "range-in-proxy-mode",
        _all(
            _set("network.dhcp.mode", "proxy"),
            _set("network.dhcp.range", {"start": "10.20.0.200", "end": "10.20.0.210"}),
        ),
        "network.dhcp.range",
        "proxy",
    ),
    ("bad-dhcp-mode", _set("network.dhcp.mode", "relay"), "network.dhcp.mode", "full"),
    (
        "metallb-no-pools",
        _set("platform.metallb.pools", []),
        "platform.metallb.pools",
        "no address pool",
    ),
    ("bgp-without-peers", _set("platform.metallb.mode", "bgp"), "platform.metallb", "myAsn"),
    (
        "kamaji-without-cert-manager",
        _set("platform.certManager.enabled", False),
        "platform.kamaji.enabled",
        "cert-manager",
    ),
    ("version-not-string", _set("cluster.talosVersion", 1.13), "cluster.talosVersion", "version"),
    (
        "registry-installer-without-image",
        _set("image.installer", {"source": "registry"}),
        "image.installer",
        "installer.image",
    ),
    (
        "extension-with-tag",
        _set("image.extensions", ["siderolabs/zfs:2.4.3"]),
        "image.extensions[0]",
        "versions are pinned",
    ),
    ("node-ip-is-gateway", _set("nodes.4.ip", "10.20.0.1"), "nodes[4].ip", "gateway"),
    ("vip-is-node-ip", _set("cluster.vip", "10.20.0.11"), "cluster.vip", "node IP"),
]


@pytest.mark.parametrize("case_id,mutate,path,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_inventory(
    case_id: str, mutate: Callable[[dict[str, Any]], None], path: str, fragment: str
) -> None:
    d = copy.deepcopy(example())
    mutate(d)
    with pytest.raises(InventoryError) as err:
        parse_inventory(dump(d), "bad.yaml")
    problems = err.value.problems
    assert any(p.path == path and fragment.lower() in p.message.lower() for p in problems), (
        f"expected {path}: …{fragment}…, got {[str(p) for p in problems]}"
    )
    # every problem carries a line number unless it is about a missing top-level key
    assert all(p.line is not None for p in problems if p.path and "required" not in p.message)
    assert err.value.exit_code == 2


RAW_BAD = [
    ("empty-file", "", "empty"),
    ("only-comments", "# nothing\n", "empty"),
    ("not-a-mapping", "- a\n- b\n", "mapping"),
    ("malformed-yaml", "cluster: {name: rack1\n", "malformed YAML"),
    ("tab-indent", "cluster:\n\tname: x\n", "malformed YAML"),
    ("duplicate-key", "cluster: {}\ncluster: {}\n", "duplicate key"),
]


@pytest.mark.parametrize("case_id,text,fragment", RAW_BAD, ids=[r[0] for r in RAW_BAD])
def test_bad_raw_inventory(case_id: str, text: str, fragment: str) -> None:
    with pytest.raises(InventoryError) as err:
        parse_inventory(text, "raw.yaml")
    assert fragment in str(err.value)
    assert err.value.exit_code == 2


def test_error_names_line_number() -> None:
    text = EXAMPLE.read_text().replace("ip: 10.20.0.22", "ip: 10.20.0.21")
    with pytest.raises(InventoryError) as err:
        parse_inventory(text, "x.yaml")
    p = err.value.problems[0]
    assert p.line is not None
    assert "10.20.0.21" in text.splitlines()[p.line - 1]
    assert "x.yaml:" in str(err.value)


def test_multiple_problems_reported_together() -> None:
    d = example()
    d["nodes"][0]["ip"] = "10.99.0.1"
    d["nodes"][1]["ip"] = "10.99.0.2"
    with pytest.raises(InventoryError) as err:
        parse_inventory(dump(d))
    assert len(err.value.problems) >= 2


def test_missing_file() -> None:
    with pytest.raises(InventoryError, match="file not found"):
        load_inventory("/nonexistent/inventory.yaml")


def test_binary_file(tmp_path: Path) -> None:
    p = tmp_path / "inv.yaml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InventoryError, match="UTF-8"):
        load_inventory(p)
