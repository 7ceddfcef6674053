"""Bare metal: nodes on the provisioning network, booted by cloudctl's DHCP/TFTP/HTTP service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..boot.events import BootEvent
from ..errors import EnvironmentNotReady, Problem
from ..inventory.models import Inventory
from ..talos.client import Endpoint
from .base import BootOutcome, NodeNotify, Notify, Rack
from .learned import learn_addresses


def _interface_addresses(interface: str) -> list[str]:
    try:
        out = subprocess.run(
            ["ip", "-j", "addr", "show", "dev", interface],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])]


def host_network_problems(interface: str, boot_server: str) -> list[Problem]:
    """The provisioning interface exists and carries the boot-server address."""
    names = {name for _, name in socket.if_nameindex()}
    if interface not in names:
        return [Problem("network.interface", f"interface {interface!r} does not exist on "
                        f"this host (have: {', '.join(sorted(names))})")]
    have = _interface_addresses(interface)
    if boot_server not in have:
        return [Problem("network.bootServer", f"{boot_server} is not an address of "
                        f"{interface} (has: {', '.join(have) or 'none'})")]
    return []


class MetalRack(Rack):
    kind = "metal"
    poll = 1.0
    needs_boot_assets = True

    def __init__(
        self, inventory: Inventory, cluster_dir: Path, *, assets_given: bool = False
    ) -> None:
        super().__init__(inventory, cluster_dir)
        self.assets_given = assets_given
        """Kernel and initramfs come from --kernel/--initramfs: no cache, no Image Factory."""
        self._service: Any = None

    def dial(self, address: str) -> Endpoint:
        return Endpoint.of(address)

    def host_checks(self) -> str:
        net = self.inventory.network
        rogue = ", no other DHCP server" if net.dhcp.mode == "full" else ""
        return (f"{net.interface} has {net.boot_server}{rogue}, iPXE binaries, boot assets "
                "cached or the Image Factory reachable")

    async def check_host(self, *, force: bool) -> str:
        inv = self.inventory
        problems = host_network_problems(inv.network.interface, str(inv.network.boot_server))
        if problems:
            raise EnvironmentNotReady("\n".join(str(p) for p in problems))
        if inv.network.dhcp.mode == "full":
            from ..boot.dhcp.probe import ensure_no_other_server

            await ensure_no_other_server(inv.network.interface, force=force)
        from ..boot.assets import find_ipxe_binaries

        if not find_ipxe_binaries():
            raise EnvironmentNotReady("no iPXE binaries found (install the ipxe package)")
        rogue = ", no other DHCP server" if inv.network.dhcp.mode == "full" else ""
        return f"host network ready{rogue}, boot assets {self._assets_availability()}"

    def _assets_dir(self) -> Path:
        from ..boot.assets import default_cache_dir
        from ..render.schematic import schematic_for, schematic_id

        inv = self.inventory
        return default_cache_dir() / schematic_id(schematic_for(inv)) / inv.cluster.talos_version

    def boot_assets_cached(self) -> bool:
        from ..boot.assets import asset_files

        if self.assets_given:
            return True
        directory = self._assets_dir()
        return all((directory / f).is_file()
                   for f in asset_files(self.inventory.image.arch).values())

    def _assets_availability(self) -> str:
        """``cached`` when the kernel and initramfs of this schematic/version are in the cache,
        ``fetchable`` when the Image Factory answers a TCP connection; else
        EnvironmentNotReady."""
        from urllib.parse import urlsplit

        inv = self.inventory
        if self.assets_given:
            return "given (--kernel/--initramfs)"
        directory = self._assets_dir()
        if self.boot_assets_cached():
            return "cached"
        url = urlsplit(inv.image.installer.factory_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname or "", port), timeout=5):
                return "fetchable"
        except OSError as exc:
            raise EnvironmentNotReady(
                f"boot assets are not cached in {directory} and the Image Factory "
                f"{inv.image.installer.factory_url} is unreachable ({exc})") from None

    def boot_method(self, pending: int) -> str | None:
        net = self.inventory.network
        return (f"serve {net.dhcp.mode}-mode DHCP, TFTP and HTTP on {net.interface} until "
                f"{pending} node(s) fetched their initramfs")

    async def boot(
        self, *, assets: Mapping[str, Path], force: bool, timeout: float, notify: Notify,
        power: Sequence[str] = (), on_node: NodeNotify | None = None,
        nodes: Sequence[str] | None = None,
    ) -> BootOutcome:
        from ..boot.assets import find_ipxe_binaries, stage_tftp_root
        from ..boot.service import BootService

        tftp_root = self.cluster_dir / "tftp"
        stage_tftp_root(find_ipxe_binaries(), tftp_root)
        seen: list[BootEvent] = []

        def on_event(event: object) -> None:
            if isinstance(event, BootEvent):
                seen.append(event)
            notify(str(event))

        # full mode: Talos in maintenance mode asks DHCP again after the initramfs, so DHCP
        # keeps answering until the configs are applied (release_boot, end of apply)
        net = self.inventory.network
        keep = net.dhcp.mode == "full"
        booting = self.inventory if nodes is None else self.inventory.model_copy(update={
            "nodes": [n for n in self.inventory.nodes if n.name in set(nodes)]})
        service = BootService(booting, assets=dict(assets), tftp_root=tftp_root,
                              force=force, timeout=timeout, on_event=on_event, keep_dhcp=keep)
        say: NodeNotify = on_node or (lambda node, phase, msg: notify(f"{node}: {msg}"))
        serving = asyncio.create_task(service.run())
        try:
            if power:
                await self._power_on(service, serving, list(power), say)
            if not serving.done():
                for n in booting.nodes:
                    hand = "" if n.name in power else " (power it on by hand)"
                    say(n.name, "booting", f"waiting up to {timeout:.0f}s for it to fetch kernel "
                        f"and initramfs from {net.boot_server} on {net.interface}{hand}")
            result = await serving
        finally:
            if not serving.done():
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await serving
        result.check()
        if keep:
            self._service = service
        learned = learn_addresses(self.inventory, seen)
        moved = {n: a for n, a in learned.items()
                 if a != str(self.inventory.node(n).ip)} if learned else {}
        note = ("; DHCP stays up until apply" if keep else "")
        if power:
            note += f"; powered through their BMCs: {', '.join(power)}"
        if moved:
            note += "; booted at " + ", ".join(f"{n}={a}" for n, a in sorted(moved.items()))
        return BootOutcome("every node fetched its initramfs" + note, learned)

    async def _power_on(
        self, service: Any, serving: asyncio.Task[Any], names: list[str], say: NodeNotify
    ) -> None:
        """Once the boot service's servers start: a one-time network boot, then power on (off
        nodes) or cycle (on nodes), each through its BMC (cloudctl.power). A failure raises
        the power error (node and BMC named, power's exit code)."""
        from ..power import run_power
        from ..power.ops import bmc_label

        net = self.inventory.network
        bmc = {n: bmc_label(self.inventory.node(n)) for n in names}
        for n in names:
            say(n, "powering", f"waiting for the boot service on {net.interface} "
                f"({net.boot_server}) before powering it through {bmc[n]}")
        while service.dhcp is None and not serving.done():
            await asyncio.sleep(0.05)
        if serving.done():
            return  # it failed to start: awaiting it raises why
        ca = self.bmc_ca()
        for n in names:
            say(n, "powering", f"asking {bmc[n]} for the power state")
        states = {r.node: r.state for r in await asyncio.to_thread(
            run_power, self.inventory, "status", names, ca_cert=ca)}
        await asyncio.to_thread(run_power, self.inventory, "pxe-once", names, ca_cert=ca)
        for n in names:
            say(n, "pxe-once", f"next boot from the network (once), set through {bmc[n]}")
        off = [n for n in names if states.get(n) != "on"]
        on = [n for n in names if states.get(n) == "on"]
        if off:
            await asyncio.to_thread(run_power, self.inventory, "on", off, ca_cert=ca)
            for n in off:
                say(n, "powered on", f"powered on through {bmc[n]}")
        if on:
            await asyncio.to_thread(run_power, self.inventory, "cycle", on, ca_cert=ca)
            for n in on:
                say(n, "powered on", f"was on, power-cycled through {bmc[n]}")

    async def release_boot(self) -> str | None:
        if self._service is None:
            return None
        await self._service.close_dhcp()
        self._service = None
        return "DHCP stopped: every node is configured"

    def kube_endpoint(self) -> str:
        return self.inventory.cluster.api_url
