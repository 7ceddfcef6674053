"""Semantic checks of a structurally valid inventory.

Pure: ``check(inv) -> (errors, warnings)``, each a list of Problems whose path uses the YAML
(camelCase) field names. Line numbers are attached by the caller from the loader's line map.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from ..capi_catalog import capi_catalog, parse_minor
from ..catalog import TalosCatalog, minor_of, parse_version, talos_catalog
from ..errors import Problem
from .models import Inventory

Net = ipaddress.IPv4Network
Addr = ipaddress.IPv4Address


def _pool_ranges(entry: str) -> tuple[Addr, Addr]:
    if "-" in entry:
        a, b = entry.split("-", 1)
        return Addr(a), Addr(b)
    net = Net(entry)
    return net.network_address, net.broadcast_address


def _overlap(a: tuple[Addr, Addr], b: tuple[Addr, Addr]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _net_range(n: Net) -> tuple[Addr, Addr]:
    return n.network_address, n.broadcast_address


def check(
    inv: Inventory, catalog: TalosCatalog | None = None
) -> tuple[list[Problem], list[Problem]]:
    catalog = catalog or talos_catalog()
    errors: list[Problem] = []
    warnings: list[Problem] = []
    errors.extend(_duplicates(inv))
    errors.extend(_addresses(inv))
    errors.extend(_cidrs(inv))
    e, w = _roles(inv)
    errors.extend(e)
    warnings.extend(w)
    errors.extend(_versions(inv, catalog))
    errors.extend(_node_links(inv))
    errors.extend(_platform(inv))
    errors.extend(_tenants(inv))
    return errors, warnings


def _duplicates(inv: Inventory) -> Iterator[Problem]:
    seen_mac: dict[str, str] = {}
    seen_ip: dict[Addr, str] = {}
    seen_name: dict[str, int] = {}
    for i, node in enumerate(inv.nodes):
        if node.name in seen_name:
            yield Problem(
                f"nodes[{i}].name",
                f"duplicate hostname {node.name!r} (also nodes[{seen_name[node.name]}])",
            )
        else:
            seen_name[node.name] = i
        for j, mac in enumerate(node.macs):
            if mac in seen_mac:
                yield Problem(
                    f"nodes[{i}].macs[{j}]", f"duplicate MAC {mac} (also on {seen_mac[mac]})"
                )
            else:
                seen_mac[mac] = node.name
        if node.ip in seen_ip:
            yield Problem(f"nodes[{i}].ip", f"duplicate IP {node.ip} (also {seen_ip[node.ip]})")
        else:
            seen_ip[node.ip] = node.name


def _addresses(inv: Inventory) -> Iterator[Problem]:
    net = inv.network
    subnet = net.subnet
    reserved = {subnet.network_address, subnet.broadcast_address}
    if net.gateway not in subnet:
        yield Problem("network.gateway", f"gateway {net.gateway} is outside subnet {subnet}")
    if net.boot_server is not None and net.boot_server not in subnet:
        yield Problem(
            "network.bootServer", f"boot server {net.boot_server} is outside subnet {subnet}"
        )
    rng = net.dhcp.range
    if rng is not None:
        for field_, ip in (("start", rng.start), ("end", rng.end)):
            if ip not in subnet:
                yield Problem(f"network.dhcp.range.{field_}", f"{ip} is outside subnet {subnet}")
        if net.dhcp.mode == "proxy":
            yield Problem(
                "network.dhcp.range",
                "a dynamic range is only used in full mode; proxy mode never assigns addresses",
            )
        if net.gateway in rng:
            yield Problem("network.dhcp.range", f"the range contains the gateway {net.gateway}")
        if net.boot_server is not None and net.boot_server in rng:
            yield Problem(
                "network.dhcp.range", f"the range contains the boot server {net.boot_server}"
            )
    pools = [
        (f"platform.metallb.pools[{pi}].addresses[{ai}]", _pool_ranges(a), a)
        for pi, pool in enumerate(inv.platform.metallb.pools)
        for ai, a in enumerate(pool.addresses)
    ]
    vip = inv.cluster.vip
    special: list[tuple[str, Addr, str]] = []
    if vip is not None:
        special.append(("cluster.vip", vip, "VIP"))
    for i, node in enumerate(inv.nodes):
        special.append((f"nodes[{i}].ip", node.ip, f"IP of node {node.name}"))
    for path, ip, what in special:
        if ip not in subnet:
            yield Problem(path, f"{what} {ip} is outside subnet {subnet}")
            continue
        if ip in reserved:
            yield Problem(path, f"{what} {ip} is the network or broadcast address of {subnet}")
        if ip == net.gateway:
            yield Problem(path, f"{what} {ip} is the gateway address")
        if net.boot_server is not None and ip == net.boot_server:
            yield Problem(path, f"{what} {ip} is the boot server's address")
        if rng is not None and ip in rng:
            yield Problem(path, f"{what} {ip} lies in the DHCP dynamic range {rng.start}-{rng.end}")
        if metallb_enabled(inv):
            for ppath, (lo, hi), text in pools:
                if lo <= ip <= hi:
                    yield Problem(path, f"{what} {ip} lies in MetalLB pool {text} ({ppath})")
    if vip is not None and any(n.ip == vip for n in inv.nodes):
        yield Problem("cluster.vip", f"VIP {vip} is also a node IP")
    # pools must not overlap each other, nor the DHCP range
    for a in range(len(pools)):
        for b in range(a + 1, len(pools)):
            if _overlap(pools[a][1], pools[b][1]):
                yield Problem(pools[b][0], f"overlaps MetalLB pool entry {pools[a][2]}")
        if rng is not None and _overlap(pools[a][1], (rng.start, rng.end)):
            yield Problem(pools[a][0], "overlaps the DHCP dynamic range")


def _cluster_ranges(inv: Inventory) -> list[tuple[str, Net, str]]:
    """(field path, network, what it is) of every range the cluster's own addressing uses."""
    named: list[tuple[str, Net, str]] = [("network.subnet", inv.network.subnet, "node subnet")]
    for i, n in enumerate(inv.cluster.pod_subnets):
        named.append((f"cluster.podSubnets[{i}]", n, "Talos pod subnet"))
    for i, n in enumerate(inv.cluster.service_subnets):
        named.append((f"cluster.serviceSubnets[{i}]", n, "service subnet"))
    ovn = inv.platform.kube_ovn
    if ovn.enabled:
        named.append(("platform.kubeOvn.podCidr", ovn.pod_cidr, "kube-ovn pod CIDR"))
        named.append(("platform.kubeOvn.joinCidr", ovn.join_cidr, "kube-ovn join CIDR"))
    return named


