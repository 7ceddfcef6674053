"""``cloudctl pxe serve``: the ephemeral DHCP + TFTP + HTTP network-boot service."""

from __future__ import annotations

import ipaddress
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from ..cli import EXIT_CODES, _load, format_option, handle_errors, inventory_option, run_async
from ..errors import InputError, Problem


class _View:
    """Progress for people: a live rich table on a terminal, one line per phase otherwise."""

    def __init__(self, table: Any, enabled: bool) -> None:
        self.table = table
        self.enabled = enabled
        self.live: Any = None
        self.last: dict[str, str | None] = {}
        if enabled and sys.stdout.isatty():
            from rich.live import Live

            self.live = Live(self._render(), refresh_per_second=4, transient=False)

    def _render(self) -> Any:
        from rich.table import Table

        from ..boot.service import PHASES

        t = Table(title="network boot")
        t.add_column("node")
        t.add_column("ip")
        for p in PHASES:
            t.add_column(p)
        for n in self.table.nodes.values():
            t.add_row(n.name, n.ip, *("✔" if p in n.phases else "" for p in PHASES))
        return t

    def update(self) -> None:
        if not self.enabled:
            return
        if self.live is not None:
            self.live.update(self._render())
            return
        for n in self.table.nodes.values():
            if n.last_phase != self.last.get(n.name):
                self.last[n.name] = n.last_phase
                if n.last_phase:
                    click.echo(f"{n.name} ({n.ip}): {n.last_phase}")

    def __enter__(self) -> _View:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)


@click.group()
def pxe() -> None:
    """Ephemeral network boot (DHCP full|proxy, TFTP, HTTP, iPXE) for the inventory's nodes."""


@pxe.command(epilog=EXIT_CODES)
@inventory_option
@click.option(
    "--kernel",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Kernel file [default: fetched/cached from the Image Factory].",
)
@click.option(
    "--initramfs",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Initramfs file [default: fetched/cached from the Image Factory].",
)
@click.option(
    "--cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Asset cache for the factory download.",
)
@click.option(
    "--ipxe-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Directory with undionly.kpxe / snponly.efi / ipxe.efi "
    "[default: /usr/lib/ipxe from Debian's ipxe package].",
)
@click.option(
    "--efi-binary",
    type=click.Choice(["snponly.efi", "ipxe.efi"]),
    default="snponly.efi",
    show_default=True,
    help="iPXE build for x86-64 UEFI.",
)
@click.option("--http-port", type=int, default=8080, show_default=True)
@click.option("--interface", default=None, help="Override network.interface.")
@click.option("--server-ip", default=None, help="Override network.bootServer.")
@click.option(
    "--timeout",
    type=float,
    default=1800.0,
    show_default=True,
    help="Give up (exit 7, naming the nodes never seen) after this many seconds.",
)
@click.option(
    "--force", is_flag=True, help="Serve in full mode even if another DHCP server answers."
)
@format_option
@handle_errors
def serve(
    inventory_path: Path,
    kernel: Path | None,
    initramfs: Path | None,
    cache: Path | None,
    ipxe_dir: Path | None,
    efi_binary: str,
    http_port: int,
    interface: str | None,
    server_ip: str | None,
    timeout: float,
    force: bool,
    output_format: str,
) -> None:
    """Serve network boot until every inventory node has fetched its initramfs.

    Full mode answers only inventory MACs (their reserved IP) and refuses to start when another
    DHCP server answers on the interface (unless --force); proxy mode never assigns an address.
    Nodes boot Talos into maintenance mode (no talos.config=). Ctrl-C stops every server.
    With -o json every boot event is a JSON line on stdout, then a final result line.
    """
    from ..boot.assets import arm64_note, fetch_assets, find_ipxe_binaries, stage_tftp_root
    from ..boot.service import BootService

    inv = _load(inventory_path).inventory
    if (kernel is None) != (initramfs is None):
        raise InputError(Problem("--kernel/--initramfs", "give both or neither"))
    if kernel is not None and initramfs is not None:
        assets = {"kernel": kernel, "initramfs.xz": initramfs}
    else:
        assets = fetch_assets(inv, cache=cache).paths
    try:
        ip = ipaddress.IPv4Address(server_ip) if server_ip else None
    except ValueError:
        raise InputError(Problem("--server-ip", f"{server_ip!r} is not an IPv4 address")) from None
    found = find_ipxe_binaries(ipxe_dir)
    note = arm64_note(found)
    if note and output_format != "json":
        click.echo(f"note: {note}", err=True)
    as_json = output_format == "json"

    def on_event(event: Any) -> None:
        if as_json:
            click.echo(event.to_json())
        view.update()

    with tempfile.TemporaryDirectory(prefix="cloudctl-tftp-") as root:
        stage_tftp_root(found, Path(root))
        svc = BootService(
            inv,
            assets=assets,
            tftp_root=Path(root),
            http_port=http_port,
            force=force,
            timeout=timeout,
            on_event=on_event,
            efi_binary=efi_binary,
            server_ip=ip,
            interface=interface,
        )
        view = _View(svc.table, enabled=not as_json)
        from .bootstrap import interrupts_raise

        with view:
            try:
                with interrupts_raise():  # SIGTERM too (a service manager stopping it)
                    result = run_async(svc.run())
            except KeyboardInterrupt:
                click.echo("interrupted: servers stopped", err=True)
                sys.exit(130)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "result": "complete" if result.complete else "timeout",
                    "nodes": result.nodes,
                    "missing": list(result.missing),
                    "incomplete": list(result.incomplete),
                    "elapsed": round(result.elapsed, 3),
                },
                sort_keys=True,
            )
        )
    elif result.complete:
        click.echo(
            f"all {len(result.nodes)} node(s) booted in {result.elapsed:.0f}s; "
            "network boot service stopped"
        )
    result.check()


COMMANDS = [pxe]
