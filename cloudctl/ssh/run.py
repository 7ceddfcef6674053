"""``install-ssh`` for several nodes at once: keys first, then each node in its own thread.

Used by ``cloudctl install-ssh`` and by ``bootstrap``'s boot stage for ``boot: ssh`` nodes.
Every node's key and passphrase are resolved before any connection (a bad reference fails
before anything is written anywhere) and handed to the caller for redaction.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from ..errors import CloudctlError, InputError, Problem, RemoteError, node_failures
from ..inventory.models import Inventory, Node
from . import KNOWN_HOSTS
from .image import RawImage
from .install import kexec_talos, ssh_node, write_image
from .session import connect, load_key

NodeSay = Callable[[str, str, str], None]
"""say(node, kind, message)."""


@dataclass(frozen=True)
class SshInstall:
    cluster_dir: Path
    accept_new_host_key: bool = False
    kexec: bool | None = None
    """True/False forces the method; None: each node's ``ssh.method``."""
    reboot: bool = True
    timeout: float = 20.0
    stop: threading.Event = field(default_factory=threading.Event, compare=False)
    """Set on Ctrl-C: every node's stream stops at its next chunk (``--resume``-able)."""

    @property
    def known_hosts(self) -> Path:
        return self.cluster_dir / KNOWN_HOSTS

    @property
    def state_dir(self) -> Path:
        return self.cluster_dir / "install-ssh"

    def uses_kexec(self, node: Node) -> bool:
        assert node.ssh is not None
        return self.kexec if self.kexec is not None else node.ssh.method == "kexec"


def select_nodes(inv: Inventory, names: tuple[str, ...] | list[str]) -> list[Node]:
    """The named nodes (every ``boot: ssh`` node when none are named), each with ``ssh:``."""
    if not names:
        chosen = [n for n in inv.nodes if n.boot == "ssh"]
        if not chosen:
            raise InputError(Problem("nodes", "no node has boot: ssh; name the nodes to "
                                              "install"))
        return chosen
    known = {n.name: n for n in inv.nodes}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(Problem("NODE", f"not in the inventory: {', '.join(unknown)}"))
    return [ssh_node(known[n]) for n in dict.fromkeys(names)]


def install_over_ssh(
    inv: Inventory,
    nodes: list[Node],
    opts: SshInstall,
    say: NodeSay,
    *,
    image: Callable[[], RawImage] | None = None,
    kexec_assets: Callable[[], tuple[Path, Path]] | None = None,
    secrets: Callable[[list[str]], None] = lambda s: None,
) -> dict[str, str]:
    """Install every node; node -> one-line summary. ``image`` / ``kexec_assets`` are called
    once, only when a node needs them. Failures are collected per node (``node_failures``)."""
    from ..boot.ipxe import kernel_args

    keys = {n.name: load_key(n) for n in nodes}
    secrets([s for _, found in keys.values() for s in found])
    need_image = [n for n in nodes if not opts.uses_kexec(n)]
    need_kexec = [n for n in nodes if opts.uses_kexec(n)]
    for n in need_image:
        if not n.ssh_disk:
            raise InputError(Problem(f"nodes.{n.name}.ssh.disk",
                                     "no disk to write the image to: give ssh.disk or "
                                     "installDisk, or use --kexec"))
    raw = image() if need_image and image is not None else None
    kernel = kexec_assets() if need_kexec and kexec_assets is not None else None

    def one(node: Node) -> str:
        try:
            return install_one(node)
        except (OSError, EOFError, paramiko.SSHException) as exc:  # the connection died
            raise RemoteError(f"node {node.name}: SSH connection to {node.ssh_address} lost "
                              f"({str(exc) or type(exc).__name__}); run again to resume") \
                from None

    def install_one(node: Node) -> str:
        def note(kind: str, message: str) -> None:
            say(node.name, kind, message)

        with connect(node, keys[node.name][0], known_hosts=opts.known_hosts,
                     accept_new=opts.accept_new_host_key, timeout=opts.timeout,
                     stop=opts.stop) as session:
            if session.pinned:
                note("warn", f"host key {session.pinned} pinned in {opts.known_hosts}")
            if opts.uses_kexec(node):
                assert kernel is not None
                kexec_talos(session, kernel[0], kernel[1], kernel_args(inv, node), note,
                            execute=opts.reboot)
                return ("kexec into Talos maintenance mode" if opts.reboot else
                        "kernel and initramfs staged, kexec not run (--no-reboot)")
            assert raw is not None and node.ssh_disk is not None
            return write_image(session, raw, node.ssh_disk, opts.state_dir, note,
                               reboot=opts.reboot).summary()

    results: dict[str, str] = {}
    failures: list[tuple[str, CloudctlError]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        futures = {pool.submit(one, n): n.name for n in nodes}
        try:
            for fut in concurrent.futures.as_completed(futures):
                name = futures[fut]
                try:
                    results[name] = fut.result()
                except CloudctlError as exc:
                    failures.append((name, exc))
        except BaseException:  # Ctrl-C, cancellation: the threads stop at their next chunk
            opts.stop.set()
            raise
    if failures:
        raise node_failures("install over SSH", failures, len(nodes))
    return results
