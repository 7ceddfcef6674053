"""The lab an inventory describes, as pure data: names, UUIDs, MACs, disks, firmware, BMC
endpoints and the libvirt domain XML. No I/O here; ``cloudctl.lab.host`` makes it real.

The same inventory (and lab directory) always gives the same lab: every name and UUID is
derived from the cluster and node names, the MACs are the inventory's own.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from ..errors import InputError, Problem
from ..inventory.models import Bmc, Inventory

_UUID_NS = uuid.UUID("6f1d3c2e-8a41-5b7e-9c0d-3f2a1b4c5d6e")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
QEMU = Path("/usr/bin/qemu-system-x86_64")
DEFAULT_PORTS = {"redfish": 443, "ipmi": 623}


@dataclass(frozen=True)
class BmcSpec:
    node: str
    type: str
    address: str
    port: int
    username: str
    password_ref: str

    @property
    def endpoint(self) -> str:
        if self.type == "redfish":
            return f"https://{self.address}:{self.port}"
        return f"ipmi://{self.address}:{self.port}"


@dataclass(frozen=True)
class VmSpec:
    node: str
    domain: str
    uuid: str
    macs: tuple[str, ...]
    firmware: str
    memory_mib: int
    cpus: int
    system_disk: Path
    system_disk_gib: int
    data_disk: Path
    data_disk_gib: int
    nvram: Path | None
    console_log: Path
    bmc: BmcSpec | None


@dataclass(frozen=True)
class LabSpec:
    cluster: str
    netns: str
    bridge: str
    bridge_cidr: str
    accel: str
    lab_dir: Path
    run_dir: Path
    vms: tuple[VmSpec, ...]

    @property
    def libvirt_uri(self) -> str:
        return f"qemu:///system?socket={self.run_dir / 'libvirt-sock'}"

    @property
    def bmc_addresses(self) -> list[str]:
        return sorted({vm.bmc.address for vm in self.vms if vm.bmc is not None})

    @property
    def ca_cert(self) -> Path:
        """The certificate the lab's Redfish emulators serve (trusted by ``power --lab``)."""
        return self.lab_dir / "bmc" / "redfish-cert.pem"

    def vm(self, node: str) -> VmSpec:
        for vm in self.vms:
            if vm.node == node:
                return vm
        raise KeyError(node)


def netns_name(cluster: str) -> str:
    return f"cloudctl-lab-{cluster}"


def run_dir(cluster: str) -> Path:
    """Short runtime path (unix socket paths are limited to 108 bytes)."""
    return Path("/run/cloudctl-lab") / cluster


def domain_uuid(cluster: str, node: str) -> str:
    return str(uuid.uuid5(_UUID_NS, f"{cluster}/{node}"))


def _bmc_spec(node: str, bmc: Bmc, index: int) -> BmcSpec:
    where = f"nodes[{index}].bmc.address"
    try:
        ipaddress.IPv4Address(bmc.address)
    except ValueError:
        raise InputError(
            Problem(where, f"node {node}: a lab BMC needs an IPv4 address, not {bmc.address!r} "
                           "(the emulator listens on it inside the lab's namespace)")
        ) from None
    return BmcSpec(
        node=node,
        type=bmc.type,
        address=bmc.address,
        port=bmc.port or DEFAULT_PORTS[bmc.type],
        username=bmc.username,
        password_ref=bmc.password_ref,
    )


