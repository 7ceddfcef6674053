"""The ephemeral network-boot service: DHCP + TFTP + HTTP until every node has booted.

``BootService(inv, ...).run()`` probes for another DHCP server (full mode), starts the TFTP, HTTP
and DHCP servers on the provisioning interface, and keeps a per-node phase table from their
events (offered, acked, boot file sent, script served, kernel sent, initramfs sent). It returns
when every inventory node has fetched its initramfs, or when ``timeout`` passes (the result
names the nodes never seen and those that stopped half-way). Cancelling ``run()`` (Ctrl-C in
the CLI) stops every server before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import Timeout
from ..inventory.models import Inventory
from .dhcp.config import DhcpConfig, dhcp_config_from_inventory
from .dhcp.probe import DhcpServerSeen, ensure_no_other_server
from .dhcp.transport import DhcpServer
from .events import BootEvent, EventSink
from .http_proto import normalize_mac

log = logging.getLogger("cloudctl.boot")

PHASES: tuple[str, ...] = ("offered", "acked", "boot-file", "script", "kernel", "initramfs")
"""Phases of one node's network boot, in order."""

# --------------------------------------------------------------------------- phase table


@dataclass
class NodeProgress:
    name: str
    macs: tuple[str, ...]
    ip: str
    phases: dict[str, float] = field(default_factory=dict)
    """phase -> time.time() it was first reached."""

    @property
    def seen(self) -> bool:
        return bool(self.phases)

    @property
    def done(self) -> bool:
        return "initramfs" in self.phases

    @property
    def last_phase(self) -> str | None:
        reached = [p for p in PHASES if p in self.phases]
        return reached[-1] if reached else None


class PhaseTable:
    """Per-node progress built from boot events (pure: events in, table out)."""

    def __init__(self, inv: Inventory) -> None:
        self.nodes: dict[str, NodeProgress] = {
            n.name: NodeProgress(n.name, tuple(n.macs), str(n.ip)) for n in inv.nodes
        }
        self._by_mac = {mac: n.name for n in inv.nodes for mac in n.macs}

    def node_for_mac(self, mac: str | None) -> NodeProgress | None:
        if mac is None:
            return None
        norm = normalize_mac(mac)
        name = self._by_mac.get(norm) if norm else None
        return self.nodes.get(name) if name else None

    @staticmethod
    def phase_of(event: BootEvent) -> str | None:
        """The phase an event marks, or None (errors, HEAD, partial ranges, releases)."""
        if event.kind == "dhcp-offer":
            return "offered"
        if event.kind == "dhcp-ack":
            return "acked"
        if event.kind == "tftp-sent":
            return "boot-file"
        if event.kind != "http-sent" or not event.path:
            return None
        if not (event.detail or "GET 200").startswith("GET 200"):
            return None
        path = event.path
        if path.startswith("/tftp/"):
            return "boot-file"
        if path.startswith("/ipxe/"):
            return "script"
        if path.startswith("/boot/") and path.endswith("/kernel"):
            return "kernel"
        if path.startswith("/boot/") and path.endswith("/initramfs.xz"):
            return "initramfs"
        return None

    def observe(
        self, event: BootEvent, mac_of_ip: Callable[[str], str | None] = lambda ip: None
    ) -> tuple[NodeProgress, str] | None:
        """Record ``event``; returns (node, phase) when it moved a node forward."""
        phase = self.phase_of(event)
        if phase is None:
            return None
        mac = event.mac  # the HTTP server already parsed it from /ipxe/<mac> and /boot/<mac>/
        if mac is None:
            mac = mac_of_ip(event.client.rsplit(":", 1)[0])
        node = self.node_for_mac(mac)
        if node is None or phase in node.phases:
            return None
        node.phases[phase] = event.at or time.time()
        return node, phase

    @property
    def complete(self) -> bool:
        return all(n.done for n in self.nodes.values())

    def missing(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes.values() if not n.seen)

    def incomplete(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes.values() if n.seen and not n.done)


@dataclass(frozen=True)
class BootResult:
    complete: bool
    """Every inventory node fetched its initramfs."""
    nodes: dict[str, dict[str, float]]
    """node name -> phase -> time reached."""
    missing: tuple[str, ...]
    """Nodes never seen (no DHCP, TFTP or HTTP request from any of their MACs)."""
    incomplete: tuple[str, ...]
    """Nodes seen but not up to their initramfs."""
    elapsed: float
    other_dhcp_servers: tuple[DhcpServerSeen, ...] = ()

    def check(self) -> None:
        """Raise ``Timeout`` naming the nodes that did not boot."""
        if self.complete:
            return
        parts = []
        if self.missing:
            parts.append(f"never seen: {', '.join(self.missing)}")
        if self.incomplete:
            stuck = ", ".join(
                f"{n} (last: {max(self.nodes[n], key=self.nodes[n].__getitem__)})"
                for n in self.incomplete
            )
            parts.append(f"stopped before the initramfs: {stuck}")
        raise Timeout(f"network boot timed out after {self.elapsed:.0f}s; " + "; ".join(parts))