def metallb_enabled(inv: Inventory) -> bool:
    return inv.platform.metallb.enabled


def _cidrs(inv: Inventory) -> Iterator[Problem]:
    named = _cluster_ranges(inv)
    for a in range(len(named)):
        for b in range(a + 1, len(named)):
            pa, na, wa = named[a]
            pb, nb, wb = named[b]
            if na.overlaps(nb):
                if na == nb and wa == "Talos pod subnet" and wb == "kube-ovn pod CIDR":
                    msg = (
                        f"Talos pod subnet {na} equals the kube-ovn pod CIDR: pods would get "
                        "'IP already in use' (cozystack#3736); pick disjoint ranges"
                    )
                else:
                    msg = f"{wb} {nb} overlaps {wa} {na} ({pa})"
                yield Problem(pb, msg)
    # pool addresses must not sit in cluster-internal ranges
    for pi, pool in enumerate(inv.platform.metallb.pools):
        for ai, entry in enumerate(pool.addresses):
            lo, hi = _pool_ranges(entry)
            for path, net, what in named[1:]:
                if _overlap((lo, hi), _net_range(net)):
                    yield Problem(
                        f"platform.metallb.pools[{pi}].addresses[{ai}]",
                        f"{entry} overlaps the {what} {net} ({path})",
                    )


