"""``cloudctl lab up|down|status``: a VM lab built from the inventory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..cli import (
    EXIT_CODES,
    _load,
    cluster_dir_option,
    cluster_paths,
    format_option,
    handle_errors,
    inventory_option,
)


def lab_dir_for(inventory_path: Path, cluster: str, cluster_dir: Path | None) -> Path:
    return cluster_paths(inventory_path, cluster, cluster_dir)[0] / "lab"


@click.group()
def lab() -> None:
    """VM labs from the inventory: one libvirt VM per node (every inventory MAC, a system and
    a data disk, BIOS or UEFI per node's `firmware`, network boot first, serial console to a
    file) on a bridge with the boot server's address, inside the network namespace
    cloudctl-lab-<cluster>; each node's BMC emulated by sushy-tools (Redfish) or virtualbmc
    (IPMI) at its inventory address, with the password behind bmc.passwordRef. Needs root.

    Run cloudctl against the lab inside its namespace, e.g.
    `ip netns exec cloudctl-lab-<cluster> cloudctl pxe serve -i FILE`, and
    `cloudctl power --lab ...`.
    """


@lab.command(epilog=EXIT_CODES)
@inventory_option
@cluster_dir_option
@handle_errors
def up(inventory_path: Path, cluster_dir: Path | None) -> None:
    """Build the lab, or converge it (a second run changes nothing). VMs stay powered off:
    power them through their BMCs (`cloudctl power --lab`)."""
    from ..lab import lab_up

    inv = _load(inventory_path).inventory
    lab_dir = lab_dir_for(inventory_path, inv.cluster.name, cluster_dir)
    try:
        result = lab_up(inv, lab_dir, notify=click.echo)
    except KeyboardInterrupt:
        click.echo("interrupted: run `cloudctl lab up` to finish or `cloudctl lab down` to "
                   "remove what was made", err=True)
        sys.exit(130)
    spec = result.spec
    click.echo(f"lab {spec.cluster} {'ready' if result.changed else 'unchanged'}: "
               f"{len(spec.vms)} VM(s), {spec.accel}, namespace {spec.netns}, "
               f"bridge {spec.bridge} {spec.bridge_cidr}, {spec.lab_dir}")


@lab.command(epilog=EXIT_CODES)
@inventory_option
@cluster_dir_option
@handle_errors
def down(inventory_path: Path, cluster_dir: Path | None) -> None:
    """Remove everything `lab up` made: domains and their QEMU processes, BMC emulators,
    libvirtd, the namespace with its bridge and taps, disks, NVRAM and console logs."""
    from ..lab import lab_down

    inv = _load(inventory_path).inventory
    removed = lab_down(inv, lab_dir_for(inventory_path, inv.cluster.name, cluster_dir),
                       notify=click.echo)
    click.echo(f"lab {inv.cluster.name} removed" if removed else
               f"lab {inv.cluster.name}: nothing to remove")


@lab.command(epilog=EXIT_CODES)
@inventory_option
@cluster_dir_option
@format_option
@handle_errors
def status(inventory_path: Path, cluster_dir: Path | None, output_format: str) -> None:
    """Each VM's power state, firmware, BMC endpoint (and whether its emulator runs) and
    console log."""
    from ..lab import lab_status

    inv = _load(inventory_path).inventory
    spec, up_, rows = lab_status(inv, lab_dir_for(inventory_path, inv.cluster.name, cluster_dir))
    if output_format == "json":
        click.echo(json.dumps({
            "lab": spec.cluster, "up": up_, "namespace": spec.netns, "accel": spec.accel,
            "vms": [r.__dict__ for r in rows]}, sort_keys=True))
        return
    click.echo(f"lab {spec.cluster}: {'up' if up_ else 'down'} (namespace {spec.netns}, "
               f"{spec.accel})")
    header = ("NODE", "POWER", "FIRMWARE", "BMC", "EMULATOR", "CONSOLE")
    table = [header, *[(r.node, r.power, r.firmware, r.bmc, r.emulator, r.console_log)
                       for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
                   + "  " + row[-1])


COMMANDS = [lab]
