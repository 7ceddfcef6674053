"""A node's network, as the legacy ``machine.network`` (Talos v1.11) or as typed documents (v1.12+).

The inventory describes each node's links by hardware: NIC MACs, bonds over member MACs, VLANs on
a bond or a NIC, and ``node.link`` naming the bond or VLAN that carries the node IP (default: the
first MAC's NIC). Both renderings place the same things on the same links:

- the node IP (with the provisioning subnet's prefix) and the default route via the gateway go on
  the node-IP link only;
- the VIP (control planes, when ``cluster.vip`` is set) goes on that same link (talm#143);
- every VLAN is rendered on its parent, carrying its own extra addresses (talm#142);
- NICs are selected by permanent MAC: ``deviceSelector.permanentAddr`` in v1alpha1 and a
  ``LinkAliasConfig`` with the CEL selector ``mac(link.permanent_addr) == "<mac>"`` in v1.12+
  (the permanent address survives bond enslavement, which rewrites the hardware address).

NIC aliases are ``net<i>`` with ``i`` the MAC's index in ``node.macs``; only NICs that carry
something (node IP, bond membership, a VLAN) are aliased, because an alias selector that matches
no link is an error in Talos. VLAN link names: v1.12+ use ``Vlan.link_name`` (default
``<bond>.<id>`` or ``vlan<id>``); v1alpha1 cannot name VLANs, Talos calls them
``<parent>.<id>``.
"""

from __future__ import annotations

from typing import Any

from cloudctl.errors import RenderError
from cloudctl.inventory.models import Bond, Inventory, Node, Vlan

DEFAULT_ROUTE = "0.0.0.0/0"


def nic_alias(node: Node, mac: str) -> str:
    """Stable alias of one of the node's NICs: ``net<index in node.macs>``."""
    return f"net{node.macs.index(mac)}"


def nic_selector(mac: str) -> str:
    """CEL expression selecting the NIC with this permanent MAC (LinkAliasConfig)."""
    return f'mac(link.permanent_addr) == "{mac}"'


def node_cidr(inv: Inventory, node: Node) -> str:
    return f"{node.ip}/{inv.network.subnet.prefixlen}"


def carries_vip(inv: Inventory, node: Node) -> bool:
    return node.is_controlplane and inv.cluster.vip is not None


def _default_route_legacy(inv: Inventory) -> dict[str, Any]:
    return {"network": DEFAULT_ROUTE, "gateway": str(inv.network.gateway)}


def _default_route(inv: Inventory) -> dict[str, Any]:
    return {"destination": DEFAULT_ROUTE, "gateway": str(inv.network.gateway)}


def _vlans_on(node: Node, parent: str) -> list[Vlan]:
    return [v for v in node.vlans if v.parent == parent]


def _bond_of(node: Node, mac: str) -> Bond | None:
    return next((b for b in node.bonds if mac in b.members), None)


def _ip_on_nic(node: Node, mac: str) -> bool:
    return node.link is None and mac == node.primary_mac


def _parent_mtu(
    inv: Inventory, node: Node, own: int | None, carries_ip: bool, parent: str
) -> int | None:
    """MTU of a NIC or bond: its own, else the network's when it carries the node IP, raised
    to fit the VLANs on it (a VLAN cannot exceed its parent's MTU)."""
    mtu = own if own is not None else (inv.network.mtu if carries_ip else None)
    children = [_vlan_mtu(inv, node, v) for v in _vlans_on(node, parent)]
    wanted = [m for m in (mtu, *children) if m is not None]
    return max(wanted) if wanted else None


def _vlan_mtu(inv: Inventory, node: Node, vlan: Vlan) -> int | None:
    if vlan.mtu is not None:
        return vlan.mtu
    return inv.network.mtu if node.link == vlan.link_name else None


def _configured_nics(node: Node) -> list[str]:
    """MACs of NICs that carry something, in ``node.macs`` order."""
    out = []
    for mac in node.macs:
        if _ip_on_nic(node, mac) or _bond_of(node, mac) or _vlans_on(node, mac):
            out.append(mac)
    return out


# ------------------------------------------------------------------------------------------
# v1alpha1 (Talos v1.11): machine.network


