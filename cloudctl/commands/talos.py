"""``cloudctl talos ...``: Talos API operations on the inventory's nodes (no talosctl needed).

Configs and credentials come from the inventory and its secrets bundle (rendered in memory, the
same bytes ``cloudctl render`` writes). The rack is chosen here, once: bare metal (the nodes'
addresses) or, with ``--emulate``, the cluster's running emulated rack (``cloudctl emulate
start``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..cli import (
    EXIT_CODES,
    _load,
    _store,
    cluster_paths,
    format_option,
    handle_errors,
    inventory_option,
    run_async,
)
from ..errors import InputError, Problem

if TYPE_CHECKING:
    from ..inventory.models import Inventory, Node


def _rack(inventory_path: Path, inv: Inventory, emulate: bool) -> Any:
    from ..rack import rack_for

    cdir, sdir = cluster_paths(inventory_path, inv.cluster.name)
    return rack_for("emulated" if emulate else "metal", inv, inventory_path=inventory_path,
                    cluster_dir=cdir, secrets_dir=sdir)


def _dial(inventory_path: Path, inv: Inventory, emulate: bool) -> Callable[[str], Any]:
    rack = _rack(inventory_path, inv, emulate)
    if emulate:
        rack.dial(str(inv.nodes[0].ip))  # fails now, naming the cluster, if none is running
    return rack.dial  # type: ignore[no-any-return]


def _candidates(
    inventory_path: Path, inv: Inventory, scan: tuple[str, ...], emulate: bool = False
) -> list[str]:
    """What the rack probes (inventory IPs, the DHCP dynamic range on metal) and --scan
    CIDRs."""
    out = _rack(inventory_path, inv, emulate).candidates()
    for cidr in scan:
        try:
            net = ipaddress.IPv4Network(cidr, strict=False)
        except ValueError as exc:
            raise InputError(Problem("--scan", f"{cidr!r}: {exc}")) from None
        if net.num_addresses > 65536:
            raise InputError(Problem("--scan", f"{cidr} is larger than a /16"))
        out += [str(h) for h in net.hosts()]
    return list(dict.fromkeys(out))


def _creds(inventory_path: Path, inv: Inventory, secrets_dir: Path | None) -> Any:
    from ..secrets import talosconfig
    from ..talos.client import Credentials

    bundle = _store(inventory_path, inv.cluster.name, secrets_dir).load()
    text = talosconfig(bundle, inv.cluster.name, [str(n.ip) for n in inv.controlplanes])
    return Credentials.from_talosconfig(text)


def _nodes(inv: Inventory, names: tuple[str, ...]) -> list[Node]:
    if not names:
        return list(inv.nodes)
    known = {n.name: n for n in inv.nodes}
    missing = [n for n in names if n not in known]
    if missing:
        raise InputError(Problem("--node", f"not in the inventory: {', '.join(missing)}"))
    return [known[n] for n in names]


def _echo(output_format: str, payload: dict[str, Any], text: list[str]) -> None:
    if output_format == "json":
        click.echo(json.dumps(payload, sort_keys=True))
    else:
        for line in text:
            click.echo(line)


secrets_opt = click.option(
    "--secrets",
    "secrets_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Secrets directory [default: <inventory dir>/secrets/<cluster>/].",
)
emulator_opt = click.option(
    "--emulate",
    is_flag=True,
    help="Talk to this cluster's running emulated rack (cloudctl emulate start) instead of "
         "the machines at the nodes' addresses.",
)
scan_opt = click.option(
    "--scan",
    multiple=True,
    metavar="CIDR",
    help="Also probe every host of CIDR (besides inventory IPs and the DHCP range).",
)


@click.group()
def talos() -> None:
    """Talos API operations: discover, preflight, apply, bootstrap, kubeconfig, upgrade."""


@talos.command(epilog=EXIT_CODES)
@inventory_option
@scan_opt
@emulator_opt
@format_option
@handle_errors
def discover(
    inventory_path: Path, scan: tuple[str, ...], emulate: bool, output_format: str
) -> None:
    """Find machines in maintenance mode and match them to inventory nodes by MAC."""
    from ..talos import ops

    inv = _load(inventory_path).inventory
    dial = _dial(inventory_path, inv, emulate)
    d = run_async(ops.discover(inv, _candidates(inventory_path, inv, scan, emulate), dial=dial))
    payload = {
        "nodes": {
            name: {"address": f.address, "macs": list(f.macs), "disks": len(f.disks)}
            for name, f in sorted(d.nodes.items())
        },
        "missing": d.missing(inv),
        "unknown": [u.address for u in d.unknown],
        "configured": [c.address for c in d.configured],
        "problems": [str(p) for p in d.problems],
    }
    lines = [
        f"{name}: maintenance mode at {f.address} ({', '.join(f.macs)})"
        for name, f in sorted(d.nodes.items())
    ]
    lines += [f"{name}: not found" for name in d.missing(inv)]
    lines += [f"unknown machine at {u.address} ({', '.join(u.macs)})" for u in d.unknown]
    lines += [f"already configured: {c.address} ({c.stage})" for c in d.configured]
    lines += [f"problem: {p}" for p in d.problems]
    _echo(output_format, payload, lines)


@talos.command(epilog=EXIT_CODES)
@inventory_option
@scan_opt
@emulator_opt
@handle_errors
def preflight(inventory_path: Path, scan: tuple[str, ...], emulate: bool) -> None:
    """Discover, then check every node was found and its install disk and links resolve."""
    from ..talos import ops

    inv = _load(inventory_path).inventory
    dial = _dial(inventory_path, inv, emulate)
    d = run_async(ops.discover(inv, _candidates(inventory_path, inv, scan, emulate), dial=dial))
    ops.check_preflight(inv, d)
    click.echo(f"preflight ok: {len(d.nodes)} node(s) found, install disks and links resolve")


@talos.command(epilog=EXIT_CODES)
@inventory_option
@secrets_opt
@scan_opt
@emulator_opt
@click.option("--node", "node_names", multiple=True, help="Only these nodes (repeatable).")
@click.option("--timeout", type=float, default=600.0, show_default=True)
@handle_errors
def apply(
    inventory_path: Path,
    secrets_dir: Path | None,
    scan: tuple[str, ...],
    emulate: bool,
    node_names: tuple[str, ...],
    timeout: float,
) -> None:
    """Send each discovered node its machine config (dry run first, mode AUTO), then wait
    until it runs in normal mode on its configured IP."""
    from ..render.machineconfig import render_machine_configs
    from ..talos import ops

    inv = _load(inventory_path).inventory
    selected = _nodes(inv, node_names)
    bundle = _store(inventory_path, inv.cluster.name, secrets_dir).load()
    files = render_machine_configs(inv, bundle)
    configs = {n.name: files[f"talos/nodes/{n.name}.yaml"].data for n in selected}
    creds = _creds(inventory_path, inv, secrets_dir)
    dial = _dial(inventory_path, inv, emulate)
    sub = inv.model_copy(update={"nodes": selected})

    async def run() -> list[Any]:
        d = await ops.discover(sub, _candidates(inventory_path, sub, scan, emulate), dial=dial)
        return await ops.apply_all(
            sub,
            d,
            configs,
            creds,
            dial=dial,
            timeout=timeout,
            on_event=lambda node, msg: click.echo(f"{node}: {msg}", err=True),
        )

    results = run_async(run())
    done = ops.raise_failures(results, "apply")
    for name, outcome in sorted(done.items()):
        click.echo(f"{name}: {outcome.mode_details or 'applied'} — running {outcome.version}")


@talos.command(epilog=EXIT_CODES)
@inventory_option
@secrets_opt
@emulator_opt
@click.option(
    "--state",
    "state_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Bootstrap marker file [default: <inventory dir>/clusters/<cluster>/bootstrap.json].",
)
@handle_errors
def bootstrap(
    inventory_path: Path,
    secrets_dir: Path | None,
    emulate: bool,
    state_path: Path | None,
) -> None:
    """Bootstrap etcd exactly once per cluster (checks the marker and every control plane's
    etcd membership first), then wait until all control planes are members."""
    from ..talos import ops

    inv = _load(inventory_path).inventory
    creds = _creds(inventory_path, inv, secrets_dir)
    path = state_path or (
        inventory_path.resolve().parent / "clusters" / inv.cluster.name / "bootstrap.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    out = run_async(
        ops.bootstrap_once(inv, creds, ops.BootstrapState(path),
                           dial=_dial(inventory_path, inv, emulate))
    )
    verb = "bootstrapped" if out.called else "already bootstrapped"
    click.echo(f"etcd {verb} on {out.node}; members: {', '.join(out.members)}")


@talos.command(epilog=EXIT_CODES)
@inventory_option
@secrets_opt
@emulator_opt
@click.option(
    "-o",
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Where to write the kubeconfig (mode 0600).",
)
@handle_errors
def kubeconfig(
    inventory_path: Path, secrets_dir: Path | None, emulate: bool, out_path: Path
) -> None:
    """Fetch the admin kubeconfig from the first control plane that answers."""
    from ..talos import ops

    inv = _load(inventory_path).inventory
    creds = _creds(inventory_path, inv, secrets_dir)
    data = run_async(ops.kubeconfig(inv, creds, dial=_dial(inventory_path, inv, emulate)))
    from ..secrets.store import write_private

    write_private(out_path, data)
    click.echo(f"kubeconfig written to {out_path} (0600)")


@talos.command(epilog=EXIT_CODES)
@inventory_option
@secrets_opt
@emulator_opt
@format_option
@handle_errors
def version(
    inventory_path: Path, secrets_dir: Path | None, emulate: bool, output_format: str
) -> None:
    """Talos version running on every node (normal mode)."""
    from ..talos import ops

    inv = _load(inventory_path).inventory
    creds = _creds(inventory_path, inv, secrets_dir)
    results = run_async(ops.versions(inv, creds, dial=_dial(inventory_path, inv, emulate)))
    payload = {
        r.node: (r.value.tag if r.ok and r.value else {"error": str(r.error)}) for r in results
    }
    lines = [
        f"{r.node}: {r.value.tag if r.ok and r.value else 'error: ' + str(r.error)}"
        for r in results
    ]
    _echo(output_format, payload, lines)
    ops.raise_failures(results, "version")


@talos.command(epilog=EXIT_CODES)
@inventory_option
@secrets_opt
@emulator_opt
@click.option("--node", "node_names", multiple=True, required=True, help="Node(s) to reboot.")
@handle_errors
def reboot(
    inventory_path: Path,
    secrets_dir: Path | None,
    emulate: bool,
    node_names: tuple[str, ...],
) -> None:
    """Reboot nodes one at a time, waiting until each is back with a new boot ID."""
    from ..talos import ops

    inv = _load(inventory_path).inventory
    creds = _creds(inventory_path, inv, secrets_dir)
    for node in _nodes(inv, node_names):
        v = run_async(ops.reboot_node(node, creds, dial=_dial(inventory_path, inv, emulate)))
        click.echo(f"{node.name}: rebooted, running {v.tag}")


@talos.command(epilog=EXIT_CODES)
@inventory_option
@secrets_opt
@emulator_opt
@click.option("--node", "node_names", multiple=True, help="Only these nodes (default: all).")
@click.option("--image", default=None, help="Installer image [default: the inventory's].")
@handle_errors
def upgrade(
    inventory_path: Path,
    secrets_dir: Path | None,
    emulate: bool,
    node_names: tuple[str, ...],
    image: str | None,
) -> None:
    """Upgrade nodes one at a time (control planes first) to the inventory's installer image and
    verify each runs the new version afterwards (a silent rollback is an error)."""
    from ..render.schematic import installer_image
    from ..talos import ops

    inv = _load(inventory_path).inventory
    creds = _creds(inventory_path, inv, secrets_dir)
    target = image or installer_image(inv)
    sub = inv.model_copy(update={"nodes": _nodes(inv, node_names)})
    dial = _dial(inventory_path, inv, emulate)
    results = run_async(ops.upgrade_all(sub, creds, target, dial=dial))
    for name, v in sorted(ops.raise_failures(results, "upgrade").items()):
        click.echo(f"{name}: running {v.tag}")


COMMANDS = [talos]