# --------------------------------------------------------------------------- service


class _Server(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class BootService:
    """Runs DHCP + TFTP + HTTP for one inventory until its nodes have booted (see module doc).

    ``assets`` maps "kernel" and "initramfs.xz" to files; ``tftp_root`` holds the iPXE
    binaries. ``server_ip``/``interface`` override the inventory's network.bootServer and
    network.interface (labs). ``tftp_port`` exists for tests only.

    ``keep_dhcp``: in full mode the booted Talos (maintenance mode) asks DHCP for its address
    again after the initramfs; with ``keep_dhcp=True`` a complete ``run()`` stops TFTP and HTTP
    but leaves DHCP answering until ``close_dhcp()`` (the pipeline calls it once the machine
    configs are applied). On timeout or cancellation everything stops.
    """

    def __init__(
        self,
        inv: Inventory,
        *,
        assets: dict[str, Path],
        tftp_root: Path,
        http_port: int = 8080,
        force: bool = False,
        timeout: float,
        on_event: EventSink | None = None,
        efi_binary: str = "snponly.efi",
        server_ip: ipaddress.IPv4Address | None = None,
        interface: str | None = None,
        probe_wait: float = 3.0,
        tftp_port: int = 69,
        config_urls: dict[str, str] | None = None,
        keep_dhcp: bool = False,
    ) -> None:
        self.inv = inv
        self.cfg: DhcpConfig = dhcp_config_from_inventory(
            inv,
            http_port=http_port,
            efi_binary=efi_binary,
            server_ip=server_ip,
            interface=interface,
        )
        self.assets = dict(assets)
        self.tftp_root = Path(tftp_root)
        self.force = force
        self.timeout = timeout
        self.on_event = on_event
        self.probe_wait = probe_wait
        self.tftp_port = tftp_port
        self.config_urls = config_urls
        self.keep_dhcp = keep_dhcp
        self.table = PhaseTable(inv)
        self.dhcp: DhcpServer | None = None
        self._done = asyncio.Event()

    # ------------------------------------------------------------------ events

    def _event(self, event: BootEvent) -> None:
        mac_of_ip = self.dhcp.state.mac_of if self.dhcp is not None else (lambda ip: None)
        moved = self.table.observe(event, mac_of_ip)
        if moved is not None:
            node, phase = moved
            log.info("%s: %s", node.name, phase)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("boot event observer failed")
        if self.table.complete:
            self._done.set()

    # ------------------------------------------------------------------ lifecycle

    def _servers(self) -> list[_Server]:
        from .http import HttpServer
        from .ipxe import scripts_by_mac
        from .tftp import TftpServer

        host = str(self.cfg.server_ip)
        scripts = scripts_by_mac(
            self.inv, base_url=self.cfg.http_base, config_urls=self.config_urls
        )
        tftp = TftpServer(self.tftp_root, host, self.tftp_port, on_event=self._event)
        http = HttpServer(
            host,
            self.cfg.http_port,
            tftp_root=self.tftp_root,
            assets=self.assets,
            scripts=scripts.get,
            on_event=self._event,
        )
        self.dhcp = DhcpServer(self.cfg, on_event=self._event)
        servers: list[_Server] = [tftp, http]
        if self.inv.network.router_advertisements == "auto":
            from .ndp import RouterAdvertiser

            servers.append(RouterAdvertiser(self.cfg.interface, on_event=self._event))
        return [*servers, self.dhcp]  # DHCP last: nobody is sent anywhere before TFTP/HTTP run

    async def run(self) -> BootResult:
        started = time.monotonic()
        seen: list[DhcpServerSeen] = []
        if self.cfg.mode == "full":
            seen = await ensure_no_other_server(
                self.cfg.interface, wait=self.probe_wait, force=self.force
            )
            for s in seen:
                log.warning(
                    "another DHCP server answers on %s: %s (--force)", self.cfg.interface, s
                )
        running: list[_Server] = []
        try:
            for server in self._servers():
                await server.start()
                running.append(server)
            log.info(
                "network boot service up on %s (%s), waiting for %d nodes",
                self.cfg.interface,
                self.cfg.server_ip,
                len(self.table.nodes),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.timeout)
            if self.keep_dhcp and self.table.complete and self.dhcp in running:
                running.remove(self.dhcp)  # left running for the booted OS; see close_dhcp()
        finally:
            for server in reversed(running):
                try:
                    await asyncio.shield(server.stop())
                except Exception:
                    log.exception("stopping %s failed", type(server).__name__)
        return BootResult(
            complete=self.table.complete,
            nodes={n.name: dict(n.phases) for n in self.table.nodes.values()},
            missing=self.table.missing(),
            incomplete=self.table.incomplete(),
            elapsed=time.monotonic() - started,
            other_dhcp_servers=tuple(seen),
        )

    async def close_dhcp(self) -> None:
        """Stop the DHCP server ``keep_dhcp=True`` left running (no-op otherwise)."""
        if self.dhcp is not None:
            await self.dhcp.stop()