def _ip_settings_legacy(inv: Inventory, node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {
        "addresses": [node_cidr(inv, node)],
        "routes": [_default_route_legacy(inv)],
    }
    return out


def _vip_legacy(inv: Inventory, node: Node) -> dict[str, Any]:
    return {"vip": {"ip": str(inv.cluster.vip)}} if carries_vip(inv, node) else {}


def _legacy_vlans(inv: Inventory, node: Node, parent: str) -> list[dict[str, Any]]:
    out = []
    for vlan in _vlans_on(node, parent):
        entry: dict[str, Any] = {"vlanId": vlan.id}
        addresses = list(vlan.addresses)
        if node.link == vlan.link_name:
            addresses = [node_cidr(inv, node), *addresses]
        if addresses:
            entry["addresses"] = addresses
        if node.link == vlan.link_name:
            entry["routes"] = [_default_route_legacy(inv)]
        mtu = _vlan_mtu(inv, node, vlan)
        if mtu is not None:
            entry["mtu"] = mtu
        if node.link == vlan.link_name:
            entry.update(_vip_legacy(inv, node))
        out.append(entry)
    return out


def _bond_settings(bond: Bond) -> dict[str, Any]:
    """Bond options shared by v1alpha1 ``bond`` and ``BondConfig`` (same names for these)."""
    out: dict[str, Any] = {}
    for key, value in (
        ("miimon", bond.miimon),
        ("updelay", bond.updelay),
        ("downdelay", bond.downdelay),
        ("xmitHashPolicy", bond.xmit_hash_policy),
        ("lacpRate", bond.lacp_rate),
    ):
        if value is not None:
            out[key] = value
    return out


def legacy_network(inv: Inventory, node: Node) -> dict[str, Any]:
    """``machine.network`` of the v1alpha1 document (Talos v1.11)."""
    interfaces: list[dict[str, Any]] = []
    for bond in node.bonds:
        device: dict[str, Any] = {
            "interface": bond.name,
            "bond": {
                "deviceSelectors": [{"permanentAddr": m} for m in bond.members],
                "mode": bond.mode,
                **_bond_settings(bond),
            },
        }
        carries_ip = node.link == bond.name
        if carries_ip:
            device.update(_ip_settings_legacy(inv, node))
        mtu = _parent_mtu(inv, node, bond.mtu, carries_ip, bond.name)
        if mtu is not None:
            device["mtu"] = mtu
        vlans = _legacy_vlans(inv, node, bond.name)
        if vlans:
            device["vlans"] = vlans
        if carries_ip:
            device.update(_vip_legacy(inv, node))
        interfaces.append(device)
    for mac in _configured_nics(node):
        if _bond_of(node, mac):
            continue
        device = {"deviceSelector": {"permanentAddr": mac}}
        carries_ip = _ip_on_nic(node, mac)
        if carries_ip:
            device.update(_ip_settings_legacy(inv, node))
        mtu = _parent_mtu(inv, node, None, carries_ip, mac)
        if mtu is not None:
            device["mtu"] = mtu
        vlans = _legacy_vlans(inv, node, mac)
        if vlans:
            device["vlans"] = vlans
        if carries_ip:
            device.update(_vip_legacy(inv, node))
        interfaces.append(device)
    network: dict[str, Any] = {"hostname": node.name, "interfaces": interfaces}
    if inv.network.dns:
        network["nameservers"] = [str(ip) for ip in inv.network.dns]
    return network


# ------------------------------------------------------------------------------------------
# Talos v1.12+: typed network documents


def _doc(kind: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1alpha1", "kind": kind, **fields}


def _ip_fields(inv: Inventory, node: Node, extra: list[str] | None = None) -> dict[str, Any]:
    addresses = [node_cidr(inv, node), *(extra or [])]
    return {
        "addresses": [{"address": a} for a in addresses],
        "routes": [_default_route(inv)],
    }


def _check_alias_names(node: Node, nics: list[str]) -> None:
    taken = {b.name for b in node.bonds} | {v.link_name for v in node.vlans}
    clash = sorted(taken & {nic_alias(node, m) for m in nics})
    if clash:
        raise RenderError(
            f"node {node.name}: link name {clash[0]!r} collides with the alias cloudctl gives "
            f"NIC {clash[0].removeprefix('net')} (net<i> for the i-th MAC); rename the bond/VLAN"
        )


def ip_link_name(node: Node) -> str:
    """Name of the link carrying the node IP in the v1.12+ documents."""
    return node.link if node.link is not None else nic_alias(node, node.primary_mac)


def _with_mtu_and_ip(
    inv: Inventory, node: Node, doc: dict[str, Any], mtu: int | None, carries_ip: bool
) -> dict[str, Any]:
    """A NIC or bond link document completed with its MTU and, on the link that carries the
    node IP, the address, routes and ``up`` fields."""
    if mtu is not None:
        doc["mtu"] = mtu
    if carries_ip:
        doc.update(_ip_fields(inv, node))
    return doc


def network_documents(inv: Inventory, node: Node) -> list[dict[str, Any]]:
    """HostnameConfig, ResolverConfig, TimeSyncConfig and the link documents (v1.12+)."""
    docs: list[dict[str, Any]] = [_doc("HostnameConfig", auto="off", hostname=node.name)]
    if inv.network.dns:
        docs.append(
            _doc("ResolverConfig", nameservers=[{"address": str(ip)} for ip in inv.network.dns])
        )
    if inv.network.ntp:
        docs.append(_doc("TimeSyncConfig", ntp={"servers": list(inv.network.ntp)}))
    nics = _configured_nics(node)
    _check_alias_names(node, nics)
    for mac in nics:
        selector = {"match": nic_selector(mac)}
        docs.append(_doc("LinkAliasConfig", name=nic_alias(node, mac), selector=selector))
    for mac in nics:
        if _bond_of(node, mac):
            continue
        carries_ip = _ip_on_nic(node, mac)
        link = _doc("LinkConfig", name=nic_alias(node, mac))
        mtu = _parent_mtu(inv, node, None, carries_ip, mac)
        docs.append(_with_mtu_and_ip(inv, node, link, mtu, carries_ip))
    for bond in node.bonds:
        carries_ip = node.link == bond.name
        doc = _doc(
            "BondConfig",
            name=bond.name,
            links=[nic_alias(node, m) for m in bond.members],
            bondMode=bond.mode,
            **_bond_settings(bond),
        )
        mtu = _parent_mtu(inv, node, bond.mtu, carries_ip, bond.name)
        docs.append(_with_mtu_and_ip(inv, node, doc, mtu, carries_ip))
    for vlan in node.vlans:
        parent = vlan.parent if ":" not in vlan.parent else nic_alias(node, vlan.parent)
        doc = _doc("VLANConfig", name=vlan.link_name, vlanID=vlan.id, parent=parent)
        mtu = _vlan_mtu(inv, node, vlan)
        if mtu is not None:
            doc["mtu"] = mtu
        if node.link == vlan.link_name:
            doc.update(_ip_fields(inv, node, list(vlan.addresses)))
        elif vlan.addresses:
            doc["addresses"] = [{"address": a} for a in vlan.addresses]
        docs.append(doc)
    if carries_vip(inv, node):
        docs.append(_doc("Layer2VIPConfig", name=str(inv.cluster.vip), link=ip_link_name(node)))
    return docs
