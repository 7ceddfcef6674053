"""Run the stages in order with persisted state, or plan them.

``run_pipeline`` saves the state file when a stage starts, after every step inside it and when it
ends, and writes every event to ``events.jsonl``. ``--resume`` starts at the first stage that
is not done; a plain rerun goes through every stage, each of which checks state and live facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CloudctlError, InputError
from .context import Context
from .stages import STAGE_FUNCS, Skip
from .state import STAGES, now

NEEDS_RACK = ("boot", "discover", "apply", "bootstrap", "kubeconfig", "flux", "platform")


def select_stages(
    ctx: Context, *, resume: bool = False, from_stage: str | None = None,
    only: str | None = None,
) -> list[str]:
    for name, value in (("--only", only), ("--from", from_stage)):
        if value is not None and value not in STAGES:
            raise InputError(f"{name} {value!r}: not a stage (stages: {', '.join(STAGES)})")
    if only:
        return [only]
    if from_stage:
        return list(STAGES[STAGES.index(from_stage):])
    if resume:
        first = ctx.state.first_unfinished()
        return [] if first is None else list(STAGES[STAGES.index(first):])
    return list(STAGES)


def attach_rack(ctx: Context) -> None:
    """``--emulate``: reuse the cluster's running emulated rack or start it (detached)."""
    if not ctx.options.emulate or ctx.talos_port is not None:
        return
    from ..emulate.rack_control import start_rack

    if not ctx.store.exists():
        ctx.set_bundle(ctx.store.init()[0])
    info, started = start_rack(ctx.inventory_path, ctx.secrets_dir, ctx.cluster_dir,
                               fail_releases=ctx.options.fail_releases)
    ctx.talos_port = info.talos_port
    verb = "started" if started else "reusing"
    ctx.events("emulate", "info", f"{verb} emulated rack (pid {info.pid}): Talos API on "
               f"127.x.y.z:{info.talos_port}, Kubernetes API {info.kube_api_url}")


async def run_stage(ctx: Context, name: str) -> None:
    st = ctx.state.stage(name)
    st.status, st.started, st.finished, st.error = "running", now(), None, None
    ctx.save()
    ctx.events(name, "stage-start", f"{name}")
    try:
        if name in NEEDS_RACK:
            attach_rack(ctx)
        detail = await STAGE_FUNCS[name](ctx)
    except Skip as skip:
        st.status, st.finished, st.detail = "skipped", now(), str(skip)
        ctx.save()
        ctx.events(name, "stage-skipped", str(skip))
        return
    except CloudctlError as exc:
        st.status, st.finished = "failed", now()
        st.error = ctx.events.redactor(exc.message)
        ctx.save()
        ctx.events(name, "stage-failed", f"{name} failed", error=exc.message)
        raise
    st.status, st.finished, st.detail = "done", now(), ctx.events.redactor(detail)
    ctx.save()
    ctx.events(name, "stage-done", detail)


async def run_pipeline(
    ctx: Context, *, resume: bool = False, from_stage: str | None = None,
    only: str | None = None,
) -> list[str]:
    """Run the selected stages; returns their names."""
    stages = select_stages(ctx, resume=resume, from_stage=from_stage, only=only)
    if ctx.store.exists():
        _ = ctx.bundle  # redact secrets from the first event on
    for name in STAGES[: STAGES.index(stages[0])] if stages else STAGES:
        if resume and ctx.state.stage(name).status in ("done", "skipped"):
            ctx.events(name, "stage-skipped", "done in an earlier run")
    for name in stages:
        await run_stage(ctx, name)
    return stages


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlanItem:
    stage: str
    action: str  # run | skip
    reason: str
    node: str | None = None

    def line(self) -> str:
        who = f" {self.node}:" if self.node else ""
        return f"{self.action:4} {self.stage:10}{who} {self.reason}"


async def _live_running(ctx: Context) -> set[str] | None:
    """Nodes running in normal mode now, or None when that cannot be known (no secrets, no
    rack)."""
    from .stages import running_nodes

    if not ctx.store.exists():
        return None
    if ctx.options.emulate:
        from ..emulate.rack_control import read_rack

        info = read_rack(ctx.cluster_dir)
        if info is None:
            return None
        ctx.talos_port = info.talos_port
    try:
        return await running_nodes(ctx)
    except CloudctlError:
        return None


def _live_releases(ctx: Context) -> dict[str, str] | None:
    if not ctx.kubeconfig_path.is_file():
        return None
    from ..kube import Kube, release_status

    try:
        with Kube.from_kubeconfig(ctx.kubeconfig_path, timeout=3) as kube:
            objs = kube.list("helm.toolkit.fluxcd.io/v2", "HelmRelease", namespace="flux-system")
    except CloudctlError:
        return None
    return {s.name: s.state for s in (release_status(o) for o in objs)}


