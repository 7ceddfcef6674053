"""VM labs from the inventory: libvirt domains on a bridge in the lab's own network namespace,
powered through real BMC emulators (sushy-tools for Redfish, virtualbmc for IPMI).

``lab_up`` converges (a second run changes nothing), ``lab_down`` removes everything ``lab_up``
made, ``lab_status`` reads the live state. The pure part (names, UUIDs, domain XML) is
``spec``; the effects are in ``host``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import EnvironmentNotReady
from ..inventory.models import Inventory
from .spec import LabSpec, lab_spec, resolve_accel

Notify = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentNotReady(
            "cloudctl lab needs root (network namespaces, bridges, a private libvirtd)")


def spec_for(inv: Inventory, lab_dir: Path) -> LabSpec:
    wanted = inv.lab.accel
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    kvm_opens = os.access("/dev/kvm", os.R_OK | os.W_OK)
    return lab_spec(inv, lab_dir.resolve(), resolve_accel(wanted, cpuinfo, kvm_opens))


@dataclass(frozen=True)
class UpResult:
    spec: LabSpec
    changed: bool


def lab_up(inv: Inventory, lab_dir: Path, notify: Notify = _quiet) -> UpResult:
    from . import host

    require_root()
    spec = spec_for(inv, lab_dir)
    pw = host.passwords(spec)  # fail on a missing secret before anything is made
    host.claim(spec)
    changed = host.ensure_network(spec, notify)
    conn, started = host.ensure_libvirtd(spec, notify)
    changed |= started
    try:
        for vm in spec.vms:
            changed |= host.ensure_disks(spec, vm, notify)
            changed |= host.ensure_domain(conn, spec, vm, notify)
    finally:
        conn.close()
    changed |= host.ensure_certificate(spec)
    for vm in spec.vms:
        if vm.bmc is not None and vm.bmc.type == "redfish":
            changed |= host.ensure_redfish(spec, vm, pw[vm.node], notify)
    changed |= host.ensure_vbmc(spec, pw, notify)
    host.wait_emulators(spec, notify)
    return UpResult(spec, changed)


def lab_down(inv: Inventory, lab_dir: Path, notify: Notify = _quiet) -> list[str]:
    from . import host

    require_root()
    return host.teardown(spec_for(inv, lab_dir), notify)


@dataclass(frozen=True)
class VmStatus:
    node: str
    domain: str
    power: str
    firmware: str
    bmc: str
    emulator: str
    console_log: str


def lab_status(inv: Inventory, lab_dir: Path) -> tuple[LabSpec, bool, list[VmStatus]]:
    """(spec, whether the lab's libvirtd runs, one status per VM)."""
    from . import host

    require_root()
    spec = spec_for(inv, lab_dir)
    up = host.alive(spec, "libvirtd") is not None
    conn = host.connect(spec) if up else None
    out = []
    try:
        for vm in spec.vms:
            power = host.domain_state(conn, vm) if conn is not None else "lab down"
            if vm.bmc is None:
                bmc, emu = "-", "-"
            else:
                bmc = f"{vm.bmc.type} {vm.bmc.endpoint}"
                name = f"sushy-{vm.node}" if vm.bmc.type == "redfish" else "vbmcd"
                emu = "running" if host.alive(spec, name) is not None else "stopped"
            out.append(VmStatus(vm.node, vm.domain, power, vm.firmware, bmc, emu,
                                str(vm.console_log)))
    finally:
        if conn is not None:
            conn.close()
    return spec, up, out
