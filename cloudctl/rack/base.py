"""The rack interface: everything the pipeline needs to know about the machines it drives.

A rack says how to reach a node's Talos API, which addresses discovery probes, which host
checks apply, how nodes get booted, and where the Kubernetes API is. It is chosen once, at the
CLI edge (``rack_for``); stages never ask which kind they drive.
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..inventory.models import Inventory
from ..talos.client import Endpoint

Notify = Callable[[str], None]
"""Progress callback: one human-readable line."""
NodeNotify = Callable[[str, str, str], None]
"""Per-node progress people should see: (node, phase, message)."""


@dataclass(frozen=True)
class BootOutcome:
    summary: str
    learned: Mapping[str, str] = field(default_factory=dict)
    """node name -> address the node was seen using while it booted (proxy-mode DHCP: handed
    out by another server)."""


class Rack(ABC):
    """One kind of rack. Subclasses: ``MetalRack``, ``EmulatedRack``, ``LabRack``."""

    kind: ClassVar[str]
    poll: ClassVar[float] = 1.0
    """How often waits poll remote state."""
    needs_boot_assets: ClassVar[bool] = True
    """Whether kernel and initramfs must be fetched before booting."""

    def __init__(self, inventory: Inventory, cluster_dir: Path) -> None:
        self.inventory = inventory
        self.cluster_dir = cluster_dir

    # ------------------------------------------------------------------ reaching nodes

    @abstractmethod
    def dial(self, address: str) -> Endpoint:
        """The Talos API endpoint of the machine at ``address`` (its address on the rack)."""

    def probes_dhcp_range(self) -> bool:
        """Whether discovery also probes the inventory's DHCP dynamic range."""
        return True

    def candidates(self, learned: Iterable[str] = ()) -> list[str]:
        """Addresses discovery probes, in order: every inventory address (full-mode DHCP hands
        out exactly those), the SSH addresses of ``boot: ssh`` nodes, the addresses learned
        while nodes booted (proxy mode: another server's leases), then the DHCP dynamic range
        if the inventory has one."""
        out = [str(n.ip) for n in self.inventory.nodes]
        out += [n.ssh_address for n in self.inventory.nodes if n.boot == "ssh"]
        out += [str(a) for a in learned]
        rng = self.inventory.network.dhcp.range
        if rng is not None and self.probes_dhcp_range():
            out += [str(ipaddress.IPv4Address(i)) for i in range(int(rng.start), int(rng.end) + 1)]
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------------ lifecycle

    async def attach(self, notify: Notify) -> None:
        """Make the rack reachable (start what it needs); idempotent."""
        return None

    def reachable(self) -> bool:
        """Whether live facts can be gathered now without starting anything (plan, status)."""
        return True

    def identity(self) -> str | None:
        """What identifies this rack instance; a change means the machines recorded in the
        state are gone (a new emulated rack). None: no such notion (bare metal)."""
        return None

    def describe(self) -> str:
        return self.kind

    # ------------------------------------------------------------------ host

    @abstractmethod
    def host_checks(self) -> str:
        """What ``check_host`` verifies, for plans."""

    @abstractmethod
    async def check_host(self, *, force: bool) -> str:
        """Run the host checks; raise EnvironmentNotReady naming what is wrong."""

    # ------------------------------------------------------------------ booting

    def boot_assets_cached(self) -> bool:
        """Whether the boot assets this rack needs are in the local cache already."""
        return not self.needs_boot_assets

    @abstractmethod
    def boot_method(self, pending: int) -> str | None:
        """How ``pending`` nodes not yet running get booted, for plans; None when the rack
        boots its machines itself (nothing for the boot stage to do)."""

    def bmc_ca(self) -> Path | None:
        """CA certificate to verify Redfish BMCs with (None: the system trust store)."""
        return None

    @abstractmethod
    async def boot(
        self, *, assets: Mapping[str, Path], force: bool, timeout: float, notify: Notify,
        power: Sequence[str] = (), on_node: NodeNotify | None = None,
        nodes: Sequence[str] | None = None,
    ) -> BootOutcome:
        """Boot ``nodes`` (default: every node) into Talos maintenance mode over the network;
        returns once each has. The nodes
        named in ``power`` (each with a BMC) get a one-time network boot and are powered on
        (cycled when on) through their BMCs once the boot service listens. ``on_node`` gets
        what each node waits for and what was done to it (power); ``notify`` the rest."""

    async def release_boot(self) -> str | None:
        """Stop what ``boot`` left running for the installing nodes (full-mode DHCP), once
        every node is configured; returns a note when something was stopped."""
        return None

    # ------------------------------------------------------------------ Kubernetes

    @abstractmethod
    def kube_endpoint(self) -> str:
        """The Kubernetes API URL the cluster's kubeconfig should point at."""
