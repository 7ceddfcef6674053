"""``cloudctl install-ssh``: Talos onto hosts that cannot PXE-boot, over SSH."""

from __future__ import annotations

import sys
from contextlib import ExitStack
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


@click.command("install-ssh", epilog=EXIT_CODES)
@click.argument("nodes", nargs=-1)
@inventory_option
@cluster_dir_option
@click.option("--accept-new-host-key", is_flag=True,
              help="Pin a host key not yet in <cluster dir>/known_hosts (check its fingerprint "
                   "first). A changed key is always refused.")
@click.option("--kexec", "method", flag_value="kexec", default=None,
              help="kexec into the Talos kernel and initramfs (maintenance mode) instead of "
                   "writing the disk image.")
@click.option("--image-write", "method", flag_value="image",
              help="Write the disk image even where ssh.method says kexec.")
@click.option("--image", "image_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Raw disk image (.raw or .raw.xz) instead of the factory "
                                 "metal image from the asset cache.")
@click.option("--kernel", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Kernel for --kexec (with --initramfs) instead of the cache.")
@click.option("--initramfs", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Initramfs for --kexec (with --kernel).")
@click.option("--cache", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Asset cache [default: $XDG_CACHE_HOME/cloudctl/assets].")
@click.option("--no-reboot", is_flag=True,
              help="Write and verify (or stage for kexec) but do not reboot the host.")
@click.option("--timeout", type=float, default=20.0, show_default=True,
              help="Seconds to wait for the SSH server to answer.")
@format_option
@handle_errors
def install_ssh(nodes: tuple[str, ...], inventory_path: Path, cluster_dir: Path | None,
                accept_new_host_key: bool, method: str | None, image_path: Path | None,
                kernel: Path | None, initramfs: Path | None, cache: Path | None,
                no_reboot: bool, timeout: float, output_format: str) -> None:
    """Install Talos on NODEs (default: every node with boot: ssh) running a rescue or
    existing Linux system, over SSH (the node's ssh: address, port, user, keyRef).

    \b
    The factory `metal` disk image (metal-<arch>.raw.xz of the inventory's schematic,
    fetched into the asset cache) is streamed onto ssh.disk (else installDisk), decompressed
    on the way, with progress; its SHA-256 is then checked on the host, the disk synced and
    the host rebooted into Talos maintenance mode. Before a byte is written the disk must
    exist, be a whole disk, be large enough, not be read-only, mounted, swap or the running
    root, and the host key must match <cluster dir>/known_hosts: any refusal is exit 10
    with the reasons, and nothing is written. An interrupted write resumes on the next run
    (the disk's prefix is checked by SHA-256 first). With --kexec the Talos kernel and
    initramfs are uploaded and kexec'd with the PXE kernel arguments plus an ip= argument
    keeping the host's address. Then `cloudctl bootstrap` finds the node in maintenance mode
    like a PXE-booted one. Needs on the host: sh, lsblk, findmnt, dd, head, sha256sum, sync
    (kexec-tools and ip for --kexec). Keys never appear in output or logs. Ctrl-C stops
    every stream at once (exit 130); the next run resumes.
    """
    from ..boot.assets import default_cache_dir, disk_image_files, fetch_assets
    from ..errors import InputError, Problem
    from ..pipeline import Events, JsonLinesSink, TextSink
    from ..ssh.image import RawImage, inspect
    from ..ssh.run import SshInstall, install_over_ssh, select_nodes
    from .bootstrap import interrupts_raise

    if (kernel is None) != (initramfs is None):
        raise InputError(Problem("--kernel/--initramfs", "give both or neither"))
    inv = _load(inventory_path).inventory
    chosen = select_nodes(inv, nodes)
    cdir = cluster_paths(inventory_path, inv.cluster.name, cluster_dir)[0]
    opts = SshInstall(cdir, accept_new_host_key=accept_new_host_key,
                      kexec=None if method is None else method == "kexec",
                      reboot=not no_reboot, timeout=timeout)
    events = Events()

    def fetched(name: str, done: int, total: int | None) -> None:
        of = f" of {total >> 20} MiB" if total else ""
        events("install-ssh", "progress", f"fetching {name}: {done >> 20} MiB{of}")

    def image() -> RawImage:
        if image_path is not None:
            return inspect(image_path)
        got = fetch_assets(inv, cache=cache or default_cache_dir(),
                           files=disk_image_files(inv.image.arch), progress=fetched)
        events("install-ssh", "info", f"image {got.paths['disk']} (schematic "
                                      f"{got.schematic_id[:12]}…, {got.version}); reading it")
        return inspect(got.paths["disk"])

    def kexec_assets() -> tuple[Path, Path]:
        if kernel is not None and initramfs is not None:
            return kernel, initramfs
        paths = fetch_assets(inv, cache=cache or default_cache_dir(), progress=fetched).paths
        return paths["kernel"], paths["initramfs.xz"]

    with ExitStack() as stack:
        cdir.mkdir(parents=True, exist_ok=True)
        log = stack.enter_context(open(cdir / "events.jsonl", "a"))
        events.sinks.append(JsonLinesSink(log))
        events.sinks.append(JsonLinesSink(sys.stdout) if output_format == "json"
                            else TextSink(sys.stderr, verbose=True))
        try:
            with interrupts_raise():
                results = install_over_ssh(
                    inv, chosen, opts,
                    lambda node, kind, msg: events("install-ssh", kind, msg, node=node),
                    image=image, kexec_assets=kexec_assets, secrets=events.add_secrets)
        except KeyboardInterrupt:
            events("install-ssh", "warn", "interrupted: nothing was rebooted; run install-ssh "
                                          "again to resume the write")
            sys.exit(130)
        for name, summary in sorted(results.items()):
            events("install-ssh", "done", summary, node=name)
    if output_format != "json":
        click.echo(f"installed over SSH: {', '.join(sorted(results))}")


COMMANDS = [install_ssh]
