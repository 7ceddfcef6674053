"""The emulated rack: Talos node emulators on loopback aliases plus a Kubernetes API emulator,
in one detached process per cluster directory (``cloudctl emulate start``), reused by later
runs. Its machines boot themselves (they start in maintenance mode), so there is no boot
service, no boot assets and no host network to check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import EnvironmentNotReady
from ..inventory.models import Inventory
from ..talos.client import Endpoint
from .base import BootOutcome, NodeNotify, Notify, Rack


def _process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[-1].split()[19]


class EmulatedRack(Rack):
    kind = "emulated"
    poll = 0.05
    needs_boot_assets = False

    def __init__(
        self, inventory: Inventory, cluster_dir: Path, *, inventory_path: Path,
        secrets_dir: Path,
    ) -> None:
        super().__init__(inventory, cluster_dir)
        self.inventory_path = inventory_path
        self.secrets_dir = secrets_dir
        self._info: Any = None

    def _running(self) -> Any:
        from ..emulate.rack_control import read_rack

        if self._info is None:
            self._info = read_rack(self.cluster_dir)
        return self._info

    def dial(self, address: str) -> Endpoint:
        from ..emulate.talos_rack import loopback_alias

        info = self._running()
        if info is None:
            raise EnvironmentNotReady(
                f"no emulated rack runs for {self.cluster_dir} (cloudctl emulate start)")
        return Endpoint(address, loopback_alias(address), info.talos_port)

    def probes_dhcp_range(self) -> bool:
        return False  # emulated nodes sit at their inventory addresses

    async def attach(self, notify: Notify) -> None:
        if self._running() is not None:
            return
        from ..emulate.rack_control import start_rack
        from ..secrets import SecretsStore

        _, created = SecretsStore(self.secrets_dir).init()
        if created:  # the emulator serves the cluster's CAs, so they must exist first
            notify(f"secrets bundle created at {self.secrets_dir} (0600)")
        info, started = start_rack(self.inventory_path, self.secrets_dir, self.cluster_dir)
        self._info = info
        verb = "started" if started else "reusing"
        notify(f"{verb} emulated rack (pid {info.pid}): Talos API on 127.x.y.z:"
               f"{info.talos_port}, Kubernetes API {info.kube_api_url}")

    def reachable(self) -> bool:
        return self._running() is not None

    def identity(self) -> str | None:
        info = self._running()
        if info is None:
            return None
        return f"emulated pid {info.pid} (start {_process_start(info.pid)})"

    def describe(self) -> str:
        info = self._running()
        return "emulated rack" + (f" (pid {info.pid})" if info is not None else " (not running)")

    def host_checks(self) -> str:
        return "none: the emulated rack has no provisioning network"

    async def check_host(self, *, force: bool) -> str:
        return "no host checks (emulated rack: no provisioning network, no boot assets)"

    def boot_method(self, pending: int) -> str | None:
        return None

    async def boot(
        self, *, assets: Mapping[str, Path], force: bool, timeout: float, notify: Notify,
        power: Sequence[str] = (), on_node: NodeNotify | None = None,
        nodes: Sequence[str] | None = None,
    ) -> BootOutcome:
        return BootOutcome("emulated nodes boot into maintenance mode by themselves")

    def kube_endpoint(self) -> str:
        info = self._running()
        return "" if info is None else str(info.kube_api_url)
