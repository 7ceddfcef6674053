"""Everything a pipeline run works with: the inventory, the rack it drives, where its files
live, and lazily loaded material (secrets, rendered files, Talos credentials).

A resumed run starts with nothing in memory; each property loads or recomputes what an earlier
stage produced (rendering is pure and deterministic, so re-rendering gives the same bytes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..inventory.models import Inventory
from ..rack import Rack
from ..render.files import Files
from ..secrets import SecretsBundle, SecretsStore
from ..talos.client import Credentials
from ..talos.ops import BootstrapState, Discovery
from .events import Events
from .state import PipelineState, StateFile

STATE_FILE = "state.json"
EVENTS_FILE = "events.jsonl"
RENDER_DIR = "render"
KUBECONFIG = "kubeconfig"
BOOTSTRAP_FILE = "bootstrap.json"
DEBUG_LOG = "debug.log"


def default_cluster_dir(inventory_path: Path, cluster: str) -> Path:
    """``<inventory dir>/clusters/<cluster>/``."""
    return inventory_path.resolve().parent / "clusters" / cluster


@dataclass
class Options:
    force: bool = False
    """Serve DHCP in full mode even if another DHCP server answers."""
    timeout: float = 900.0
    """Upper bound for each wait (node install, etcd, workloads, releases)."""
    power: bool = True
    """The boot stage powers nodes with a BMC (one-time PXE, on or cycle); False: --no-power."""
    kernel: Path | None = None
    """--kernel: served instead of the Image Factory kernel (with ``initramfs``)."""
    initramfs: Path | None = None
    """--initramfs: served instead of the Image Factory initramfs."""
    accept_new_host_key: bool = False
    """--accept-new-host-key: pin unknown SSH host keys of ``boot: ssh`` nodes."""

    def given_assets(self) -> dict[str, Path] | None:
        """The boot assets from --kernel/--initramfs, or None (Image Factory)."""
        if self.kernel is None or self.initramfs is None:
            return None
        return {"kernel": self.kernel, "initramfs.xz": self.initramfs}


@dataclass
class Context:
    inventory: Inventory
    inventory_path: Path
    cluster_dir: Path
    secrets_dir: Path
    events: Events
    rack: Rack
    options: Options = field(default_factory=Options)
    warnings: list[str] = field(default_factory=list)
    discovery: Discovery | None = None
    assets: dict[str, Path] | None = None
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

    def save(self, *, durable: bool = True) -> None:
        """Write the state now. ``durable=False`` skips the fsync: per-node progress of many
        nodes at once is written before each event that reports it (a killed run leaves it on
        disk), and the stage's closing ``save`` makes it durable."""
        self.statefile.save(self.state, fsync=durable)

    @property
    def render_dir(self) -> Path:
        return self.cluster_dir / RENDER_DIR

    @property
    def kubeconfig_path(self) -> Path:
        return self.cluster_dir / KUBECONFIG

    @property
    def bootstrap_path(self) -> Path:
        return self.cluster_dir / BOOTSTRAP_FILE

    @property
    def bootstrap_state(self) -> BootstrapState:
        """The one record of the etcd bootstrap (``bootstrap.json``, flock-guarded)."""
        return BootstrapState(self.bootstrap_path)

    @property
    def debug_log(self) -> Path:
        return self.cluster_dir / DEBUG_LOG

    @property
    def poll(self) -> float:
        return self.rack.poll

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

    def candidates(self) -> list[str]:
        """Addresses discovery probes (the rack decides; see ``Rack.candidates``), including
        those learned while the nodes booted."""
        learned = [ns.boot_address for ns in self.state.nodes.values() if ns.boot_address]
        return self.rack.candidates(learned)
