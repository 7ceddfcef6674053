"""What the DHCP server answers, derived from the inventory (pure data, no I/O)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from ...errors import InputError, Problem
from ...inventory.models import Inventory

IPv4 = ipaddress.IPv4Address

# option 93 (client system architecture, RFC 4578 / IANA) -> iPXE binary in the TFTP root
ARCH_BIOS = 0
ARCH_EFI_X86 = (6, 7, 9)
ARCH_EFI_ARM64 = 11
ARCH_HTTP_X64 = 16
ARCH_HTTP_ARM64 = 19


@dataclass(frozen=True)
class Reservation:
    """A MAC the server answers, with its fixed address and host name."""

    mac: str
    ip: IPv4
    hostname: str


@dataclass(frozen=True)
class DhcpConfig:
    """Everything the DHCP policy needs; built by ``dhcp_config_from_inventory``."""

    mode: Literal["full", "proxy"]
    interface: str
    server_ip: IPv4
    subnet: ipaddress.IPv4Network
    router: IPv4 | None = None
    dns: tuple[IPv4, ...] = ()
    ntp: tuple[IPv4, ...] = ()
    lease_time: int = 3600
    reservations: Mapping[str, Reservation] = field(default_factory=dict)
    node_macs: frozenset[str] = frozenset()
    """Every inventory MAC (all NICs of all nodes); proxy mode answers these. Empty: the
    reservations' MACs."""
    dynamic_range: tuple[IPv4, IPv4] | None = None
    http_port: int = 8080
    bios_binary: str = "undionly.kpxe"
    efi_binary: str = "snponly.efi"
    arm64_binary: str = "ipxe-arm64.efi"
    offer_hold: int = 60
    """Seconds an offered (not yet requested) dynamic address stays reserved for the client."""

    @property
    def http_base(self) -> str:
        return f"http://{self.server_ip}:{self.http_port}"

    def script_url(self, mac: str) -> str:
        """URL of the per-MAC iPXE script (boot contract: ``/ipxe/<mac-with-dashes>.ipxe``)."""
        return f"{self.http_base}/ipxe/{mac.replace(':', '-')}.ipxe"

    def is_node_mac(self, mac: str) -> bool:
        return mac in self.node_macs or mac in self.reservations

    def in_range(self, ip: IPv4) -> bool:
        lo, hi = self.range_ints
        return lo <= int(ip) <= hi

    @cached_property
    def range_ints(self) -> tuple[int, int]:
        """The dynamic range as ints (an empty range when there is none): ``in_range`` runs per
        address tried on the DHCP hot path, and ints compare ~10x faster than IPv4Address."""
        if self.dynamic_range is None:
            return (1, 0)
        lo, hi = self.dynamic_range
        return int(lo), int(hi)


def dhcp_config_from_inventory(
    inv: Inventory,
    http_port: int = 8080,
    efi_binary: str = "snponly.efi",
    *,
    server_ip: IPv4 | None = None,
    interface: str | None = None,
) -> DhcpConfig:
    """DHCP configuration for the inventory's provisioning network.

    Each node's first MAC (the NIC that PXE-boots, see ``Node.macs``) is reserved its node IP;
    in full mode further MACs are answered only from a dynamic range, when the inventory declares
    one, so two NICs of one machine never hold the same address. Proxy mode assigns nothing and
    answers every MAC of every node. ``server_ip``/``interface`` override
    ``network.bootServer``/``network.interface`` (labs and tests).
    """
    net = inv.network
    server = server_ip or net.boot_server
    if server is None:
        raise InputError(
            Problem(
                "network.bootServer",
                "required to serve network boot (the provisioning host's address on "
                f"{net.interface})",
            )
        )
    if efi_binary not in ("snponly.efi", "ipxe.efi"):
        raise InputError(Problem("efi_binary", f"{efi_binary!r}: expected snponly.efi or ipxe.efi"))
    reservations = {
        n.primary_mac: Reservation(mac=n.primary_mac, ip=n.ip, hostname=n.name) for n in inv.nodes
    }
    rng = net.dhcp.range
    ntp = []
    for host in net.ntp:
        try:
            ntp.append(ipaddress.IPv4Address(host))
        except ValueError:
            continue  # option 42 carries addresses only; names are left to the OS config
    return DhcpConfig(
        mode=net.dhcp.mode,
        interface=interface or net.interface,
        server_ip=server,
        subnet=net.subnet,
        router=net.gateway,
        dns=tuple(net.dns),
        ntp=tuple(ntp),
        lease_time=net.dhcp.lease_time,
        reservations=reservations,
        node_macs=frozenset(mac for n in inv.nodes for mac in n.macs),
        dynamic_range=(rng.start, rng.end) if rng and net.dhcp.mode == "full" else None,
        http_port=http_port,
        efi_binary=efi_binary,
    )
