"""The stages of ``cloudctl bootstrap``. Each checks persisted state and live facts first, so
running it again does no harm: configured nodes are not re-sent their config, etcd is
bootstrapped once (``ops.bootstrap_once``: marker file + member lists), and server-side apply
makes re-applied objects no-ops.

A stage is ``async def stage(ctx) -> str`` (a one-line summary) or raises ``Skip(reason)``.
"""

from __future__ import annotations

import functools
import json
import socket
import subprocess
from collections.abc import Awaitable, Callable

from ..errors import EnvironmentNotReady, InputError, Problem, RemoteError
from ..inventory.models import Node
from ..kube import Applied, Kube, ReleaseStatus
from ..secrets.store import write_private
from ..talos import ops
from .context import Context
from .state import now


class Skip(Exception):
    """The stage has nothing to do in this mode (the reason is recorded)."""


# --------------------------------------------------------------------------- preflight


def _interface_addresses(interface: str) -> list[str]:
    try:
        out = subprocess.run(
            ["ip", "-j", "addr", "show", "dev", interface],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])]


def host_network_problems(ctx: Context) -> list[Problem]:
    """The provisioning interface exists and carries the boot-server address."""
    net = ctx.inventory.network
    names = {name for _, name in socket.if_nameindex()}
    if net.interface not in names:
        return [Problem("network.interface", f"interface {net.interface!r} does not exist on "
                        f"this host (have: {', '.join(sorted(names))})")]
    have = _interface_addresses(net.interface)
    if str(net.boot_server) not in have:
        return [Problem("network.bootServer", f"{net.boot_server} is not an address of "
                        f"{net.interface} (has: {', '.join(have) or 'none'})")]
    return []


async def preflight(ctx: Context) -> str:
    inv = ctx.inventory
    for w in ctx.warnings:
        ctx.events("preflight", "warn", f"inventory: {w}")
    bundle, created = ctx.store.init()
    ctx.set_bundle(bundle)
    ctx.events("preflight", "info", (f"secrets bundle created at {ctx.secrets_dir} (0600)"
                                     if created else f"secrets present at {ctx.secrets_dir}"))
    from ..catalog import talos_catalog

    release = talos_catalog().release(inv.cluster.talos_version)
    if release is None:
        raise InputError(Problem("cluster.talosVersion",
                                 f"{inv.cluster.talos_version} is not in the catalog"))
    minor = talos_catalog().minor(inv.cluster.talos_version)
    if minor is not None and not minor.supports_kubernetes(inv.cluster.kubernetes_version):
        raise InputError(Problem("cluster.kubernetesVersion",
                                 f"{inv.cluster.kubernetes_version} is not supported by Talos "
                                 f"{inv.cluster.talos_version}"))
    if ctx.options.emulate:
        ctx.events("preflight", "info", "skipped host checks (interface, boot-server address, "
                   "rogue DHCP, boot assets): --emulate uses an emulated rack with no "
                   "provisioning network")
        return ("inventory valid, secrets "
                f"{'created' if created else 'present'}, versions compatible")
    problems = host_network_problems(ctx)
    if problems:
        raise EnvironmentNotReady("\n".join(str(p) for p in problems))
    if inv.network.dhcp.mode == "full":
        from ..boot.dhcp.probe import ensure_no_other_server

        await ensure_no_other_server(inv.network.interface, force=ctx.options.force)
    from ..boot.assets import find_ipxe_binaries

    if not find_ipxe_binaries():
        raise EnvironmentNotReady("no iPXE binaries found (install the ipxe package)")
    assets = assets_availability(ctx)
    return (f"inventory valid, secrets present, host network ready, no other DHCP server, "
            f"boot assets {assets}")