def _roles(inv: Inventory) -> tuple[list[Problem], list[Problem]]:
    errors: list[Problem] = []
    warnings: list[Problem] = []
    cps = len(inv.controlplanes)
    if cps == 0:
        errors.append(Problem("nodes", "at least one node must have role 'controlplane'"))
    elif cps not in (1, 3, 5):
        warnings.append(
            Problem(
                "nodes",
                f"{cps} control-plane nodes: etcd wants an odd count (1, 3 or 5) for quorum",
            )
        )
    if cps > 1 and inv.cluster.vip is None and inv.cluster.endpoint is None:
        errors.append(
            Problem(
                "cluster.vip",
                f"{cps} control planes need a shared endpoint: set cluster.vip "
                "(or cluster.endpoint pointing at a load balancer)",
            )
        )
    if cps == 1 and inv.cluster.vip is None and inv.cluster.endpoint is None:
        errors.append(
            Problem("cluster.endpoint", "set cluster.vip or cluster.endpoint (the API address)")
        )
    if inv.cluster.vip is not None and cps == 0:
        pass
    return errors, warnings


def _versions(inv: Inventory, catalog: TalosCatalog) -> Iterator[Problem]:
    tv = inv.cluster.talos_version
    minor = catalog.minor(tv)
    if minor is None:
        supported = ", ".join(sorted(catalog.minors, key=parse_version))
        yield Problem(
            "cluster.talosVersion", f"Talos {tv} is not supported (supported lines: {supported})"
        )
        return
    releases = catalog.releases_of(minor.minor)
    if releases and catalog.release(tv) is None:
        yield Problem(
            "cluster.talosVersion",
            f"Talos {tv} is not in cloudctl's release catalog; known {minor.minor} releases: "
            + ", ".join(releases),
        )
    kv = inv.cluster.kubernetes_version
    if not minor.supports_kubernetes(kv):
        yield Problem(
            "cluster.kubernetesVersion",
            f"Kubernetes {kv} is not supported by Talos {tv} "
            f"(Talos {minor.minor} supports Kubernetes {minor.kubernetes_min}"
            f" to {minor.kubernetes_max})",
        )
    if minor.extensions:
        for i, ext in enumerate(inv.image.extensions):
            name = minor.aliases.get(ext, ext)
            if name not in minor.extensions:
                yield Problem(
                    f"image.extensions[{i}]",
                    f"extension {ext!r} is not available for Talos {minor_of(tv)}",
                )
    seen: set[str] = set()
    for i, ext in enumerate(inv.image.extensions):
        canonical = minor.aliases.get(ext, ext)
        if canonical in seen:
            yield Problem(f"image.extensions[{i}]", f"extension {ext!r} is listed twice")
        seen.add(canonical)
    if inv.image.secureboot and inv.image.arch == "arm64" and parse_version(tv) < (1, 10, 0):
        yield Problem("image.secureboot", "arm64 SecureBoot needs Talos >= v1.10")


