"""Hardware and applied-config facts of an emulated Talos node (pure; no I/O).

* :func:`default_disks` gives a node a plausible disk set on which the inventory's installDisk
  or installDiskSelector resolves (tests can pass other disks to make it fail);
* :func:`default_links` names one Ethernet link per inventory MAC;
* :class:`AppliedConfig` extracts from a machine config what the emulator acts on: machine type,
  OS CA, install section, addresses, the MACs the network section selects, cluster identity.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ..inventory.models import Node
from ..talos.client import DiskInfo

GB = 1000**3

STANDARD_DISKS: tuple[DiskInfo, ...] = (
    DiskInfo("/dev/sda", 480 * GB, model="SAMSUNG MZ7LH480HAHQ-00005", serial="S45PNA0M500001",
             type="SSD", wwid="naa.5002538e00000001", bus_path="/pci0000:00/0000:00:17.0/ata1",
             modalias="scsi:t-0x00", name="sda"),
    DiskInfo("/dev/sdb", 4000 * GB, model="ST4000NM0035-1V4107", serial="ZC1000A1",
             type="HDD", wwid="naa.5000c500a0000001", bus_path="/pci0000:00/0000:00:17.0/ata2",
             modalias="scsi:t-0x00", name="sdb"),
    DiskInfo("/dev/nvme0n1", 960 * GB, model="SAMSUNG MZQL2960HCJR-00A07", serial="S64FNE0R700001",
             type="NVME", wwid="eui.36344630527000010025384500000001",
             bus_path="/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme", modalias="nvme:v144D",
             name="nvme0n1"),
)


def default_disks(node: Node) -> list[DiskInfo]:
    """The standard disk set (SATA SSD, SATA HDD, NVMe), plus the installDisk if it is another."""
    disks = list(STANDARD_DISKS)
    if node.install_disk and all(d.device_name != node.install_disk for d in disks):
        name = node.install_disk.removeprefix("/dev/")
        disks.append(DiskInfo(node.install_disk, 240 * GB, model="QEMU HARDDISK",
                              serial=f"QM{name}", type="HDD", name=name))
    return disks


@dataclass(frozen=True)
class Link:
    name: str
    mac: str


def default_links(node: Node) -> list[Link]:
    return [Link(f"eth{i}", mac) for i, mac in enumerate(node.macs)]


# --------------------------------------------------------------------------- applied config

_MAC_RE = re.compile(r"(?<![0-9A-Fa-f:])((?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})(?![0-9A-Fa-f:])")


def _b64_pem(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def _addresses(obj: Any, out: list[str]) -> None:
    """Every IPv4 address under a key named ``addresses`` (strings or {address: ...})."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "addresses" and isinstance(v, list):
                for a in v:
                    text = a.get("address") if isinstance(a, dict) else a
                    if isinstance(text, str):
                        with contextlib.suppress(ValueError):
                            out.append(str(ipaddress.ip_interface(text).ip))
            else:
                _addresses(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _addresses(v, out)


def _without_secrets(obj: Any) -> Any:
    """The document minus certificate/key material (whose base64 could look like anything)."""
    if isinstance(obj, dict):
        return {k: _without_secrets(v) for k, v in obj.items() if k not in ("crt", "key")}
    if isinstance(obj, list):
        return [_without_secrets(v) for v in obj]
    return obj


@dataclass(frozen=True)
class AppliedConfig:
    text: str
    machine_type: str
    os_ca_crt: bytes | None
    os_ca_key: bytes | None
    k8s_ca_crt: bytes | None
    k8s_ca_key: bytes | None
    install: dict[str, Any]
    cluster_id: str
    cluster_name: str
    endpoint: str
    hostname: str
    addresses: tuple[str, ...]
    selected_macs: tuple[str, ...]
    cert_sans: tuple[str, ...] = field(default=())
    vips: tuple[str, ...] = field(default=())
    """Shared addresses (Layer2VIPConfig names, or legacy ``interfaces[].vip.ip``)."""

    @classmethod
    def parse(cls, text: str, docs: list[dict[str, Any]]) -> AppliedConfig:
        v1 = next((d for d in docs if d.get("version") == "v1alpha1"), {})
        machine = v1.get("machine") or {}
        cluster = v1.get("cluster") or {}
        mca = machine.get("ca") or {}
        cca = cluster.get("ca") or {}
        hostname = str((machine.get("network") or {}).get("hostname") or "")
        for d in docs:
            if d.get("kind") == "HostnameConfig" and d.get("hostname"):
                hostname = str(d["hostname"])
        addrs: list[str] = []
        net_docs = [machine.get("network") or {}] + [d for d in docs if "kind" in d]
        _addresses(net_docs, addrs)
        macs: list[str] = []
        for d in net_docs:
            for m in _MAC_RE.findall(repr(_without_secrets(d))):
                if m.lower() not in macs:
                    macs.append(m.lower())
        endpoint = str((cluster.get("controlPlane") or {}).get("endpoint") or "")
        vips = [str(d["name"]) for d in docs
                if d.get("kind") == "Layer2VIPConfig" and d.get("name")]
        for iface in (machine.get("network") or {}).get("interfaces") or []:
            for holder in [iface, *(iface.get("vlans") or [])]:
                ip = (holder.get("vip") or {}).get("ip") if isinstance(holder, dict) else None
                if ip:
                    vips.append(str(ip))
        return cls(
            text=text,
            machine_type=str(machine.get("type") or ""),
            os_ca_crt=_b64_pem(mca.get("crt")),
            os_ca_key=_b64_pem(mca.get("key")),
            k8s_ca_crt=_b64_pem(cca.get("crt")),
            k8s_ca_key=_b64_pem(cca.get("key")),
            install=dict(machine.get("install") or {}),
            cluster_id=str(cluster.get("id") or ""),
            cluster_name=str(cluster.get("clusterName") or "cluster"),
            endpoint=endpoint,
            hostname=hostname,
            addresses=tuple(dict.fromkeys(addrs)),
            selected_macs=tuple(macs),
            cert_sans=tuple(str(s) for s in machine.get("certSANs") or ()),
            vips=tuple(dict.fromkeys(vips)),
        )

    @property
    def is_controlplane(self) -> bool:
        return self.machine_type in ("controlplane", "init")


def runtime_problems(cfg: AppliedConfig) -> list[str]:
    """Checks Talos makes beyond the schema (v1alpha1_validation.go), with its messages."""
    problems = []
    if cfg.machine_type not in ("controlplane", "worker", "init"):
        problems.append(f"unknown machine type {cfg.machine_type!r}")
    if not cfg.install.get("disk") and not cfg.install.get("diskSelector"):
        problems.append("either install disk or diskSelector should be defined")
    if not cfg.endpoint:
        problems.append("cluster controlplane endpoint is required")
    if cfg.machine_type == "worker" and cfg.os_ca_key:
        problems.append("issuing Talos API CA key is not allowed on non-controlplane nodes "
                        "(.machine.ca)")
    if cfg.machine_type == "worker" and cfg.k8s_ca_key:
        problems.append("issuing Kubernetes API CA key is not allowed on non-controlplane nodes "
                        "(.cluster.ca)")
    if cfg.os_ca_crt is None:
        problems.append("machine.ca is required")
    return problems
