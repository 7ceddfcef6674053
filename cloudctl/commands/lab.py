"""``cloudctl lab up|down|status``: a VM lab built from the inventory; ``lab prepare-host``:
a machine made ready to host one (Ansible)."""

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
    from .bootstrap import interrupts_raise

    inv = _load(inventory_path).inventory
    lab_dir = lab_dir_for(inventory_path, inv.cluster.name, cluster_dir)
    try:
        # SIGINT and SIGTERM stop it at once, also when started with SIGINT ignored (a
        # background job of a script) or stopped by a service manager
        with interrupts_raise():
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


def _vars(pairs: tuple[str, ...]) -> dict[str, str]:
    from ..errors import InputError, Problem

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(Problem("--var", f"{pair!r} is not NAME=VALUE"))
        out[key] = value
    return out


@lab.command("prepare-host", epilog=EXIT_CODES)
@click.argument("address")
@click.option("--user", default="root", show_default=True,
              help="SSH user (root, or a user with passwordless sudo).")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="SSH private key.")
@click.option("--passphrase-ref", default=None,
              help="The key's passphrase as a secret reference (env:VAR or file:/path).")
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="known_hosts file holding the host's key [default: ssh's own files]. Host "
                   "keys are always checked.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="Override a playbook variable (lab_bridge, lab_bridge_address, "
                   "lab_bridge_uplink, lab_pool_name, lab_pool_path); repeatable.")
@click.option("--check", is_flag=True,
              help="Ansible check mode: report what would change, change nothing.")
@format_option
@handle_errors
def prepare_host(address: str, user: str, port: int, key_file: Path,
                 passphrase_ref: str | None, known_hosts: Path | None,
                 variables: tuple[str, ...], check: bool, output_format: str) -> None:
    """Prepare a Debian/Ubuntu machine over SSH to host a VM lab: install QEMU, libvirt, OVMF,
    iPXE ROMs and what sushy-tools/virtualbmc build from; define a Linux bridge
    (systemd-networkd; lab_bridge, default cloudctl0); run libvirtd; create a directory storage
    pool (lab_pool_name/lab_pool_path). Runs the shipped playbook prepare-hypervisor.yml through
    ansible-runner; each task's result per host is printed (JSON lines with -o json). A failed
    task exits 11 naming the task and the host."""
    from ..ansible import PlaybookRun, SshKey, playbook, run_playbook, single_host_inventory
    from ..pipeline import Events, JsonLinesSink, TextSink
    from ..secrets.refs import resolve_secret_ref

    extra = _vars(variables)
    key = resolve_secret_ref(address, f"file:{key_file}", "SSH key", strip=False)
    phrase = (resolve_secret_ref(address, passphrase_ref, "SSH key passphrase")
              if passphrase_ref else None)
    events = Events([JsonLinesSink(sys.stdout) if output_format == "json"
                     else TextSink(sys.stderr)])
    run = PlaybookRun(
        playbook=playbook("prepare-hypervisor.yml"),
        inventory=lambda key_dir: single_host_inventory(
            address, address, port=port, user=user, key_dir=key_dir,
            known_hosts=known_hosts.resolve() if known_hosts else None),
        source="prepare-hypervisor.yml",
        keys={address: SshKey(key if key.endswith("\n") else key + "\n", phrase)},
        extravars=extra,
        check=check,
    )
    result = run_playbook(run, stage="prepare-host", events=events)
    if output_format != "json":
        mode = " (check mode: nothing changed)" if check else ""
        verb = "would change" if check else "changed"
        click.echo(f"{address} prepared{mode}: {result.changed} task(s) {verb}")


COMMANDS = [lab]
