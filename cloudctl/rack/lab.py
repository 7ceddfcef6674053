"""The VM lab (``cloudctl lab up``): bare metal rehearsed in VMs. The same boot stage as
``MetalRack`` (DHCP/TFTP/HTTP on the inventory's interface), run inside the lab's network
namespace, where that interface is the lab bridge with the boot server's address and the nodes'
BMC addresses are the lab's emulators (sushy-tools for Redfish, virtualbmc for IPMI).

``enter()`` moves the process into the namespace for good; the CLI calls it once, before any
thread or event loop starts, so every later thread (boot service, power, Talos API) lives
there too.

What the boot stage proves here: every VM's firmware network-booted the served kernel and
initramfs (cloudctl's boot service saw each node fetch its initramfs). Discovery and the later
stages need a real Talos image running in the VMs (Image Factory assets, ideally KVM)."""

from __future__ import annotations

from pathlib import Path

from ..errors import EnvironmentNotReady
from ..inventory.models import Inventory
from .metal import MetalRack


class LabRack(MetalRack):
    kind = "lab"

    def __init__(
        self, inventory: Inventory, cluster_dir: Path, *, assets_given: bool = False
    ) -> None:
        super().__init__(inventory, cluster_dir, assets_given=assets_given)
        from ..lab import spec_for

        self.spec = spec_for(inventory, cluster_dir / "lab")

    def enter(self) -> None:
        """Move this process into the lab's network namespace (EnvironmentNotReady when the
        lab is not up or this is not root)."""
        from ..lab import netns

        netns.enter(self.spec.netns)

    def bmc_ca(self) -> Path | None:
        return self.spec.ca_cert if self.spec.ca_cert.exists() else None

    def describe(self) -> str:
        return f"lab (namespace {self.spec.netns}, {len(self.spec.vms)} VM(s))"

    def host_checks(self) -> str:
        return (f"the lab is up (namespace {self.spec.netns}, its libvirtd); "
                + super().host_checks())

    async def check_host(self, *, force: bool) -> str:
        from ..lab import host

        if host.alive(self.spec, "libvirtd") is None:
            raise EnvironmentNotReady(
                f"the lab's libvirtd does not run ({self.spec.lab_dir}): `cloudctl lab up`")
        return f"lab {self.spec.netns} up; " + await super().check_host(force=force)

    def boot_method(self, pending: int) -> str | None:
        net = self.inventory.network
        return (f"serve {net.dhcp.mode}-mode DHCP, TFTP and HTTP on the lab bridge "
                f"{net.interface} (namespace {self.spec.netns}) until {pending} node(s) "
                "fetched their initramfs")