def _node_links(inv: Inventory) -> Iterator[Problem]:
    for i, node in enumerate(inv.nodes):
        base = f"nodes[{i}]"
        bond_names = {b.name for b in node.bonds}
        member_of: dict[str, str] = {}
        for bi, bond in enumerate(node.bonds):
            for mi, mac in enumerate(bond.members):
                if mac not in node.macs:
                    yield Problem(
                        f"{base}.bonds[{bi}].members[{mi}]",
                        f"{mac} is not one of node {node.name}'s MACs",
                    )
                if mac in member_of:
                    yield Problem(
                        f"{base}.bonds[{bi}].members[{mi}]",
                        f"{mac} is already a member of bond {member_of[mac]}",
                    )
                member_of[mac] = bond.name
        if len(bond_names) != len(node.bonds):
            yield Problem(f"{base}.bonds", "bond names must be unique")
        vlan_names: set[str] = set()
        for vi, vlan in enumerate(node.vlans):
            if ":" in vlan.parent:
                if vlan.parent not in node.macs:
                    yield Problem(
                        f"{base}.vlans[{vi}].parent",
                        f"{vlan.parent} is not one of node {node.name}'s MACs",
                    )
                elif vlan.parent in member_of:
                    yield Problem(
                        f"{base}.vlans[{vi}].parent",
                        f"{vlan.parent} is enslaved to bond {member_of[vlan.parent]}; "
                        "put the VLAN on the bond",
                    )
            elif vlan.parent not in bond_names:
                yield Problem(
                    f"{base}.vlans[{vi}].parent",
                    f"{vlan.parent!r} is neither a bond of node {node.name} nor one of its MACs",
                )
            if vlan.link_name in vlan_names or vlan.link_name in bond_names:
                yield Problem(f"{base}.vlans[{vi}]", f"link name {vlan.link_name!r} is used twice")
            vlan_names.add(vlan.link_name)
            for ai, addr in enumerate(vlan.addresses):
                try:
                    ipaddress.ip_interface(addr)
                    if "/" not in addr:
                        raise ValueError
                except ValueError:
                    yield Problem(
                        f"{base}.vlans[{vi}].addresses[{ai}]",
                        f"{addr!r} is not an address in CIDR form (10.0.0.5/24)",
                    )
        if node.link is not None and node.link not in bond_names | vlan_names:
            yield Problem(
                f"{base}.link",
                f"{node.link!r} is not a bond or VLAN of node {node.name}"
                + (
                    f" (have: {', '.join(sorted(bond_names | vlan_names))})"
                    if bond_names | vlan_names
                    else ""
                ),
            )
        if node.link is None and node.primary_mac in member_of:
            yield Problem(
                f"{base}.link",
                f"the first MAC {node.primary_mac} is enslaved to bond "
                f"{member_of[node.primary_mac]}; set link: {member_of[node.primary_mac]}",
            )
        if node.install_disk is None and node.install_disk_selector is None:
            pass  # Talos default /dev/sda is used; preflight checks it exists


def _platform(inv: Inventory) -> Iterable[Problem]:
    p = inv.platform
    if p.kamaji.enabled and not p.cert_manager.enabled:
        yield Problem("platform.kamaji.enabled", "kamaji needs cert-manager (platform.certManager)")
    if p.kube_ovn.enabled and not p.cilium.enabled:
        yield Problem(
            "platform.kubeOvn.enabled",
            "kube-ovn is chained behind Cilium here; enable platform.cilium",
        )
    if p.kubevirt.cdi.enabled and not p.kubevirt.enabled:
        yield Problem("platform.kubevirt.cdi.enabled", "CDI needs KubeVirt enabled")
    if p.metallb.enabled and not p.metallb.pools:
        yield Problem("platform.metallb.pools", "MetalLB is enabled but has no address pool")
    names = [pool.name for pool in p.metallb.pools]
    for i, name in enumerate(names):
        if name in names[:i]:
            yield Problem(f"platform.metallb.pools[{i}].name", f"duplicate pool name {name!r}")