def lab_spec(inv: Inventory, lab_dir: Path, accel: str) -> LabSpec:
    """The lab for ``inv``. ``accel`` is the resolved accelerator (``kvm`` or ``tcg``)."""
    net = inv.network
    cluster = inv.cluster.name
    lab = inv.lab
    vms = []
    endpoints: dict[tuple[str, int], str] = {}
    for i, n in enumerate(inv.nodes):
        bmc = _bmc_spec(n.name, n.bmc, i) if n.bmc is not None else None
        if bmc is not None:
            key = (bmc.address, bmc.port)
            if key in endpoints:
                raise InputError(Problem(
                    f"nodes[{i}].bmc",
                    f"node {n.name}: BMC {bmc.address}:{bmc.port} is also node "
                    f"{endpoints[key]}'s; each lab BMC emulator needs its own address or port"))
            endpoints[key] = n.name
        d = lab_dir / "disks"
        vms.append(
            VmSpec(
                node=n.name,
                domain=f"{cluster}-{n.name}",
                uuid=domain_uuid(cluster, n.name),
                macs=tuple(n.macs),
                firmware=n.firmware,
                memory_mib=lab.memory_mib,
                cpus=lab.cpus,
                system_disk=d / f"{n.name}-system.qcow2",
                system_disk_gib=lab.system_disk_gib,
                data_disk=d / f"{n.name}-data.qcow2",
                data_disk_gib=lab.data_disk_gib,
                nvram=(lab_dir / "nvram" / f"{n.name}_VARS.fd") if n.firmware == "uefi" else None,
                console_log=lab_dir / "console" / f"{n.name}.log",
                bmc=bmc,
            )
        )
    return LabSpec(
        cluster=cluster,
        netns=netns_name(cluster),
        bridge=net.interface,
        bridge_cidr=f"{net.boot_server}/{net.subnet.prefixlen}",
        accel=accel,
        lab_dir=lab_dir,
        run_dir=run_dir(cluster),
        vms=tuple(vms),
    )


def resolve_accel(wanted: str, cpuinfo: str, kvm_opens: bool) -> str:
    """``kvm`` when asked for or when ``auto`` finds hardware virtualisation, else ``tcg``.
    /dev/kvm alone is not enough: a paravirtual kvm without vmx/svm pauses guests."""
    if wanted != "auto":
        return wanted
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return "kvm" if kvm_opens and flags & {"vmx", "svm"} else "tcg"


def domain_xml(spec: LabSpec, vm: VmSpec) -> str:
    """The libvirt domain: network boot first, every inventory NIC on the lab bridge, a system
    and a data disk, the serial console into a file, BIOS (SeaBIOS + the NIC's iPXE ROM) or UEFI
    (OVMF, secure boot off, the NIC ROM disabled so the firmware's own PXE boots)."""
    dom = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    ET.SubElement(dom, "name").text = vm.domain
    ET.SubElement(dom, "uuid").text = vm.uuid
    ET.SubElement(dom, "description").text = f"cloudctl lab {spec.cluster}, node {vm.node}"
    ET.SubElement(dom, "memory", unit="MiB").text = str(vm.memory_mib)
    ET.SubElement(dom, "vcpu").text = str(vm.cpus)
    os_el = ET.SubElement(dom, "os")
    uefi = vm.firmware == "uefi"
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35" if uefi else "pc").text = "hvm"
    if uefi:
        assert vm.nvram is not None
        ET.SubElement(os_el, "loader", readonly="yes", secure="no", type="pflash").text = str(
            OVMF_CODE)
        ET.SubElement(os_el, "nvram", template=str(OVMF_VARS)).text = str(vm.nvram)
    ET.SubElement(os_el, "boot", dev="network")
    ET.SubElement(os_el, "boot", dev="hd")
    if not uefi:
        ET.SubElement(os_el, "bios", useserial="yes")
    feats = ET.SubElement(dom, "features")
    ET.SubElement(feats, "acpi")
    ET.SubElement(feats, "apic")
    if spec.accel == "kvm":
        ET.SubElement(dom, "cpu", mode="host-passthrough")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "destroy"
    dev = ET.SubElement(dom, "devices")
    ET.SubElement(dev, "emulator").text = str(QEMU)
    for path, target in ((vm.system_disk, "vda"), (vm.data_disk, "vdb")):
        disk = ET.SubElement(dev, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="qcow2")
        ET.SubElement(disk, "source", file=str(path))
        ET.SubElement(disk, "target", dev=target, bus="virtio")
    for mac in vm.macs:
        nic = ET.SubElement(dev, "interface", type="bridge")
        ET.SubElement(nic, "source", bridge=spec.bridge)
        ET.SubElement(nic, "mac", address=mac)
        ET.SubElement(nic, "model", type="virtio")
        if uefi:
            ET.SubElement(nic, "rom", enabled="no")
    serial = ET.SubElement(dev, "serial", type="file")
    ET.SubElement(serial, "source", path=str(vm.console_log))
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(dev, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"
