"""The emulated rack as a long-lived process: Talos nodes + the Kubernetes API emulator.

    python -m cloudctl.emulate.rack -i inventory.yaml --secrets DIR --dir CLUSTER_DIR/emulator \
        [--faults FILE] [--release-delay S] [--retry-interval S]

``cloudctl bootstrap --emulate`` starts it detached (see :mod:`cloudctl.emulate.rack_control`)
so it outlives a killed bootstrap process, exactly as a real rack outlives its operator's
terminal. It stands in for machines that already PXE-booted into maintenance mode.

- The Kubernetes API emulator is started with the cluster's Kubernetes CA (from the secrets
  bundle) so the kubeconfig the emulated control planes stream is accepted; HelmRelease values
  are checked against the vendored upstream chart schemas (:mod:`cloudctl.emulate.schemas`).
- A Talos node joins Kubernetes (``add_node``) once it runs in normal mode and etcd has been
  bootstrapped — when a kubelet would register.
- ``<dir>/rack.json`` (rewritten atomically whenever it changes) holds the pid, the Talos port,
  the Kubernetes API URL and the counters tests read: Bootstrap RPCs, applies, Upgrade and
  Reset calls, Talos version, installer image and etcd member per node, and
  per HelmRelease its uid, generation and Ready state. No secrets.
- Faults (:mod:`cloudctl.emulate.faults`, a faults file written by ``rack_control``) are
  fixed for the life of the process and listed in ``rack.json`` as ``faults``. The Kubernetes
  ones (:func:`inject_kube_faults`) take effect when their object can exist: ``pdb-blocks-drain``
  when its node registers, ``storage-not-uptodate`` when the LINSTOR controller runs (the
  linstor-cluster release Ready).
- Flux Kustomizations whose GitRepository is local (``file://`` or HTTP on loopback) are
  reconciled for real
  (:mod:`cloudctl.emulate.rack_gitops`): the tree at the branch head is applied.
- HelmReleases whose chart comes from such a GitRepository (the local charts of GitOps mode:
  KubeVirt, CDI, the MetalLB pools) are rendered with the real ``helm`` binary
  (``$CLOUDCTL_HELM`` or ``helm`` on PATH) and their objects installed before the release is
  Ready (:mod:`cloudctl.emulate.kube_helm`). Charts from Helm/OCI repositories are not
  available offline: those releases become Ready without objects (except the vendored CRDs
  of ``CHART_CRDS``). Without a helm binary no chart is rendered; the rack log says so at start and
  ``rack.json`` ``helm`` lists every release installed without its objects and why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ..atomic import write_atomic
from ..capi_catalog import capi_catalog
from ..inventory import load_inventory
from ..inventory.models import Inventory
from ..resources import data_dir, vendored_crds
from ..secrets import SecretsStore
from ..util.images import tag_of
from ..util.jsontext import entry_per_line
from ..util.yamlcache import SAFE_LOADER
from .faults import NODE_KINDS, FaultSet, parse_faults_document
from .kube_api import KubeApiEmulator
from .kube_helm import HelmInstaller
from .rack_control import RACK_FILE, platform_release_names
from .rack_gitops import FileGitKustomizeController, GitChartLocator
from .schemas import chart_values_validators
from .talos_hw import AppliedConfig
from .talos_node import Faults
from .talos_rack import Rack

POLL = 0.05
IDLE_POLL = 0.8
"""Longest pause between looks at the Talos nodes and Git refs when nothing happens."""

def _chart_crd_files(chart_dir: str) -> tuple[tuple[str, str], ...]:
    """The ``crds/`` files of a vendored upstream chart (paths under ``helm-values/``)."""
    root = data_dir("helm-values")
    return tuple(
        ("helm-values", p.relative_to(root).as_posix())
        for p in sorted((root / "_upstream").glob(f"{chart_dir}/*/crds/*.yaml"))
    )


CHART_CRDS: dict[str, tuple[tuple[str, str], ...]] = {
    "metallb": _chart_crd_files("metallb"),
    "piraeus-operator": _chart_crd_files("piraeus"),
    "kamaji": tuple(("helm-values", f) for f in capi_catalog().kamaji_crds),
    capi_catalog().operator_release: tuple(("flux", f) for f in capi_catalog().operator_crds),
}
"""Release -> the vendored CRDs its chart ships (``crds/``): installed by the emulated
helm-controller's action (before the release is Ready), as Helm would install them, since the
chart itself is not available offline."""


def _rack_json(data: dict[str, Any]) -> str:
    return entry_per_line(data, ("nodes",))


NODE_SLOW_DEFAULT = 2.0
APPLY_REJECTED_DEFAULT = "configuration rejected (injected fault)"
COMPONENT_DEFAULT = "operator failed to deploy its components (injected fault)"
RELEASE_DEFAULT = "injected failure"
ETCD_UNHEALTHY_DEFAULT = "etcdserver: request timed out (injected fault)"


def node_faults(faults: FaultSet) -> dict[str, Faults]:
    """Inventory node name -> the Talos emulator's per-node faults."""
    out: dict[str, Faults] = {}
    for f in faults.faults:
        if f.kind not in NODE_KINDS:
            continue
        node = out.setdefault(f.target, Faults())
        if f.kind == "node-unreachable":
            node.unreachable = True
        elif f.kind == "node-slow":
            node.slow = float(f.get("seconds", NODE_SLOW_DEFAULT))
        elif f.kind == "apply-rejected":
            node.apply_fails = str(f.get("message", APPLY_REJECTED_DEFAULT))
        elif f.kind == "upgrade-rollback":
            node.upgrade_rollback = True
        elif f.kind == "etcd-unhealthy":
            node.etcd_error = str(f.get("message", ETCD_UNHEALTHY_DEFAULT))
    return out