async def plan_pipeline(
    ctx: Context, *, resume: bool = False, from_stage: str | None = None,
    only: str | None = None,
) -> list[PlanItem]:
    """What a run would do, per stage and node, and why — from the state file and, where they
    can be reached, live facts (nodes over mTLS, HelmReleases). Changes nothing."""
    inv = ctx.inventory
    selected = select_stages(ctx, resume=resume, from_stage=from_stage, only=only)
    st = ctx.state
    running = await _live_running(ctx)
    live_note = "" if running is not None else " (live state unknown: nodes not reachable)"
    releases_live = _live_releases(ctx)
    items: list[PlanItem] = []

    def done(name: str) -> bool:
        return st.stage(name).status in ("done", "skipped")

    def add(stage: str, action: str, reason: str, node: str | None = None) -> None:
        items.append(PlanItem(stage, action, reason, node))

    for name in STAGES:
        if name not in selected:
            add(name, "skip", f"not selected ({st.stage(name).status})")
            continue
        if name == "preflight":
            if done(name):
                add(name, "skip", "done in an earlier run")
            else:
                secrets = "present" if ctx.store.exists() else "missing: will be created"
                host = ("host network checks skipped (--emulate)" if ctx.options.emulate
                        else f"check {inv.network.interface} has {inv.network.boot_server}, "
                        "no other DHCP server, boot assets")
                add(name, "run", f"validate inventory, secrets {secrets}, versions; {host}")
        elif name == "image":
            if done(name) and ctx.render_dir.is_dir():
                add(name, "skip", f"rendered to {ctx.render_dir} in an earlier run")
            else:
                add(name, "run", f"render machine configs + GitOps tree to {ctx.render_dir}"
                    + ("" if ctx.options.emulate else "; fetch boot assets"))
        elif name == "boot":
            if ctx.options.emulate:
                add(name, "skip", "emulated rack: nodes are already PXE-booted")
            elif done(name) or (running is not None and len(running) == len(inv.nodes)):
                add(name, "skip", "every node already booted")
            else:
                add(name, "run", f"serve DHCP/TFTP/HTTP on {inv.network.interface} until "
                    f"{len(inv.nodes)} node(s) fetched their initramfs")
        elif name in ("discover", "apply"):
            for node in inv.nodes:
                phase = st.node(node.name).phase
                if running is not None and node.name in running:
                    add(name, "skip", f"running in normal mode on {node.ip} (state: {phase})",
                        node.name)
                elif running is None and done(name):
                    add(name, "skip", f"done in an earlier run (state: {phase}){live_note}",
                        node.name)
                elif name == "discover":
                    add(name, "run", f"find by MAC {', '.join(node.macs)} in maintenance mode"
                        f"{live_note}", node.name)
                else:
                    add(name, "run", f"send machine config, wait for normal mode on {node.ip}"
                        f"{live_note}", node.name)
        elif name == "bootstrap":
            marker = ctx.bootstrap_path.is_file() and '"bootstrapped"' in \
                ctx.bootstrap_path.read_text()
            if st.bootstrapped or marker:
                add(name, "skip", f"etcd bootstrapped on {st.bootstrap_node or 'a control plane'}"
                    "; Bootstrap is never called twice")
            else:
                from ..talos.ops import bootstrap_node

                add(name, "run", "Bootstrap etcd once (unless a control plane already has "
                    "members)", bootstrap_node(inv).name)
        elif name == "kubeconfig":
            if done(name) and ctx.kubeconfig_path.is_file():
                add(name, "skip", f"{ctx.kubeconfig_path} exists")
            else:
                add(name, "run", f"fetch the admin kubeconfig to {ctx.kubeconfig_path}")
        elif name == "flux":
            if done(name):
                add(name, "skip", "Flux installed in an earlier run")
            else:
                add(name, "run", "apply gitops/flux-system/, wait for the controllers")
        elif name == "platform":
            from ..render.gitops import local_chart_manifests, platform_releases

            local = set() if inv.gitops else set(local_chart_manifests(inv))
            for rel in platform_releases(inv):
                live = (releases_live or {}).get(rel.name)
                recorded = (st.releases.get(rel.name) or {}).get("state")
                if live == "ready" or (recorded == "ready" and rel.name in local):
                    add(name, "skip", "Ready", rel.name)
                    continue
                after = f" after {', '.join(rel.depends_on)}" if rel.depends_on else ""
                how = ("apply its manifests directly (local chart, no Git source)"
                       if rel.name in local else f"HelmRelease {rel.chart} {rel.version}")
                add(name, "run", f"{how}{after}", rel.name)
        elif name == "done":
            add(name, "skip" if done(name) else "run",
                "done in an earlier run" if done(name) else "report the cluster")
    return items