def _tenants(inv: Inventory) -> Iterator[Problem]:
    """Tenant clusters: names, the platform they need, supported versions, disjoint CIDRs."""
    if not inv.tenants:
        return
    cat = capi_catalog()
    p = inv.platform
    needs = [
        ("platform.clusterApi.enabled", p.cluster_api.enabled, "the Cluster API providers"),
        ("platform.kamaji.enabled", p.kamaji.enabled, "Kamaji (tenant control planes)"),
        ("platform.kubevirt.enabled", p.kubevirt.enabled, "KubeVirt (tenant worker VMs)"),
        ("platform.kubevirt.cdi.enabled", p.kubevirt.enabled and p.kubevirt.cdi.enabled,
         "CDI (the Cluster API providers are installed after it)"),
        ("platform.kubeOvn.enabled", p.kube_ovn.enabled, "Kube-OVN (tenant subnets)"),
    ]
    for path, enabled, what in needs:
        if not enabled:
            yield Problem(path, f"tenants are defined, so {what} must be enabled")
    mgmt = parse_minor(inv.cluster.kubernetes_version)
    if mgmt < parse_minor(cat.management_min):
        yield Problem(
            "cluster.kubernetesVersion",
            f"Cluster API {cat.provider('core').version} (tenants) needs a management cluster "
            f"of Kubernetes {cat.management_min} or newer",
        )
    lo, hi = parse_minor(cat.tenant_min), parse_minor(cat.tenant_max_minor)
    ranges = _cluster_ranges(inv)
    seen: dict[str, int] = {}
    for t_i, tenant in enumerate(inv.tenants):
        base = f"tenants[{t_i}]"
        if tenant.name in seen:
            yield Problem(f"{base}.name", f"duplicate tenant name {tenant.name!r} "
                          f"(also tenants[{seen[tenant.name]}])")
        seen.setdefault(tenant.name, t_i)
        if len(tenant.namespace) > 63:
            yield Problem(f"{base}.name", f"{tenant.name!r} is too long: its namespace "
                          f"{tenant.namespace!r} must fit in 63 characters")
        minor = parse_minor(tenant.kubernetes_version)
        if not lo <= minor <= hi:
            yield Problem(
                f"{base}.kubernetesVersion",
                f"{tenant.kubernetes_version} is not supported for tenants: the pinned providers "
                f"(Cluster API {cat.provider('core').version}, Kamaji control plane "
                f"{cat.provider('controlPlane').version}) take {cat.tenant_min} to "
                f"{cat.tenant_max_minor}.x",
            )
        if not tenant.addons.kube_proxy:
            yield Problem(f"{base}.addons.kubeProxy",
                          "the tenant's Cilium is installed alongside kube-proxy (cloudctl "
                          "cannot know the tenant API address kube-proxy replacement needs "
                          "before MetalLB assigns it); keep kubeProxy: true")
        pools: dict[str, int] = {}
        for w_i, pool in enumerate(tenant.workers):
            if pool.name in pools:
                yield Problem(f"{base}.workers[{w_i}].name",
                              f"duplicate worker pool name {pool.name!r} in tenant {tenant.name}")
            pools.setdefault(pool.name, w_i)
            if len(f"{tenant.name}-{pool.name}") > 63:
                yield Problem(f"{base}.workers[{w_i}].name",
                              f"{tenant.name}-{pool.name} (the MachineDeployment name) is longer "
                              "than 63 characters")
        own = [
            (f"{base}.network.subnet", tenant.network.subnet, f"tenant {tenant.name} subnet"),
            (f"{base}.network.podCidr", tenant.network.pod_cidr,
             f"tenant {tenant.name} pod CIDR"),
            (f"{base}.network.serviceCidr", tenant.network.service_cidr,
             f"tenant {tenant.name} service CIDR"),
        ]
        for path, net, what in own:
            if net.num_addresses < 16:
                yield Problem(path, f"{net} is too small for the {what} (at least a /28)")
        for a in range(len(own)):
            for b in range(a + 1, len(own)):
                if own[a][1].overlaps(own[b][1]):
                    yield Problem(own[b][0], f"{own[b][2]} {own[b][1]} overlaps "
                                  f"{own[a][2]} {own[a][1]} ({own[a][0]})")
        for path, net, what in own:
            for other_path, other, other_what in ranges:
                if net.overlaps(other):
                    yield Problem(path, f"{what} {net} overlaps the {other_what} {other} "
                                  f"({other_path})")
        ranges = ranges + own