def inject_kube_faults(emu: KubeApiEmulator, faults: FaultSet) -> None:
    for f in faults.of_kind("release-fails"):
        emu.fail_release(f.target, str(f.get("reason", "")),
                         str(f.get("message", RELEASE_DEFAULT)),
                         times=f.get("times"), namespace="flux-system")
    for f in faults.of_kind("component-not-deployed"):
        emu.fail_component(f.target, str(f.get("reason", "")),
                           str(f.get("message", COMPONENT_DEFAULT)))
    for f in faults.of_kind("pdb-blocks-drain"):
        emu.guard_node(f.target, policy=f.get("policy"),  # made when the node registers
                       unhealthy=f.get("pod") == "unhealthy")
    for f in faults.of_kind("storage-not-uptodate"):
        node = f.get("node")
        emu.degrade_storage(f.target, node=None if node is None else str(node),
                            state=str(f.get("state", "Outdated")))  # once LINSTOR runs


class RackProcess:
    def __init__(
        self,
        inv: Inventory,
        emu: KubeApiEmulator,
        rack: Rack,
        directory: Path,
        faults: FaultSet | None = None,
    ) -> None:
        self.inv = inv
        self.faults = faults or FaultSet(())
        self.emu = emu
        self.rack = rack
        self.directory = directory
        self.joined: set[str] = set()
        self._kubelets: dict[str, tuple[str, str | None]] = {}
        self.gitops = FileGitKustomizeController(emu, directory / "git-cache")
        self.helm = HelmInstaller.from_environment(
            GitChartLocator(directory / "helm-charts"),
            log=_log,
            chart_crds={name: tuple(_crds(files)) for name, files in CHART_CRDS.items()},
        )
        if self.helm.helm is None:
            _log(f"helm not found ({self.helm.helm_lookup}): HelmReleases become Ready "
                 "without installing their charts' objects (in GitOps mode the KubeVirt and "
                 "CDI custom resources will not exist)")
        else:
            _log(f"helm: {self.helm.helm} ({self.helm.helm_lookup}) renders the charts "
                 "of local GitRepository sources")
        emu.set_helm(self.helm)
        self._last = ""
        self.passes = 0
        """Reconcile passes run so far (an idle rack runs none)."""

    def snapshot(self) -> dict[str, Any]:
        releases = {}
        for hr in self.emu.list("helm.toolkit.fluxcd.io/v2", "HelmRelease"):
            meta = hr["metadata"]
            conds = (hr.get("status") or {}).get("conditions") or []
            ready: dict[str, Any] = next((c for c in conds if c.get("type") == "Ready"), {})
            status = hr.get("status") or {}
            stalled: dict[str, Any] = next((c for c in conds if c.get("type") == "Stalled"), {})
            # flux-system's by name; others (a tenant's CNI release) as <namespace>/<name>
            key = meta["name"] if meta.get("namespace") == "flux-system" else \
                f"{meta.get('namespace')}/{meta['name']}"
            releases[key] = {
                "uid": meta.get("uid"),
                "generation": meta.get("generation"),
                "ready": ready.get("status"),
                "reason": ready.get("reason"),
                "install_failures": status.get("installFailures", 0),
                "upgrade_failures": status.get("upgradeFailures", 0),
                "stalled": stalled.get("status") == "True",
            }
        components = {}
        for api_version, kind in (("kubevirt.io/v1", "KubeVirt"),
                                  ("cdi.kubevirt.io/v1beta1", "CDI")):
            for cr in self.emu.list(api_version, kind):
                components[kind] = {
                    "name": cr["metadata"]["name"],
                    "phase": (cr.get("status") or {}).get("phase"),
                }
        nodes = {
            name: {
                "stage": n.state.stage,
                "bootstrap_rpcs": n.state.bootstrap_rpcs,
                "bootstrap_calls": n.state.bootstrap_calls,
                "apply_calls": n.state.apply_calls,
                "joined": name in self.joined,
                "version": n.state.version,
                "image": n.state.image,
                "upgrades": n.state.upgrades,
                "resets": n.state.resets,
                "etcd_member": n.state.etcd_member_id,
            }
            for name, n in self.rack.nodes.items()
        }
        return {
            "pid": os.getpid(),
            "cluster": self.inv.cluster.name,
            "talos_port": self.rack.port,
            "kube_api_url": self.emu.url,
            "ready": True,
            "bootstrap_rpcs": sum(n["bootstrap_rpcs"] for n in nodes.values()),
            "nodes": nodes,
            "helmreleases": releases,
            "components": components,
            "faults": self.faults.specs(),
            "gitops": {
                "applied": dict(self.gitops.applied),
                "errors": dict(self.gitops.errors),
                "objects_applied": self.gitops.objects_applied,
            },
            "helm": self.helm.snapshot(),
            "passes": self.passes,
        }

    def join_nodes(self) -> None:
        """Running nodes of a bootstrapped cluster register with Kubernetes."""
        if not any(n.state.etcd_member_id is not None for n in self.rack.nodes.values()):
            return
        for node in self.inv.nodes:
            if node.name in self.joined or self.rack.nodes[node.name].state.stage != "running":
                continue
            # reconcile_once runs the pass right after (every node that joined in one pass)
            self.emu.add_node(node.name, str(node.ip), (node.role,), settle=False)
            self.joined.add(node.name)
        for name in self.joined:
            talos = self.rack.nodes[name]
            self.emu.set_kubelet(name, posting=talos.state.stage == "running",
                                 version=self._kubelet_version(name, talos.state.config))

    def _kubelet_version(self, name: str, cfg: AppliedConfig | None) -> str | None:
        """The tag of ``machine.kubelet.image`` of a node's config (parsed once per config)."""
        if cfg is None:
            return None
        cached = self._kubelets.get(name)
        if cached is None or cached[0] is not cfg.text:
            v1 = next((d for d in yaml.load_all(cfg.text, Loader=SAFE_LOADER)
                       if isinstance(d, dict) and d.get("version") == "v1alpha1"), {})
            image = str(((v1.get("machine") or {}).get("kubelet") or {}).get("image") or "")
            cached = (cfg.text, tag_of(image) or None)
            self._kubelets[name] = cached
        return cached[1]

    def publish(self) -> None:
        text = _rack_json(self.snapshot())
        if text != self._last:
            # rewritten after every pass that changed a counter: atomic, not worth an fsync
            write_atomic(self.directory / RACK_FILE, text, mode=0o600, fsync=False)
            self._last = text

    def fingerprint(self) -> tuple[Any, ...]:
        """Cheap to compute, and different whenever something a pass reads has changed: the
        Kubernetes store's revision, every Talos node's state, the GitOps repositories' refs."""
        talos = tuple(
            (n.state.stage, n.state.version, id(n.state.config), n.state.apply_calls,
             n.state.bootstrap_rpcs, n.state.bootstrap_calls, n.state.image, n.state.upgrades,
             n.state.resets, n.state.etcd_member_id, n.state.boot_id)
            for n in self.rack.nodes.values())
        return (self.emu.revision(), talos, self.gitops.fingerprint())

    def reconcile_once(self) -> None:
        self.passes += 1
        self.join_nodes()
        self.gitops.reconcile()
        self.emu.reconcile()
        self.publish()

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile whenever something changed or a timed transition falls due. A write to
        the Kubernetes store or to a Talos node's state wakes the loop at once; Git refs (and
        anything else) are compared through a cheap fingerprint every ``POLL`` seconds while
        things happen, backing off to ``IDLE_POLL`` once nothing has for a while. An idle rack
        runs no pass, writes nothing and starts no git."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def wake_up() -> None:
            loop.call_soon_threadsafe(wake.set)

        self.emu.store.on_write = wake_up
        for node in self.rack.nodes.values():
            node.state.on_change = wake_up
        stop_task = asyncio.ensure_future(stop.wait())
        settled: tuple[Any, ...] | None = None
        due = 0.0
        tick = POLL
        try:
            while not stop.is_set():
                seen = self.fingerprint()
                if seen != settled or time.monotonic() >= due:
                    self.reconcile_once()
                    after = self.fingerprint()
                    # a pass that changed something may have enabled the next step: look again
                    settled = seen if after == seen else None
                    due = min(self.emu.next_due(), self.gitops.next_due())
                    tick = POLL
                else:
                    tick = min(tick * 2, IDLE_POLL)
                wake.clear()
                timeout = max(0.0, min(tick, due - time.monotonic()))
                wake_task = asyncio.ensure_future(wake.wait())
                await asyncio.wait((wake_task, stop_task), timeout=timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
                wake_task.cancel()
        finally:
            self.emu.store.on_write = None
            for node in self.rack.nodes.values():
                node.state.on_change = None
            stop_task.cancel()


def _log(message: str) -> None:
    print(f"rack: {message}", file=sys.stderr, flush=True)


def _crds(files: tuple[tuple[str, str], ...]) -> Iterator[dict[str, Any]]:
    for where, relative in files:
        yield from vendored_crds(where, relative)


async def serve(args: argparse.Namespace) -> None:
    inv = load_inventory(args.inventory).inventory
    faults = FaultSet(())
    if args.faults:
        path = Path(args.faults)
        faults = FaultSet.build(
            parse_faults_document(path.read_text(), source=str(path)),
            nodes=[n.name for n in inv.nodes],
            releases=platform_release_names(),
        )
    bundle = SecretsStore(Path(args.secrets)).load()
    assert bundle.k8s.key is not None
    emu = KubeApiEmulator(
        ca=(bundle.k8s.crt, bundle.k8s.key),
        crd_delay=0.02,
        workload_delay=args.workload_delay,
        source_delay=0.02,
        release_delay=args.release_delay,
        retry_interval=args.retry_interval,
        operator_delay=args.workload_delay,
        values_validators=chart_values_validators(),
        cluster_name=inv.cluster.name,
        kubernetes_version=inv.cluster.kubernetes_version,
    )
    inject_kube_faults(emu, faults)
    emu.start()
    directory = Path(args.dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Rack(inv, port=args.port or None, kube_api_url=emu.url,
                        faults=node_faults(faults)) as rack:
            proc = RackProcess(inv, emu, rack, directory, faults)
            await proc.run(stop)
    finally:
        emu.stop()
        with contextlib.suppress(FileNotFoundError):
            (directory / RACK_FILE).unlink()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run an emulated rack (Talos nodes + Kubernetes API).")
    p.add_argument("-i", "--inventory", required=True)
    p.add_argument("--secrets", required=True, help="secrets directory (Kubernetes CA)")
    p.add_argument("--dir", required=True, help="directory for rack.json")
    p.add_argument("--port", type=int, default=0, help="Talos API port (default: a free one)")
    p.add_argument("--release-delay", type=float, default=0.05)
    p.add_argument("--workload-delay", type=float, default=0.05)
    p.add_argument("--retry-interval", type=float, default=0.4,
                   help="seconds between helm-controller's attempts of a failing release")
    p.add_argument("--faults", metavar="FILE", help="faults file (YAML/JSON list)")
    args = p.parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