def assets_availability(ctx: Context) -> str:
    """``cached`` when the kernel and initramfs of this schematic/version are in the cache,
    ``fetchable`` when the Image Factory answers a TCP connection; else EnvironmentNotReady."""
    from urllib.parse import urlsplit

    from ..boot.assets import asset_files, default_cache_dir
    from ..render.schematic import schematic_for, schematic_id

    inv = ctx.inventory
    directory = default_cache_dir() / schematic_id(schematic_for(inv)) / inv.cluster.talos_version
    if all((directory / f).is_file() for f in asset_files(inv.image.arch).values()):
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


# --------------------------------------------------------------------------- image


async def image(ctx: Context) -> str:
    from ..render.output import write_tree
    from ..render.schematic import schematic_for, schematic_id

    files = ctx.files
    write_tree(files, ctx.render_dir, ctx.inventory.cluster.name)
    sid = schematic_id(schematic_for(ctx.inventory))
    ctx.state.facts["schematic"] = sid
    msg = f"rendered {len(files)} files to {ctx.render_dir}; schematic {sid[:12]}"
    if ctx.options.emulate:
        return msg + "; boot assets not fetched (emulated nodes are already booted)"
    from ..boot.assets import fetch_assets

    fetched = fetch_assets(ctx.inventory)
    ctx.assets = fetched.paths
    return msg + f"; boot assets cached ({', '.join(sorted(fetched.paths))})"


# --------------------------------------------------------------------------- boot


async def running_nodes(ctx: Context, nodes: list[Node] | None = None) -> set[str]:
    """Nodes answering over mTLS in stage running (live fact)."""
    todo = nodes if nodes is not None else list(ctx.inventory.nodes)

    async def one(node: Node) -> bool:
        ep = ctx.dial(str(node.ip)).named(node.name)
        return await ops.running_version(ep, ctx.credentials, timeout=2.0) is not None

    results = await ops.fan_out((n.name, functools.partial(one, n)) for n in todo)
    return {r.node for r in results if r.ok and r.value}


async def boot(ctx: Context) -> str:
    if ctx.options.emulate:
        raise Skip("emulated rack: the emulator stands in for nodes that already PXE-booted")
    running = await running_nodes(ctx)
    if len(running) == len(ctx.inventory.nodes):
        raise Skip("every node already runs Talos in normal mode")
    from ..boot.assets import find_ipxe_binaries, stage_tftp_root
    from ..boot.service import BootService

    tftp_root = ctx.cluster_dir / "tftp"
    stage_tftp_root(find_ipxe_binaries(), tftp_root)
    if ctx.assets is None:
        from ..boot.assets import fetch_assets

        ctx.assets = fetch_assets(ctx.inventory).paths

    def on_event(event: object) -> None:
        ctx.events("boot", "info", str(event))

    # full mode: Talos in maintenance mode asks DHCP again after the initramfs, so DHCP keeps
    # answering until the configs are applied (closed at the end of the apply stage)
    keep = ctx.inventory.network.dhcp.mode == "full"
    service = BootService(ctx.inventory, assets=ctx.assets, tftp_root=tftp_root,
                          force=ctx.options.force, timeout=ctx.options.timeout,
                          on_event=on_event, keep_dhcp=keep)
    result = await service.run()
    result.check()
    if keep:
        ctx.boot_service = service
    return "every node fetched its initramfs" + ("; DHCP stays up until apply" if keep else "")


# --------------------------------------------------------------------------- discover


