"""``cloudctl power``: power and one-time network boot through the nodes' BMCs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..cli import (
    EXIT_CODES,
    _load,
    cluster_dir_option,
    format_option,
    handle_errors,
    inventory_option,
)

_HELP = {
    "status": "Show each node's power state (on/off) as its BMC reports it.",
    "on": "Power the nodes on.",
    "off": "Power the nodes off (hard: Redfish ForceOff, IPMI chassis off).",
    "cycle": "Power-cycle the nodes (reset when on, power on when off).",
    "pxe-once": "Make the next boot a network boot (Redfish BootSourceOverride Pxe/Once, IPMI "
                "boot device network). Note: sushy-tools and virtualbmc keep it for later boots "
                "too.",
}


@click.group(epilog=EXIT_CODES)
def power() -> None:
    """Power and one-time network boot over each node's BMC (bmc.type redfish: HTTPS;
    ipmi: RMCP+), on every node with a BMC or on the NODEs named, all at once.

    A wrong password, an unreachable BMC or an action the BMC does not offer fails with exit
    code 6 (7 when a BMC does not answer in time), naming each node and BMC; a node that is
    unknown or has no bmc section is exit 2, a passwordRef that cannot be read exit 3.
    With --lab the command runs inside the lab's network namespace (cloudctl-lab-<cluster>)
    and trusts the lab's Redfish certificate.
    """


def _action(action: str) -> click.Command:
    @click.command(name=action, help=_HELP[action], epilog=EXIT_CODES)
    @click.argument("nodes", nargs=-1)
    @inventory_option
    @click.option("--lab", "use_lab", is_flag=True,
                  help="Talk to the lab's BMC emulators (`cloudctl lab up`).")
    @cluster_dir_option
    @click.option("--timeout", type=float, default=15.0, show_default=True,
                  help="Seconds to wait for each BMC request.")
    @format_option
    @handle_errors
    def cmd(nodes: tuple[str, ...], inventory_path: Path, use_lab: bool,
            cluster_dir: Path | None, timeout: float, output_format: str) -> None:
        from ..power import run_power

        inv = _load(inventory_path).inventory
        ca: Path | None = None
        if use_lab:
            from ..lab import netns, spec_for
            from .lab import lab_dir_for

            spec = spec_for(inv, lab_dir_for(inventory_path, inv.cluster.name, cluster_dir))
            netns.enter(spec.netns)  # threads started from here on live there too
            ca = spec.ca_cert if spec.ca_cert.exists() else None
        results = run_power(inv, action, nodes, ca_cert=ca, timeout=timeout)
        if output_format == "json":
            click.echo(json.dumps([r.__dict__ for r in results], sort_keys=True))
            return
        for r in results:
            click.echo(f"{r.node}: {r.state}  ({r.bmc})")

    return cmd


for _name in ("status", "on", "off", "cycle", "pxe-once"):
    power.add_command(_action(_name))

COMMANDS = [power]
