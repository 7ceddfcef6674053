"""``cloudctl emulate start|stop|status``: the emulated rack used by ``bootstrap --emulate``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..cli import EXIT_CODES, _load, handle_errors, inventory_option, secrets_option
from .bootstrap import _context, cluster_dir_option


# --------------------------------------------------------------------------- emulate


@click.group()
def emulate() -> None:
    """The emulated rack (Talos nodes + Kubernetes API) used by ``bootstrap --emulate``."""


@emulate.command("start", epilog=EXIT_CODES)
@inventory_option
@secrets_option
@cluster_dir_option
@click.option("--fail-release", "fail_releases", multiple=True, metavar="NAME=REASON:MESSAGE",
              help="Make a HelmRelease fail with this Ready condition.")
@handle_errors
def emulate_start(
    inventory_path: Path, secrets_dir: Path | None, cluster_dir: Path | None,
    fail_releases: tuple[str, ...],
) -> None:
    """Start the emulated rack in the background (or report the running one)."""
    from ..emulate.rack_control import start_rack
    from ..pipeline import Events, Options

    ctx = _context(inventory_path, secrets_dir, cluster_dir, Events(), Options(emulate=True))
    _, created = ctx.store.init()
    if created:
        click.echo(f"secrets bundle written to {ctx.secrets_dir} (0600)")
    info, started = start_rack(inventory_path, ctx.secrets_dir, ctx.cluster_dir,
                               fail_releases=fail_releases)
    verb = "started" if started else "already running"
    click.echo(f"emulated rack {verb}: pid {info.pid}, Talos API port {info.talos_port} "
               f"(node a.b.c.d on 127.b.c.d), Kubernetes API {info.kube_api_url}")


@emulate.command("stop", epilog=EXIT_CODES)
@inventory_option
@cluster_dir_option
@handle_errors
def emulate_stop(inventory_path: Path, cluster_dir: Path | None) -> None:
    """Stop the emulated rack of this cluster."""
    from ..emulate.rack_control import stop_rack
    from ..pipeline import default_cluster_dir

    inv = _load(inventory_path).inventory
    directory = cluster_dir or default_cluster_dir(inventory_path, inv.cluster.name)
    click.echo("emulated rack stopped" if stop_rack(directory) else "no emulated rack running")


@emulate.command("status", epilog=EXIT_CODES)
@inventory_option
@cluster_dir_option
@handle_errors
def emulate_status(inventory_path: Path, cluster_dir: Path | None) -> None:
    """Print the running rack's rack.json (pid, ports, counters) or exit 5."""
    from ..emulate.rack_control import read_rack
    from ..errors import EnvironmentNotReady
    from ..pipeline import default_cluster_dir

    inv = _load(inventory_path).inventory
    directory = cluster_dir or default_cluster_dir(inventory_path, inv.cluster.name)
    info = read_rack(directory)
    if info is None:
        raise EnvironmentNotReady(f"no emulated rack running for {directory}")
    click.echo(json.dumps(info.raw, indent=2, sort_keys=True))


COMMANDS = [emulate]