async def discover(ctx: Context) -> str:
    inv = ctx.inventory
    found = await ops.discover(inv, ctx.candidates(), dial=ctx.dial)
    ctx.discovery = found
    missing = [n for n in inv.nodes if n.name not in found.nodes]
    running = await running_nodes(ctx, missing) if missing else set()
    for node in inv.nodes:
        ns = ctx.state.node(node.name)
        if node.name in found.nodes:
            d = found.nodes[node.name]
            if ns.phase == "pending":
                ns.phase = "discovered"
            ns.maintenance_endpoint = d.address
            ctx.events("discover", "node", f"found in maintenance mode at {d.address}",
                       node=node.name, phase="discovered")
        elif node.name in running:
            ns.phase = "applied" if ns.phase in ("pending", "discovered") else ns.phase
            ns.endpoint = str(node.ip)
            ctx.events("discover", "node", f"already configured, running on {node.ip}",
                       node=node.name, phase="running")
    for d in found.unknown:
        ctx.events("discover", "warn", f"machine at {d.address} in maintenance mode is not in "
                   f"the inventory (MACs {', '.join(d.macs)})")
    problems = [
        p for p in ops.preflight(inv, found)
        if not any(p.path == f"nodes[{i}]" and n.name in running
                   for i, n in enumerate(inv.nodes))
    ]
    # nodes installing right now (config applied by a killed run) are neither in maintenance
    # mode nor running yet; the apply stage waits for them
    installing = [n.name for n in missing if n.name not in running
                  and ctx.state.node(n.name).phase in ("applying", "applied")]
    problems = [p for p in problems
                if not any(p.path == f"nodes[{i}]" and n.name in installing
                           for i, n in enumerate(inv.nodes))]
    ctx.save()
    if problems:
        raise InputError(problems, source="preflight")
    return (f"{len(found.nodes)} node(s) in maintenance mode, {len(running)} already running"
            + (f", {len(installing)} installing" if installing else ""))


# --------------------------------------------------------------------------- apply


async def apply(ctx: Context) -> str:
    inv = ctx.inventory
    if ctx.discovery is None:
        ctx.discovery = await ops.discover(inv, ctx.candidates(), dial=ctx.dial)
    found = ctx.discovery
    configs = ctx.configs()
    creds = ctx.credentials

    def on_event(node: str, message: str) -> None:
        ctx.events("apply", "info", message, node=node)

    def job(node: Node) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            ns = ctx.state.node(node.name)
            d = found.nodes.get(node.name)
            if d is None:
                ep = ctx.dial(str(node.ip)).named(node.name)
                version = await ops.wait_running(ep, creds, timeout=ctx.options.timeout,
                                                 poll=0.1)
                what = f"already configured, running {version.tag}"
            else:
                ns.phase = "applying"
                ctx.save()
                ctx.events("apply", "node", f"applying config at {d.address}", node=node.name,
                           phase="applying")
                out = await ops.apply_node(node, d, configs[node.name], creds, dial=ctx.dial,
                                           timeout=ctx.options.timeout, on_event=on_event)
                what = f"applied, running {out.version} on {out.address}"
            ns.phase = "applied"
            ns.endpoint = str(node.ip)
            ns.error = None
            ctx.save()
            ctx.events("apply", "node", what, node=node.name, phase="applied")
            return what
        return run

    results = await ops.fan_out((n.name, job(n)) for n in inv.nodes)
    for r in results:
        if not r.ok:
            ctx.state.node(r.node).error = str(r.error)
    ctx.save()
    ops.raise_failures(results, "apply")
    ctx.discovery = None
    if ctx.boot_service is not None:
        await ctx.boot_service.close_dhcp()
        ctx.boot_service = None
        ctx.events("apply", "info", "DHCP stopped: every node is configured")
    return f"{len(results)} node(s) running in normal mode"


# --------------------------------------------------------------------------- bootstrap


async def bootstrap(ctx: Context) -> str:
    def on_event(node: str, message: str) -> None:
        ctx.events("bootstrap", "info", message, node=node)

    out = await ops.bootstrap_once(ctx.inventory, ctx.credentials,
                                   ops.BootstrapState(ctx.bootstrap_path), dial=ctx.dial,
                                   timeout=ctx.options.timeout, on_event=on_event)
    st = ctx.state
    if not st.bootstrapped:
        st.bootstrapped, st.bootstrap_node, st.bootstrap_at = True, out.node, now()
    for n in ctx.inventory.nodes:
        if n.is_controlplane:
            ctx.state.node(n.name).phase = "ready"
    ctx.save()
    verb = "Bootstrap called" if out.called else "already bootstrapped"
    return f"{verb} on {out.node}; etcd members: {', '.join(out.members)}"


# --------------------------------------------------------------------------- kubeconfig


