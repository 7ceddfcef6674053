"""A rack of emulated Talos nodes in one process, on loopback.

Address mapping (explicit, so discovery can "scan a subnet"): a node address ``a.b.c.d`` from
the inventory (or a DHCP address given in ``dhcp_addresses``) is served on the loopback alias
``127.b.c.d`` at :attr:`Rack.port` (Linux routes all of 127/8 to ``lo``; no root needed).
:meth:`Rack.endpoint` turns an address into the :class:`~cloudctl.talos.client.Endpoint` the
client dials; certificates carry both the node address and its loopback alias.

The rack also plays the parts of the cluster that sit between nodes: trustd (a worker gets its
apid certificate from a control plane holding the OS CA key) and etcd membership (a control
plane with an empty etcd directory joins the cluster bootstrapped by another control plane of
the same Talos cluster after ``etcd_join_delay``; two separately bootstrapped control planes
stay two clusters — split brain — as they would on metal).

Run standalone: ``python -m cloudctl.emulate.talos_serve -i inventory.yaml [--port 50000]``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import shutil
import socket
import tempfile
from pathlib import Path

from ..inventory.models import Inventory
from ..secrets.pki import CertAndKey
from ..talos.client import DiskInfo, Endpoint
from .talos_hw import AppliedConfig, default_disks, default_links
from .talos_node import EmulatedNode, Faults


def loopback_alias(address: str) -> str:
    """``10.20.0.11`` -> ``127.20.0.11`` (the socket an emulated node address is served on)."""
    ip = ipaddress.IPv4Address(address)
    if ip.is_loopback:
        return str(ip)
    return "127." + ".".join(str(ip).split(".")[1:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rack:
    def __init__(
        self,
        inventory: Inventory,
        *,
        port: int | None = None,
        install_delay: float = 0.05,
        reboot_delay: float = 0.05,
        etcd_join_delay: float = 0.1,
        kube_api_url: str | None = None,
        dhcp_addresses: dict[str, str] | None = None,
        disks: dict[str, list[DiskInfo]] | None = None,
        faults: dict[str, Faults] | None = None,
        talos_versions: dict[str, str] | None = None,
    ) -> None:
        self.inventory = inventory
        self.port = port or free_port()
        self.install_delay = install_delay
        self.reboot_delay = reboot_delay
        self.etcd_join_delay = etcd_join_delay
        self.kube_api_url = kube_api_url
        """Server URL written into kubeconfigs (default: the config's controlPlane.endpoint)."""
        self._tmp = tempfile.mkdtemp(prefix="cloudctl-talos-emu-")
        self.workdir = Path(self._tmp)
        self._etcd: dict[int, list[EmulatedNode]] = {}
        self._ids = itertools.count(0x1000)
        self._raft_index = 1000
        self._join_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._vip_lock = asyncio.Lock()
        dhcp_addresses = dhcp_addresses or {}
        disks = disks or {}
        faults = faults or {}
        talos_versions = talos_versions or {}
        self.nodes: dict[str, EmulatedNode] = {}
        for n in inventory.nodes:
            self.nodes[n.name] = EmulatedNode(
                self,
                n.name,
                macs=list(n.macs),
                links=default_links(n),
                disks=list(disks.get(n.name, default_disks(n))),
                dhcp_address=dhcp_addresses.get(n.name, str(n.ip)),
                talos_version=talos_versions.get(n.name, inventory.cluster.talos_version),
                faults=faults.get(n.name),
            )

    # ------------------------------------------------------------------ addressing

    def socket_host(self, address: str) -> str:
        return loopback_alias(address)

    def endpoint(self, address: str) -> Endpoint:
        return Endpoint(address, self.socket_host(address), self.port)

    def dhcp_addresses(self) -> list[str]:
        return [n.dhcp_address for n in self.nodes.values()]

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        await asyncio.gather(*(n.start() for n in self.nodes.values()))

    async def stop(self) -> None:
        if self._join_handle is not None:
            self._join_handle.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*(n.stop() for n in self.nodes.values()))
        shutil.rmtree(self._tmp, ignore_errors=True)

    async def __aenter__(self) -> Rack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def power_cycle(self, name: str) -> None:
        """Restart a node's listeners (e.g. after changing its faults)."""
        node = self.nodes[name]
        await node.stop()
        await node.start()

    # ------------------------------------------------------------------ trustd

    def os_ca_for(self, cfg: AppliedConfig | None) -> CertAndKey | None:
        """The OS CA (with key) that issues ``cfg``'s apid certificate, if anyone holds it."""
        if cfg is None or cfg.os_ca_crt is None:
            return None
        if cfg.os_ca_key:
            return CertAndKey(cfg.os_ca_crt, cfg.os_ca_key)
        for n in self.nodes.values():
            c = n.state.config
            if (c and c.os_ca_key and c.os_ca_crt == cfg.os_ca_crt
                    and n.state.stage in ("booting", "running")):
                return CertAndKey(c.os_ca_crt, c.os_ca_key)
        return None

    def node_with_mac_conflict(self, node: EmulatedNode, cfg: AppliedConfig) -> str | None:
        for other in self.nodes.values():
            if other is not node and any(m in other.macs for m in cfg.selected_macs):
                return other.name
        return None

    # ------------------------------------------------------------------ etcd

    def etcd_bootstrap(self, node: EmulatedNode) -> None:
        cluster = next(self._ids)
        self._etcd[cluster] = [node]
        node.state.etcd_cluster = cluster
        node.state.etcd_member_id = next(self._ids)
        self.schedule_etcd_join()
        self.schedule_vip_election()

    def etcd_members(self, node: EmulatedNode) -> list[tuple[int, str, str]]:
        cluster = self._etcd.get(node.state.etcd_cluster or -1, [])
        out = []
        for n in cluster:
            assert n.state.etcd_member_id is not None
            host = (n.state.config.hostname if n.state.config else "") or n.name
            addr = n.state.addresses[0] if n.state.addresses else n.dhcp_address
            out.append((n.state.etcd_member_id, host, addr))
        return out

    @property
    def raft_index(self) -> int:
        """A raft index that moves on (every call reads a later one)."""
        self._raft_index += 1
        return self._raft_index

    def etcd_leader(self, node: EmulatedNode) -> int:
        """The member id the node's etcd sees as leader: the first running member."""
        for n in self._etcd.get(node.state.etcd_cluster or -1, []):
            if n.state.stage == "running" and n.state.etcd_member_id is not None:
                return n.state.etcd_member_id
        return 0

    def etcd_remove(self, asked: EmulatedNode, member_id: int) -> str | None:
        """Remove a member from the etcd cluster of ``asked``; the refusal etcd gives, or
        None. etcd refuses a removal that leaves fewer started members than the new quorum."""
        members = self._etcd.get(asked.state.etcd_cluster or -1, [])
        target = next((n for n in members if n.state.etcd_member_id == member_id), None)
        if target is None:
            return "etcdserver: member not found"
        rest = [n for n in members if n is not target]
        started = sum(1 for n in rest if n.state.stage in ("running", "booting"))
        if rest and started < len(rest) // 2 + 1:
            return "etcdserver: re-configuration failed due to not enough started members"
        members.remove(target)
        target.state.etcd_member_id = None
        target.state.etcd_cluster = None
        target._log(f"left etcd cluster (member {member_id:x})")
        self.schedule_vip_election()
        return None

    def schedule_etcd_join(self) -> None:
        if self._join_handle is not None:
            self._join_handle.cancel()
        loop = asyncio.get_running_loop()
        self._join_handle = loop.call_later(self.etcd_join_delay, self._join_waiting)

    def _join_waiting(self) -> None:
        """Running control planes with empty etcd join the oldest cluster of their Talos cluster."""
        for n in self.nodes.values():
            cfg = n.state.config
            if (n.state.stage != "running" or cfg is None or not cfg.is_controlplane
                    or n.state.etcd_member_id is not None):
                continue
            for cluster_id, members in sorted(self._etcd.items()):
                first = members[0].state.config
                if first is not None and first.cluster_id == cfg.cluster_id:
                    members.append(n)
                    n.state.etcd_cluster = cluster_id
                    n.state.etcd_member_id = next(self._ids)
                    n._log(f"joined etcd cluster {cluster_id:x}")
                    break
        self.schedule_vip_election()

    # ------------------------------------------------------------------ layer-2 VIP

    def vip_holder(self, vip: str) -> str | None:
        return next((n.name for n in self.nodes.values() if vip in n.held_vips), None)

    def schedule_vip_election(self) -> None:
        """Talos assigns a Layer2VIPConfig address to one control plane, elected through
        etcd: only members of an etcd cluster compete, and a holder keeps it until it goes
        down."""
        task = asyncio.get_running_loop().create_task(self._elect_vips())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _elect_vips(self) -> None:
        async with self._vip_lock:
            await self._elect_vips_locked()

    async def _elect_vips_locked(self) -> None:
        candidates = sorted(
            (n for n in self.nodes.values()
             if n.state.stage == "running" and n.state.etcd_member_id is not None
             and n.state.config is not None),
            key=lambda n: n.name,
        )
        vips = {v for n in candidates for v in n.state.config.vips}  # type: ignore[union-attr]
        for vip in sorted(vips):
            if self.vip_holder(vip) is not None:
                continue
            for n in candidates:
                if n.state.config is not None and vip in n.state.config.vips:
                    await n.hold_vip(vip)
                    break
