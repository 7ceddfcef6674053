"""The stages of ``cloudctl bootstrap``: each gathers facts, plans, and runs its plan.

A stage is a ``Stage``: ``facts(ctx)`` reads the state file and, where the rack can be
reached, live facts (nodes over the Talos API, objects over the Kubernetes API); ``plan(inv,
facts)`` is pure and decides, per node or release, what to run or skip and why; ``run(ctx,
plan, facts)`` carries the plan out and returns a one-line summary. ``bootstrap --plan`` prints
the same plans, so each skip rule lives in exactly one place. Running a stage again does no
harm: configured nodes are not re-sent their config, etcd is bootstrapped once
(``ops.bootstrap_once``: marker file + member lists) and server-side apply makes re-applied
objects no-ops.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CloudctlError, InputError, Problem, RemoteError, StateError
from ..inventory.models import Inventory, Node
from ..kube import Applied, Kube, ReleaseStatus, WorkloadStatus
from ..power.ops import boot_power_plan
from ..secrets.store import write_private
from ..talos import ops
from ..talos.client import EtcdMember
from .context import Context
from .hooks import AfterBootstrapHooks, AfterPlatformHooks, BeforeBootHooks
from .plan import Action, StagePlan, plan_of
from .stage import Stage
from .state import NodePhase, now

# --------------------------------------------------------------------------- live facts


async def running_nodes(ctx: Context, nodes: list[Node] | None = None) -> set[str] | None:
    """Nodes answering over mTLS in normal mode now; None when that cannot be known (no
    secrets yet, or the rack is not reachable without starting it)."""
    if not ctx.store.exists() or not ctx.rack.reachable():
        return None
    todo = nodes if nodes is not None else list(ctx.inventory.nodes)

    async def one(node: Node) -> bool:
        ep = ctx.rack.dial(str(node.ip)).named(node.name)
        return await ops.running_version(ep, ctx.credentials, timeout=2.0) is not None

    results = await ops.fan_out((n.name, functools.partial(one, n)) for n in todo)
    return {r.node for r in results if r.ok and r.value}


def live_releases(ctx: Context) -> dict[str, dict[str, Any]] | None:
    """HelmReleases in flux-system by name (live objects), or None when the API is not
    reachable."""
    if not ctx.kubeconfig_path.is_file() or not ctx.rack.reachable():
        return None
    try:
        with Kube.from_kubeconfig(ctx.kubeconfig_path, timeout=3) as kube:
            objs = kube.list("helm.toolkit.fluxcd.io/v2", "HelmRelease", namespace="flux-system")
    except CloudctlError:
        return None
    return {str(o["metadata"]["name"]): o for o in objs}


def live_tenants(ctx: Context) -> dict[str, dict[str, Any]] | None:
    """The inventory's tenants as the cluster shows them (``TenantStatus.as_dict``), or None
    when the API is not reachable."""
    if not ctx.inventory.tenants or not ctx.kubeconfig_path.is_file() or \
            not ctx.rack.reachable():
        return None
    from ..kube.tenants import read_tenant
    from .tenants import wants

    try:
        with Kube.from_kubeconfig(ctx.kubeconfig_path, timeout=3) as kube:
            return {w.name: read_tenant(kube, w.name, w).as_dict()
                    for w in wants(ctx.inventory)}
    except CloudctlError:
        return None


def _phases(ctx: Context) -> dict[str, NodePhase]:
    return {n.name: ctx.state.node(n.name).phase for n in ctx.inventory.nodes}


# --------------------------------------------------------------------------- preflight


@dataclass(frozen=True)
class PreflightFacts:
    secrets: bool
    host_checks: str


class Preflight(Stage):
    name = "preflight"
    needs_rack = False

    async def facts(self, ctx: Context) -> PreflightFacts:
        return PreflightFacts(ctx.store.exists(), ctx.rack.host_checks())

    def plan(self, inv: Inventory, facts: PreflightFacts) -> StagePlan:
        secrets = "present" if facts.secrets else "missing: will be created"
        return plan_of(self.name, self.step(
            Action.RUN, f"validate versions, secrets {secrets}; host: {facts.host_checks}"))

    async def run(self, ctx: Context, plan: StagePlan, facts: PreflightFacts) -> str:
        inv = ctx.inventory
        for w in ctx.warnings:
            ctx.events(self.name, "warn", f"inventory: {w}")
        bundle, created = ctx.store.init()
        ctx.set_bundle(bundle)
        ctx.events(self.name, "info", (f"secrets bundle created at {ctx.secrets_dir} (0600)"
                                       if created else f"secrets present at {ctx.secrets_dir}"))
        from ..catalog import talos_catalog

        if talos_catalog().release(inv.cluster.talos_version) is None:
            raise InputError(Problem("cluster.talosVersion",
                                     f"{inv.cluster.talos_version} is not in the catalog"))
        minor = talos_catalog().minor(inv.cluster.talos_version)
        if minor is not None and not minor.supports_kubernetes(inv.cluster.kubernetes_version):
            raise InputError(Problem("cluster.kubernetesVersion",
                                     f"{inv.cluster.kubernetes_version} is not supported by "
                                     f"Talos {inv.cluster.talos_version}"))
        host = await ctx.rack.check_host(force=ctx.options.force)
        return (f"inventory valid, secrets {'created' if created else 'present'}, versions "
                f"compatible; {host}")


# --------------------------------------------------------------------------- image


@dataclass(frozen=True)
class ImageFacts:
    render_current: bool
    assets_needed: bool
    assets_cached: bool
    assets_given: bool = False
    """--kernel/--initramfs: served instead of the Image Factory assets."""


class Image(Stage):
    name = "image"
    needs_rack = False

    async def facts(self, ctx: Context) -> ImageFacts:
        from ..render.output import plan_tree

        current = False
        if ctx.store.exists() and ctx.render_dir.is_dir():
            try:
                current = plan_tree(ctx.files, ctx.render_dir).empty
            except CloudctlError:
                current = False
        return ImageFacts(current, ctx.rack.needs_boot_assets, ctx.rack.boot_assets_cached(),
                          ctx.options.given_assets() is not None)

    def plan(self, inv: Inventory, facts: ImageFacts) -> StagePlan:
        steps = [self.step(Action.SKIP, "render/ is current", "render") if facts.render_current
                 else self.step(Action.RUN, "render machine configs, image definitions and "
                                "the GitOps tree", "render")]
        if not facts.assets_needed:
            steps.append(self.step(Action.SKIP, "no boot assets needed (the rack boots its "
                                   "machines itself)", "assets"))
        elif facts.assets_given:
            steps.append(self.step(Action.SKIP, "kernel and initramfs given (--kernel/"
                                   "--initramfs): nothing fetched from the Image Factory",
                                   "assets"))
        elif facts.assets_cached:
            steps.append(self.step(Action.SKIP, "kernel and initramfs cached and verified",
                                   "assets"))
        else:
            steps.append(self.step(Action.RUN, "fetch kernel and initramfs from the Image "
                                   "Factory", "assets"))
        return plan_of(self.name, *steps)

    async def run(self, ctx: Context, plan: StagePlan, facts: ImageFacts) -> str:
        from ..render.output import write_tree
        from ..render.schematic import schematic_for, schematic_id

        sid = schematic_id(schematic_for(ctx.inventory))
        ctx.state.facts["schematic"] = sid
        parts = []
        if "render" in plan.targets():
            write_tree(ctx.files, ctx.render_dir, ctx.inventory.cluster.name)
            parts.append(f"rendered {len(ctx.files)} files to {ctx.render_dir}")
        else:
            parts.append(f"{ctx.render_dir} is current")
        parts.append(f"schematic {sid[:12]}")
        if "assets" in plan.targets():
            from ..boot.assets import fetch_assets

            fetched = fetch_assets(ctx.inventory)
            ctx.assets = fetched.paths
            parts.append(f"boot assets cached ({', '.join(sorted(fetched.paths))})")
        return "; ".join(parts)


# --------------------------------------------------------------------------- boot


@dataclass(frozen=True)
class BootFacts:
    running: set[str] | None
    method: str | None
    """How the rack boots the nodes not running; None when it boots them itself."""
    power: bool = True
    """Whether nodes with a BMC are powered through it (False: --no-power)."""


def ssh_boot_plan(node: Node) -> str:
    """How the boot stage installs a ``boot: ssh`` node, for plans (pure)."""
    ssh = node.ssh
    assert ssh is not None  # the inventory model requires it with boot: ssh
    where = f"{ssh.user}@{node.ssh_address}:{ssh.port}"
    if ssh.method == "kexec":
        return f"over SSH ({where}): kexec into the Talos kernel and initramfs"
    return (f"over SSH ({where}): write the factory metal image to {node.ssh_disk}, verify, "
            "reboot")


class Boot(Stage):
    name = "boot"

    async def facts(self, ctx: Context) -> BootFacts:
        running = await running_nodes(ctx)
        pending = len(ctx.inventory.nodes) - len(running or ())
        return BootFacts(running, ctx.rack.boot_method(pending), ctx.options.power)

    def plan(self, inv: Inventory, facts: BootFacts) -> StagePlan:
        if facts.method is None:
            return plan_of(self.name, self.step(
                Action.SKIP, "the rack boots its machines itself (emulated: already in "
                "maintenance mode)"))
        running = facts.running or set()
        if facts.running is not None and all(n.name in running for n in inv.nodes):
            return plan_of(self.name, self.step(
                Action.SKIP, "every node already runs Talos in normal mode"))
        unknown = "" if facts.running is not None else " (live state unknown)"
        return plan_of(self.name, *(
            self.step(Action.SKIP, "runs Talos in normal mode", n.name) if n.name in running
            else self.step(Action.RUN, f"{ssh_boot_plan(n)}{unknown}", n.name)
            if n.boot == "ssh"
            else self.step(Action.RUN, f"{facts.method}{unknown}; "
                           f"{boot_power_plan(n, facts.power)}", n.name)
            for n in inv.nodes))

    async def run(self, ctx: Context, plan: StagePlan, facts: BootFacts) -> str:
        inv = ctx.inventory
        if facts.method is None:  # the rack boots its machines itself
            return (await ctx.rack.boot(assets={}, force=ctx.options.force,
                                        timeout=ctx.options.timeout,
                                        notify=lambda line: ctx.events(self.name, "info",
                                                                       line))).summary
        targets = plan.targets()
        over_ssh = [n for n in targets if inv.node(n).boot == "ssh"]
        pxe = [n for n in targets if n not in over_ssh]
        kexec = any(getattr(inv.node(n).ssh, "method", None) == "kexec" for n in over_ssh)
        if pxe or kexec:
            given = ctx.options.given_assets()
            if given is not None:
                ctx.assets = given
            elif ctx.assets is None:
                from ..boot.assets import fetch_assets

                ctx.assets = fetch_assets(inv).paths
        power = [n for n in pxe if ctx.options.power and inv.node(n).bmc is not None]
        parts: list[str] = []
        if over_ssh:
            stop = threading.Event()
            try:
                parts.append(await asyncio.to_thread(self._install_over_ssh, ctx, over_ssh,
                                                     stop))
            except BaseException:  # interrupted: the SSH streams stop at their next chunk
                stop.set()
                raise
        if pxe:
            out = await ctx.rack.boot(
                assets=ctx.assets or {}, force=ctx.options.force, timeout=ctx.options.timeout,
                notify=lambda line: ctx.events(self.name, "info", line), power=power,
                on_node=lambda node, phase, line: ctx.events(self.name, "node", line,
                                                             node=node, phase=phase),
                nodes=pxe)
            for name, address in out.learned.items():
                ctx.state.node(name).boot_address = address
            parts.append(out.summary)
        ctx.save()
        return "; ".join(parts)

    def _install_over_ssh(self, ctx: Context, names: list[str], stop: threading.Event) -> str:
        """``boot: ssh`` nodes: install-ssh (image or kexec, per node's ssh.method)."""
        from ..boot.assets import disk_image_files, fetch_assets
        from ..ssh.image import inspect
        from ..ssh.run import SshInstall, install_over_ssh

        inv = ctx.inventory
        opts = SshInstall(ctx.cluster_dir, accept_new_host_key=ctx.options.accept_new_host_key,
                          timeout=min(ctx.options.timeout, 30.0), stop=stop)
        assets = ctx.assets or {}
        install_over_ssh(
            inv, [inv.node(n) for n in names], opts,
            lambda node, kind, msg: ctx.events(self.name, "node", msg, node=node,
                                               phase="install-ssh"),
            image=lambda: inspect(fetch_assets(inv, files=disk_image_files(
                inv.image.arch)).paths["disk"]),
            kexec_assets=lambda: (assets["kernel"], assets["initramfs.xz"]),
            secrets=ctx.events.add_secrets)
        return f"installed over SSH: {', '.join(names)} (rebooting into maintenance mode)"


# --------------------------------------------------------------------------- discover


@dataclass(frozen=True)
class NodeFacts:
    running: set[str] | None
    phases: Mapping[str, NodePhase]
    candidates: int


class NodeStage(Stage):
    """A stage planned per node from which nodes run in normal mode now."""

    async def facts(self, ctx: Context) -> NodeFacts:
        return NodeFacts(await running_nodes(ctx), _phases(ctx), len(ctx.candidates()))


class Discover(NodeStage):
    name = "discover"

    def plan(self, inv: Inventory, facts: NodeFacts) -> StagePlan:
        unknown = "" if facts.running is not None else " (live state unknown)"
        steps = []
        for node in inv.nodes:
            if facts.running is not None and node.name in facts.running:
                steps.append(self.step(Action.SKIP, f"runs in normal mode on {node.ip}",
                                       node.name))
            else:
                steps.append(self.step(
                    Action.RUN, f"find by MAC {', '.join(node.macs)} in maintenance mode "
                    f"({facts.candidates} address(es) probed){unknown}", node.name))
        return plan_of(self.name, *steps)

    async def run(self, ctx: Context, plan: StagePlan, facts: NodeFacts) -> str:
        inv = ctx.inventory
        wanted = set(plan.targets())
        found = await ops.discover(inv, ctx.candidates(), dial=ctx.rack.dial)
        ctx.discovery = found
        running = set(facts.running or ())
        for node in inv.nodes:
            ns = ctx.state.node(node.name)
            if node.name in found.nodes:
                d = found.nodes[node.name]
                if ns.phase == NodePhase.PENDING:
                    ns.phase = NodePhase.DISCOVERED
                ns.maintenance_endpoint = d.address
                ctx.events(self.name, "node", f"found in maintenance mode at {d.address}",
                           node=node.name, phase="discovered")
            elif node.name in running:
                if ns.phase in (NodePhase.PENDING, NodePhase.DISCOVERED):
                    ns.phase = NodePhase.APPLIED
                ns.endpoint = str(node.ip)
                ctx.events(self.name, "node", f"already configured, running on {node.ip}",
                           node=node.name, phase="running")
        for d in found.unknown:
            ctx.events(self.name, "warn", f"machine at {d.address} in maintenance mode is not "
                       f"in the inventory (MACs {', '.join(d.macs)})")
        # nodes installing right now (config applied by a killed run) are neither in
        # maintenance mode nor running yet; the apply stage waits for them
        installing = {n.name for n in inv.nodes if n.name in wanted
                      and n.name not in found.nodes
                      and ctx.state.node(n.name).phase in (NodePhase.APPLYING,
                                                           NodePhase.APPLIED)}
        excused = running | installing
        problems = [p for p in ops.preflight(inv, found)
                    if not any(p.path == f"nodes[{i}]" and n.name in excused
                               for i, n in enumerate(inv.nodes))]
        ctx.save()
        if problems:
            raise InputError(problems, source="preflight")
        return (f"{len(found.nodes)} node(s) in maintenance mode, {len(running)} already "
                "running" + (f", {len(installing)} installing" if installing else ""))


# --------------------------------------------------------------------------- apply


class Apply(NodeStage):
    name = "apply"

    def plan(self, inv: Inventory, facts: NodeFacts) -> StagePlan:
        unknown = "" if facts.running is not None else " (live state unknown)"
        steps = []
        for node in inv.nodes:
            phase = facts.phases.get(node.name, NodePhase.PENDING)
            if facts.running is not None and node.name in facts.running:
                steps.append(self.step(Action.SKIP, "runs in normal mode; its config is not "
                                       "sent again", node.name))
            elif phase in (NodePhase.APPLYING, NodePhase.APPLIED, NodePhase.READY):
                steps.append(self.step(Action.RUN, "wait for it to finish installing, or send "
                                       f"its config if it is back in maintenance mode{unknown}",
                                       node.name))
            else:
                steps.append(self.step(Action.RUN, "send its machine config, wait for normal "
                                       f"mode on {node.ip}{unknown}", node.name))
        return plan_of(self.name, *steps)

    async def run(self, ctx: Context, plan: StagePlan, facts: NodeFacts) -> str:
        inv = ctx.inventory
        if ctx.discovery is None:
            ctx.discovery = await ops.discover(inv, ctx.candidates(), dial=ctx.rack.dial)
        found = ctx.discovery
        configs = ctx.configs()
        creds = ctx.credentials
        wanted = set(plan.targets())

        slots = ops.ApplySlots()

        def on_event(node: str, message: str) -> None:
            ctx.events(self.name, "info", message, node=node)

        def job(node: Node) -> Callable[[], Awaitable[str]]:
            async def run() -> str:
                ns = ctx.state.node(node.name)
                d = found.nodes.get(node.name)
                if d is None:
                    ep = ctx.rack.dial(str(node.ip)).named(node.name)
                    async with slots.wait:
                        version = await ops.wait_running(ep, creds, timeout=ctx.options.timeout,
                                                         poll=0.1)
                    what = f"already configured, running {version.tag}"
                else:
                    ns.phase = NodePhase.APPLYING
                    ctx.save(durable=False)
                    ctx.events(self.name, "node", f"applying config at {d.address}",
                               node=node.name, phase="applying")
                    out = await ops.apply_node(node, d, configs[node.name], creds,
                                               dial=ctx.rack.dial, timeout=ctx.options.timeout,
                                               on_event=on_event, slots=slots)
                    what = f"applied, running {out.version} on {out.address}"
                if ns.phase in (NodePhase.PENDING, NodePhase.DISCOVERED, NodePhase.APPLYING):
                    ns.phase = NodePhase.APPLIED
                ns.endpoint = str(node.ip)
                ns.error = None
                ctx.save(durable=False)
                ctx.events(self.name, "node", what, node=node.name, phase="applied")
                return what
            return run

        todo = [n for n in inv.nodes if n.name in wanted]
        # every node's task runs at once; the slots bound the sends and the watches
        results = await ops.fan_out(((n.name, job(n)) for n in todo),
                                    concurrency=max(1, len(todo)))
        for r in results:
            if not r.ok:
                ctx.state.node(r.node).error = str(r.error)
        ctx.save()
        ops.raise_failures(results, "apply")
        ctx.discovery = None
        note = await ctx.rack.release_boot()
        if note:
            ctx.events(self.name, "info", note)
        return f"{len(results)} node(s) configured, running in normal mode"


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class BootstrapFacts:
    marker: dict[str, Any]
    """``bootstrap.json``: the one record of the etcd bootstrap."""
    marker_path: str
    views: dict[str, list[EtcdMember] | None] | None
    """Each control plane's etcd members (None: no etcd yet); None when not reachable."""
    boot_id: str | None
    """Boot ID of the bootstrapped node when no control plane has members."""
    now: float = field(default_factory=time.time)


class Bootstrap(Stage):
    name = "bootstrap"

    async def facts(self, ctx: Context) -> BootstrapFacts:
        marker = ctx.bootstrap_state.read()
        views = None
        boot_id = None
        if ctx.store.exists() and ctx.rack.reachable():
            try:
                views = await ops.etcd_views(ctx.inventory, ctx.credentials, dial=ctx.rack.dial,
                                             timeout=5.0)
            except CloudctlError:
                views = None
            done_on = marker.get("bootstrapped")
            if views is not None and not any(views.values()) and isinstance(done_on, str):
                node = next((n for n in ctx.inventory.controlplanes if n.name == done_on), None)
                if node is not None:
                    boot_id = await ops.node_boot_id(node, ctx.credentials, dial=ctx.rack.dial)
        return BootstrapFacts(marker, str(ctx.bootstrap_path), views, boot_id)

    def plan(self, inv: Inventory, facts: BootstrapFacts) -> StagePlan:
        done_on = facts.marker.get("bootstrapped")
        chosen = ops.bootstrap_node(inv).name
        if facts.views is not None:
            stale = ops.stale_marker_problem(Path(facts.marker_path), facts.marker, facts.views,
                                             facts.boot_id, facts.now)
            if stale:
                return plan_of(self.name, self.step(Action.BLOCK, stale, error=StateError))
        views = facts.views
        if isinstance(done_on, str):
            if views is not None and all(views.values()):
                return plan_of(self.name, self.step(
                    Action.SKIP, f"etcd bootstrapped on {done_on} (recorded in "
                    f"{facts.marker_path}); every control plane is a member"))
            return plan_of(self.name, self.step(
                Action.RUN, f"etcd bootstrapped on {done_on}: wait until every control plane "
                "is a member (Bootstrap is never called twice)"))
        existing = sorted(n for n, v in (views or {}).items() if v)
        if existing:
            return plan_of(self.name, self.step(
                Action.RUN, f"etcd already has members on {', '.join(existing)}: record it, do "
                "not call Bootstrap", existing[0]))
        unknown = "" if views is not None else " (live state unknown)"
        return plan_of(self.name, self.step(
            Action.RUN, f"Bootstrap etcd once, then wait for every control plane{unknown}",
            chosen))

    async def run(self, ctx: Context, plan: StagePlan, facts: BootstrapFacts) -> str:
        def on_event(node: str, message: str) -> None:
            ctx.events(self.name, "info", message, node=node)

        out = await ops.bootstrap_once(ctx.inventory, ctx.credentials, ctx.bootstrap_state,
                                       dial=ctx.rack.dial, timeout=ctx.options.timeout,
                                       on_event=on_event)
        for n in ctx.inventory.controlplanes:
            ctx.state.node(n.name).phase = NodePhase.READY
        ctx.save()
        verb = "Bootstrap called" if out.called else "already bootstrapped"
        return f"{verb} on {out.node}; etcd members: {', '.join(out.members)}"


# --------------------------------------------------------------------------- kubeconfig


class Kubeconfig(Stage):
    name = "kubeconfig"

    def plan(self, inv: Inventory, facts: Any) -> StagePlan:
        return plan_of(self.name, self.step(
            Action.RUN, "fetch the admin kubeconfig from a control plane (0600) and check the "
            "API answers"))

    async def run(self, ctx: Context, plan: StagePlan, facts: Any) -> str:
        data = await ops.kubeconfig(ctx.inventory, ctx.credentials, dial=ctx.rack.dial)
        write_private(ctx.kubeconfig_path, data)
        with Kube.from_kubeconfig(ctx.kubeconfig_path, timeout=10) as kube:
            nodes = kube.list("v1", "Node")
        for n in ctx.inventory.nodes:
            ctx.state.node(n.name).phase = NodePhase.READY
        ctx.save()
        expected = ctx.rack.kube_endpoint().rstrip("/")
        if expected and kube.server.rstrip("/") != expected:
            ctx.events(self.name, "warn", f"the kubeconfig points at {kube.server}, but the "
                       f"rack's Kubernetes API is {expected}")
        return (f"kubeconfig written to {ctx.kubeconfig_path} (0600); API {kube.server} "
                f"answers, {len(nodes)} node(s) registered")


# --------------------------------------------------------------------------- flux, platform


def _kube(ctx: Context) -> Kube:
    if not ctx.kubeconfig_path.is_file():
        raise RemoteError(f"no kubeconfig at {ctx.kubeconfig_path}: run the kubeconfig stage")
    return Kube.from_kubeconfig(ctx.kubeconfig_path)


def _on_applied(ctx: Context, stage: str) -> Callable[[Applied], None]:
    def cb(a: Applied) -> None:
        release = a.ref.kind == "HelmRelease"
        ctx.events(stage, "release" if release else "info", f"{a.ref} {a.action}",
                   node=a.ref.name if release else None, phase="applied" if release else None)
    return cb


class Flux(Stage):
    name = "flux"

    def plan(self, inv: Inventory, facts: Any) -> StagePlan:
        return plan_of(self.name, self.step(
            Action.RUN, "server-side apply gitops/flux-system/ (unchanged objects are no-ops), "
            "wait for the controllers"))

    async def run(self, ctx: Context, plan: StagePlan, facts: Any) -> str:
        from .platform import install_flux

        with _kube(ctx) as kube:
            refs = install_flux(kube, ctx.files, timeout=ctx.options.timeout, poll=ctx.poll,
                                on_applied=_on_applied(ctx, self.name))
        return f"Flux installed; {len(refs)} controller(s) available"


@dataclass(frozen=True)
class PlatformFacts:
    live: dict[str, dict[str, Any]] | None
    """HelmReleases on the cluster by name; None when the API is not reachable."""
    recorded: dict[str, str]
    """release -> state recorded by earlier runs (local charts applied directly)."""
    rendered: dict[str, dict[str, Any]]
    """release -> the rendered HelmRelease spec."""
    direct: frozenset[str]
    """Releases cloudctl applies itself (local charts without a Git source)."""


def release_matches(live: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Whether a live HelmRelease is Ready for the rendered spec (chart version and values)."""
    from ..kube import release_status

    if release_status(live).state != "ready":
        return False
    have = live.get("spec") or {}
    return bool(have.get("chart") == spec.get("chart") and
                (have.get("values") or {}) == (spec.get("values") or {}))


class Platform(Stage):
    name = "platform"

    async def facts(self, ctx: Context) -> PlatformFacts:
        from ..render.gitops import local_chart_manifests
        from .platform import rendered_release_specs

        inv = ctx.inventory
        direct = frozenset() if inv.gitops else frozenset(local_chart_manifests(inv))
        rendered = rendered_release_specs(ctx.files) if ctx.store.exists() else {}
        recorded = {k: str(v.get("state")) for k, v in ctx.state.releases.items()}
        return PlatformFacts(live_releases(ctx), recorded, rendered, direct)

    def plan(self, inv: Inventory, facts: PlatformFacts) -> StagePlan:
        from ..render.gitops import platform_releases

        steps = []
        for rel in platform_releases(inv):
            live = (facts.live or {}).get(rel.name)
            spec = facts.rendered.get(rel.name)
            if rel.name in facts.direct:
                ready = facts.recorded.get(rel.name) == "ready" and facts.live is not None
            else:
                ready = live is not None and spec is not None and release_matches(live, spec)
            if ready:
                why = ("applied directly and ready in an earlier run" if rel.name in facts.direct
                       else "Ready with the rendered chart and values")
                steps.append(self.step(Action.SKIP, why, rel.name))
                continue
            after = f" after {', '.join(rel.depends_on)}" if rel.depends_on else ""
            how = ("apply its manifests directly (local chart, no Git source)"
                   if rel.name in facts.direct else f"HelmRelease {rel.chart} {rel.version}")
            unknown = "" if facts.live is not None else " (live state unknown)"
            steps.append(self.step(Action.RUN, f"{how}{after}, wait Ready{unknown}", rel.name))
        return plan_of(self.name, *steps)

    async def run(self, ctx: Context, plan: StagePlan, facts: PlatformFacts) -> str:
        from .platform import install_platform_direct, install_platform_gitops

        def on_status(st: ReleaseStatus) -> None:
            ctx.state.releases[st.name] = {"state": st.state, "reason": st.reason,
                                           "message": st.message, "at": now(),
                                           "attempts": st.attempts}
            ctx.save()
            ctx.events(self.name, "release", st.describe(), node=st.name, phase=st.state,
                       error=f"{st.reason}: {st.message}" if st.state == "failed" else None)

        def on_local(name: str, phase: str) -> None:
            ctx.state.releases[name] = {"state": phase, "reason": "", "mode": "direct",
                                        "message": "local chart applied by cloudctl",
                                        "at": now()}
            ctx.save()
            ctx.events(self.name, "release", f"local chart {name}: {phase} (applied directly)",
                       node=name, phase=phase)

        def on_operator(st: WorkloadStatus) -> None:
            ctx.events(self.name, "info" if st.ready else "wait",
                       f"{st.ref}: {'deployed' if st.ready else 'waiting'} ({st.detail})")

        inv = ctx.inventory
        with _kube(ctx) as kube:
            if inv.gitops is not None:
                from .gitpush import push_tree

                rev = push_tree(ctx.files, inv, cache=ctx.cluster_dir / "gitops.git")
                ctx.events(self.name, "info", f"pushed gitops/ to {inv.gitops.repo} ({rev})")
                install_platform_gitops(kube, inv, ctx.files, timeout=ctx.options.timeout,
                                        poll=ctx.poll, on_applied=_on_applied(ctx, self.name),
                                        on_status=on_status, on_operator=on_operator)
            else:
                install_platform_direct(kube, inv, ctx.files, timeout=ctx.options.timeout,
                                        poll=ctx.poll, on_applied=_on_applied(ctx, self.name),
                                        on_status=on_status, on_local=on_local,
                                        on_operator=on_operator)
        n = sum(1 for r in ctx.state.releases.values() if r.get("state") == "ready")
        return f"{n} release(s) ready"


@dataclass(frozen=True)
class TenantFacts:
    live: dict[str, dict[str, Any]] | None
    """Tenant name -> its status on the cluster (``TenantStatus.as_dict``); None when the API
    is not reachable."""


class Tenants(Stage):
    name = "tenants"

    async def facts(self, ctx: Context) -> TenantFacts:
        return TenantFacts(live_tenants(ctx))

    def plan(self, inv: Inventory, facts: TenantFacts) -> StagePlan:
        direct = inv.gitops is None
        steps = []
        for tenant in inv.tenants:
            live = (facts.live or {}).get(tenant.name)
            pools = ", ".join(f"{p.name} x{p.replicas}" for p in tenant.workers)
            if live is not None and live["ready"]:
                steps.append(self.step(Action.SKIP, f"Ready ({tenant.kubernetes_version}, "
                                       f"control plane {live['controlPlane']['replicas']}, "
                                       f"{pools})",
                                       tenant.name))
                continue
            how = ("apply gitops/tenants/" + tenant.name if direct
                   else "push gitops/, the Flux Kustomization cloudctl-tenants applies it")
            steps.append(self.step(
                Action.RUN, f"{how}: Kamaji control plane x{tenant.control_plane.replicas}, "
                f"KubeVirt workers {pools}, wait Ready", tenant.name))
        if direct:
            steps.append(self.step(Action.RUN, "delete tenant objects an earlier render applied "
                                   "that the inventory no longer has"))
        else:
            steps.append(self.step(Action.RUN, "push gitops/ (no commit when unchanged): Flux "
                                   "prunes what left the tree"))
        return plan_of(self.name, *steps)

    async def run(self, ctx: Context, plan: StagePlan, facts: TenantFacts) -> str:
        from ..kube.tenants import TenantStatus
        from .tenants import install_tenants

        def on_status(st: TenantStatus) -> None:
            ctx.events(self.name, "info" if st.ready else "wait",
                       f"tenant {st.name}: {st.detail}", node=st.name,
                       phase="ready" if st.ready else "waiting")

        def on_deleted(ref: Any) -> None:
            ctx.events(self.name, "info", f"{ref} deleted (no longer in the inventory)")

        def on_applied(a: Applied) -> None:  # a tenant's CNI release is not a platform release
            ctx.events(self.name, "info", f"{a.ref} {a.action}")

        inv = ctx.inventory
        if inv.gitops is not None:
            # the tree with this inventory's tenants (the platform stage pushes only when a
            # release changed); an unchanged tree makes no commit
            from .gitpush import push_tree

            rev = push_tree(ctx.files, inv, cache=ctx.cluster_dir / "gitops.git")
            ctx.events(self.name, "info", f"gitops/ at {inv.gitops.repo} is {rev}")
        with _kube(ctx) as kube:
            done = install_tenants(kube, ctx.inventory, ctx.files, timeout=ctx.options.timeout,
                                   poll=ctx.poll, on_applied=on_applied,
                                   on_deleted=on_deleted, on_status=on_status)
        if not done:
            return "no tenants in the inventory"
        return f"{len(done)} tenant(s) ready: " + ", ".join(
            f"{t.name} ({t.control_plane} control plane, "
            + ", ".join(f"{p.name} {p.ready}/{p.desired}" for p in t.pools) + ")"
            for t in done)


class Done(Stage):
    name = "done"
    needs_rack = False

    def plan(self, inv: Inventory, facts: Any) -> StagePlan:
        return plan_of(self.name, self.step(Action.RUN, "report the cluster"))

    async def run(self, ctx: Context, plan: StagePlan, facts: Any) -> str:
        return (f"cluster {ctx.inventory.cluster.name} is up: {len(ctx.inventory.nodes)} "
                f"node(s), kubeconfig at {ctx.kubeconfig_path}")


STAGE_LIST: tuple[Stage, ...] = (Preflight(), Image(), BeforeBootHooks(), Boot(), Discover(),
                                 Apply(), Bootstrap(), AfterBootstrapHooks(), Kubeconfig(),
                                 Flux(), Platform(), AfterPlatformHooks(), Tenants(), Done())
STAGE_BY_NAME: dict[str, Stage] = {s.name: s for s in STAGE_LIST}