async def kubeconfig(ctx: Context) -> str:
    data = await ops.kubeconfig(ctx.inventory, ctx.credentials, dial=ctx.dial)
    write_private(ctx.kubeconfig_path, data)
    with Kube.from_kubeconfig(ctx.kubeconfig_path, timeout=10) as kube:
        nodes = kube.list("v1", "Node")
    for n in ctx.inventory.nodes:
        ctx.state.node(n.name).phase = "ready"
    ctx.save()
    return f"kubeconfig written to {ctx.kubeconfig_path} (0600); API {kube.server} answers, " \
           f"{len(nodes)} node(s) registered"


# --------------------------------------------------------------------------- flux, platform


def _kube(ctx: Context) -> Kube:
    if not ctx.kubeconfig_path.is_file():
        raise RemoteError(f"no kubeconfig at {ctx.kubeconfig_path}: run the kubeconfig stage")
    return Kube.from_kubeconfig(ctx.kubeconfig_path)


def _on_applied(ctx: Context, stage: str) -> Callable[[Applied], None]:
    def cb(a: Applied) -> None:
        ctx.events(stage, "release" if a.ref.kind == "HelmRelease" else "info",
                   f"{a.ref} {a.action}", node=a.ref.name if a.ref.kind == "HelmRelease"
                   else None, phase="applied" if a.ref.kind == "HelmRelease" else None)
    return cb


async def flux(ctx: Context) -> str:
    from .platform import install_flux

    with _kube(ctx) as kube:
        refs = install_flux(kube, ctx.files, timeout=ctx.options.timeout, poll=ctx.options.poll,
                            on_applied=_on_applied(ctx, "flux"))
    return f"Flux installed; {len(refs)} controller(s) available"


async def platform(ctx: Context) -> str:
    from .platform import install_platform_direct, install_platform_gitops

    def on_status(st: ReleaseStatus) -> None:
        ctx.state.releases[st.name] = {"state": st.state, "reason": st.reason,
                                       "message": st.message, "at": now()}
        ctx.save()
        kind = "release"
        ctx.events("platform", kind, st.describe(), node=st.name, phase=st.state,
                   error=f"{st.reason}: {st.message}" if st.state == "failed" else None)

    def on_local(name: str, phase: str) -> None:
        ctx.state.releases[name] = {"state": phase, "reason": "", "mode": "direct",
                                    "message": "local chart applied by cloudctl", "at": now()}
        ctx.save()
        ctx.events("platform", "release", f"local chart {name}: {phase} (applied directly)",
                   node=name, phase=phase)

    inv = ctx.inventory
    with _kube(ctx) as kube:
        if inv.gitops is not None:
            from .gitpush import push_tree

            rev = push_tree(ctx.files, inv)
            ctx.events("platform", "info", f"pushed gitops/ to {inv.gitops.repo} ({rev})")
            install_platform_gitops(kube, inv, ctx.files, timeout=ctx.options.timeout,
                                    poll=ctx.options.poll,
                                    on_applied=_on_applied(ctx, "platform"),
                                    on_status=on_status)
        else:
            install_platform_direct(kube, inv, ctx.files, timeout=ctx.options.timeout,
                                    poll=ctx.options.poll,
                                    on_applied=_on_applied(ctx, "platform"),
                                    on_status=on_status, on_local=on_local)
    n = sum(1 for r in ctx.state.releases.values() if r.get("state") == "ready")
    return f"{n} release(s) ready"


async def done(ctx: Context) -> str:
    return (f"cluster {ctx.inventory.cluster.name} is up: {len(ctx.inventory.nodes)} node(s), "
            f"kubeconfig at {ctx.kubeconfig_path}")


STAGE_FUNCS: dict[str, Callable[[Context], Awaitable[str]]] = {
    "preflight": preflight,
    "image": image,
    "boot": boot,
    "discover": discover,
    "apply": apply,
    "bootstrap": bootstrap,
    "kubeconfig": kubeconfig,
    "flux": flux,
    "platform": platform,
    "done": done,
}
