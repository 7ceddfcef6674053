"""Everything a pipeline run works with: the inventory, where its files live, lazily loaded
material (secrets, rendered files, Talos credentials) and how nodes are dialled.

A resumed run starts with nothing in memory; each property loads or recomputes what an earlier
stage produced (rendering is pure and deterministic, so re-rendering gives the same bytes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..inventory.models import Inventory
from ..render.files import Files
from ..secrets import SecretsBundle, SecretsStore
from ..talos.client import Credentials, Endpoint
from ..talos.ops import Discovery
from .events import Events
from .state import PipelineState, StateFile

STATE_FILE = "state.json"
EVENTS_FILE = "events.jsonl"
RENDER_DIR = "render"
KUBECONFIG = "kubeconfig"
BOOTSTRAP_FILE = "bootstrap.json"


def default_cluster_dir(inventory_path: Path, cluster: str) -> Path:
    """``<inventory dir>/clusters/<cluster>/``."""
    return inventory_path.resolve().parent / "clusters" / cluster


@dataclass
class Options:
    emulate: bool = False
    force: bool = False
    """Serve DHCP in full mode even if another DHCP server answers."""
    timeout: float = 900.0
    """Upper bound for each wait (node install, etcd, workloads, releases)."""
    poll: float = 1.0
    fail_releases: tuple[str, ...] = ()
    """Emulator only: HelmReleases to fail (NAME=REASON:MESSAGE)."""


@dataclass
class Context:
    inventory: Inventory
    inventory_path: Path
    cluster_dir: Path
    secrets_dir: Path
    events: Events
    options: Options = field(default_factory=Options)
    warnings: list[str] = field(default_factory=list)
    talos_port: int | None = None
    """Emulated rack: the port every loopback alias serves apid on."""
    discovery: Discovery | None = None
    assets: dict[str, Path] | None = None
    boot_service: Any = None
    """Full-mode DHCP kept answering from the boot stage until the apply stage ends."""
    _bundle: SecretsBundle | None = None
    _files: Files | None = None
    _state: PipelineState | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ files

    @property
    def statefile(self) -> StateFile:
        return StateFile(self.cluster_dir / STATE_FILE, self.inventory.cluster.name)

    @property
    def state(self) -> PipelineState:
        if self._state is None:
            self._state = self.statefile.load()
        return self._state

    def save(self) -> None:
        self.statefile.save(self.state)

    @property
    def render_dir(self) -> Path:
        return self.cluster_dir / RENDER_DIR

    @property
    def kubeconfig_path(self) -> Path:
        return self.cluster_dir / KUBECONFIG

    @property
    def bootstrap_path(self) -> Path:
        return self.cluster_dir / BOOTSTRAP_FILE

    # ------------------------------------------------------------------ material

    @property
    def store(self) -> SecretsStore:
        return SecretsStore(self.secrets_dir)

    @property
    def bundle(self) -> SecretsBundle:
        if self._bundle is None:
            self._bundle = self.store.load()
            self.events.set_secrets(self._bundle.secret_strings())
        return self._bundle

    def set_bundle(self, bundle: SecretsBundle) -> None:
        self._bundle = bundle
        self.events.set_secrets(bundle.secret_strings())

    @property
    def files(self) -> Files:
        if self._files is None:
            from ..render import render_all

            self._files = render_all(self.inventory, self.bundle)
        return self._files

    @property
    def credentials(self) -> Credentials:
        if "creds" not in self._cache:
            text = self.files["talos/talosconfig"].data.decode()
            self._cache["creds"] = Credentials.from_talosconfig(text)
        creds: Credentials = self._cache["creds"]
        return creds

    def configs(self) -> dict[str, bytes]:
        return {
            n.name: self.files[f"talos/nodes/{n.name}.yaml"].data for n in self.inventory.nodes
        }

    # ------------------------------------------------------------------ network

    def dial(self, address: str) -> Endpoint:
        if self.options.emulate:
            from ..emulate.talos_rack import loopback_alias

            if self.talos_port is None:
                raise RuntimeError("emulated rack not attached")
            return Endpoint(address, loopback_alias(address), self.talos_port)
        return Endpoint.of(address)

    def candidates(self) -> list[str]:
        """Addresses discovery probes: every inventory address (full-mode DHCP hands out
        exactly those), then the DHCP dynamic range if the inventory has one."""
        import ipaddress

        out = [str(n.ip) for n in self.inventory.nodes]
        rng = self.inventory.network.dhcp.range
        if rng is not None and not self.options.emulate:
            out += [str(ipaddress.IPv4Address(i)) for i in range(int(rng.start), int(rng.end) + 1)]
        return list(dict.fromkeys(out))
