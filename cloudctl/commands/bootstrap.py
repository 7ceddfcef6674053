"""``cloudctl bootstrap`` and ``cloudctl status``."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ..cli import (
    EXIT_CODES,
    cluster_dir_option,
    cluster_paths,
    format_option,
    handle_errors,
    inventory_option,
    run_async,
    secrets_option,
)
from ..errors import CloudctlError
from ..pipeline.state import STAGES

stage_choice = click.Choice(list(STAGES))


def _context(
    inventory_path: Path, secrets_dir: Path | None, cluster_dir: Path | None, events: Any,
    options: Any, *, rack: str = "metal",
) -> Any:
    """The pipeline context, with the rack of kind ``rack`` — the one place it is chosen."""
    from ..pipeline import Context
    from ..rack import rack_for

    loaded = _load_quiet(inventory_path)
    inv = loaded.inventory
    cdir, sdir = cluster_paths(inventory_path, inv.cluster.name, cluster_dir, secrets_dir)
    return Context(
        inventory=inv,
        inventory_path=inventory_path,
        cluster_dir=cdir,
        secrets_dir=sdir,
        events=events,
        rack=rack_for(rack, inv, inventory_path=inventory_path, cluster_dir=cdir,
                      secrets_dir=sdir,
                      assets_given=options.given_assets() is not None),
        options=options,
        warnings=[str(w) for w in loaded.warnings],
    )


def rack_kind(emulate: bool, lab: bool = False) -> str:
    if emulate and lab:
        from ..errors import InputError

        raise InputError("use at most one of --emulate, --lab")
    return "emulated" if emulate else "lab" if lab else "metal"


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt at once, wherever the process is (also in a
    blocking wait): asyncio's own SIGINT handling would only cancel the task at its next
    await, so a long synchronous wait would ignore Ctrl-C."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def interrupted_exit(ctx: Any) -> None:
    """After Ctrl-C / SIGTERM: record it, say how to continue, exit 130."""
    from ..errors import EXIT_INTERRUPTED
    from ..pipeline import mark_interrupted

    stage = mark_interrupted(ctx)
    where = f" during stage {stage}" if stage else ""
    click.echo(f"interrupted{where}; the state is saved in {ctx.cluster_dir / 'state.json'}: "
               "rerun with --resume to continue", err=True)
    sys.exit(EXIT_INTERRUPTED)


def _load_quiet(path: Path) -> Any:
    from ..inventory import load_inventory

    return load_inventory(path)


@click.command(epilog=EXIT_CODES)
@inventory_option
@secrets_option
@cluster_dir_option
@click.option("--emulate", is_flag=True,
              help="Rehearse against the cluster's emulated rack (Talos nodes + Kubernetes API; "
                   "started in the background if not running, reused by later runs; start it "
                   "with `cloudctl emulate start --fault ...` to rehearse failures).")
@click.option("--lab", "use_lab", is_flag=True,
              help="Bootstrap the cluster's VM lab (`cloudctl lab up`): the boot service runs "
                   "in the lab's network namespace on its bridge, nodes are powered through the "
                   "lab's BMC emulators. Needs root.")
@click.option("--no-power", is_flag=True,
              help="Do not power nodes through their BMCs in the boot stage (power them on by "
                   "hand).")
@click.option("--accept-new-host-key", is_flag=True,
              help="boot: ssh nodes: pin SSH host keys not yet in <cluster dir>/known_hosts "
                   "(see install-ssh).")
@click.option("--kernel", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Kernel the boot stage serves instead of the Image Factory's "
                                 "(with --initramfs).")
@click.option("--initramfs", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Initramfs the boot stage serves instead of the Image "
                                 "Factory's (with --kernel).")
@click.option("--resume", is_flag=True, help="Continue at the first stage not done.")
@click.option("--plan", is_flag=True,
              help="Print, per stage and node, what would be done and why; change nothing.")
@click.option("--only", "only", type=stage_choice, default=None, help="Run just this stage.")
@click.option("--from", "from_stage", type=stage_choice, default=None,
              help="Run from this stage on.")
@click.option("--force", is_flag=True,
              help="Serve DHCP (full mode) even if another DHCP server answers.")
@click.option("--timeout", type=float, default=900.0, show_default=True,
              help="Seconds to wait for each remote step (install, etcd, releases).")
@format_option
@handle_errors
def bootstrap(
    inventory_path: Path,
    secrets_dir: Path | None,
    cluster_dir: Path | None,
    emulate: bool,
    use_lab: bool,
    no_power: bool,
    accept_new_host_key: bool,
    kernel: Path | None,
    initramfs: Path | None,
    resume: bool,
    plan: bool,
    only: str | None,
    from_stage: str | None,
    force: bool,
    timeout: float,
    output_format: str,
) -> None:
    """Take the rack from PXE boot to the platform Ready.

    \b
    Stages: preflight → image → hooks-before-boot → boot → discover → apply → bootstrap →
    hooks-after-bootstrap → kubeconfig → flux → platform → hooks-after-platform → tenants →
    done (the hooks-* stages run the inventory's Ansible hooks through ansible-runner and are
    skipped without hooks; a failed task exits 11 naming task and host; tenants applies the
    inventory's tenant clusters, prunes removed ones and waits until they are Ready). State
    is saved after every step in the cluster directory (state.json, render/, kubeconfig
    (0600), events.jsonl), so a rerun is idempotent and --resume continues where a run
    stopped. etcd is bootstrapped exactly once. Each stage gathers facts, plans and runs its
    plan; --plan prints those plans without changing anything. -o json streams events as JSON
    lines on stdout. With --emulate
    the rack is the emulated one: its machines boot themselves and there is no host network to
    check. Ctrl-C records the interrupted stage and exits 130; --resume continues.

    \b
    The boot stage powers every node with a `bmc` that is not running yet (one-time network
    boot, then on, or a cycle when on) once the boot service listens; --no-power leaves that to
    you. A BMC failure fails the stage naming node and BMC (exit 6, 7 on no answer, 3 for an
    unreadable passwordRef). Nodes with boot: ssh are installed over SSH instead (as
    `cloudctl install-ssh` does: image or kexec, exit 10 when a disk or host key is
    refused). With --lab the rack is the VM lab: the boot stage ends when every
    VM fetched its initramfs; the later stages need a real Talos image (see README, Labs).
    """
    from ..pipeline import Events, JsonLinesSink, Options, TextSink, plan_pipeline, run_pipeline

    if sum(bool(x) for x in (resume, only, from_stage)) > 1:
        from ..errors import InputError

        raise InputError("use at most one of --resume, --only, --from")
    if (kernel is None) != (initramfs is None):
        from ..errors import InputError, Problem

        raise InputError(Problem("--kernel/--initramfs", "give both or neither"))
    options = Options(force=force, timeout=timeout, power=not no_power, kernel=kernel,
                      initramfs=initramfs, accept_new_host_key=accept_new_host_key)
    events = Events()
    ctx = _context(inventory_path, secrets_dir, cluster_dir, events, options,
                   rack=rack_kind(emulate, use_lab))
    with ExitStack() as stack:
        if plan:
            if output_format == "json":
                events.sinks.append(JsonLinesSink(sys.stdout))
            steps = run_async(plan_pipeline(ctx, resume=resume, from_stage=from_stage,
                                              only=only))
            for step in steps:
                if output_format == "json":
                    events(step.stage, "plan", step.reason, node=step.target,
                           phase=str(step.action))
                else:
                    click.echo(ctx.events.redactor(step.line()))
            return
        ctx.cluster_dir.mkdir(parents=True, exist_ok=True)
        log = stack.enter_context(open(ctx.cluster_dir / "events.jsonl", "a"))
        events.sinks.append(JsonLinesSink(log))
        if output_format == "json":
            events.sinks.append(JsonLinesSink(sys.stdout))
        elif sys.stderr.isatty():
            from ..pipeline.progress import RichProgress

            view = RichProgress(sys.stderr)
            stack.callback(view.close)
            events.sinks.append(view)
        else:
            events.sinks.append(TextSink(sys.stderr))
        try:
            with interrupts_raise():
                run_async(run_pipeline(ctx, resume=resume, from_stage=from_stage, only=only))
        except KeyboardInterrupt:
            stack.close()
            interrupted_exit(ctx)
    if output_format != "json":
        click.echo(f"cluster {ctx.inventory.cluster.name}: "
                   f"{ctx.state.stage('done').detail or 'stages done'}")


# --------------------------------------------------------------------------- status


def status_report(ctx: Any) -> dict[str, Any]:
    """State file + live facts (nodes over mTLS, HelmReleases) where reachable."""
    from ..kube import release_status
    from ..pipeline.stages import live_releases, live_tenants, running_nodes

    st = ctx.state
    try:
        running = run_async(running_nodes(ctx))
    except CloudctlError:
        running = None
    live = live_releases(ctx)
    releases_live = None if live is None else {
        name: release_status(obj).state for name, obj in live.items()}
    nodes = {}
    for n in ctx.inventory.nodes:
        ns = st.node(n.name)
        nodes[n.name] = {
            "role": n.role, "ip": str(n.ip), "phase": str(ns.phase), "error": ns.error,
            "boot_address": ns.boot_address,
            "running": None if running is None else n.name in running,
        }
    releases: dict[str, dict[str, Any]] = {}
    for name, rec in st.releases.items():
        releases[name] = {"state": rec.get("state"), "reason": rec.get("reason"),
                          "message": rec.get("message"), "live": None}
    for name, state in (releases_live or {}).items():
        releases.setdefault(name, {"state": None, "reason": None, "message": None})
        releases[name]["live"] = state
    marker = ctx.bootstrap_state.read()
    interrupted = [n for n in STAGES if st.stage(n).status == "interrupted"]
    return {
        "cluster": ctx.inventory.cluster.name,
        "cluster_dir": str(ctx.cluster_dir),
        "rack": ctx.rack.describe(),
        "kubernetes_api": ctx.rack.kube_endpoint() or None,
        "next_stage": st.first_unfinished(),
        "interrupted": interrupted[0] if interrupted else None,
        "stages": {name: {k: str(v) if k == "status" else v
                          for k, v in asdict(st.stage(name)).items()} for name in STAGES},
        "bootstrapped": marker.get("bootstrapped") is not None,
        "bootstrap_node": marker.get("bootstrapped"),
        "nodes": nodes,
        "releases": releases,
        "tenants": live_tenants(ctx),
        "live": {"nodes": running is not None, "kubernetes": releases_live is not None},
    }


@click.command(epilog=EXIT_CODES)
@inventory_option
@secrets_option
@cluster_dir_option
@format_option
@handle_errors
def status(
    inventory_path: Path, secrets_dir: Path | None, cluster_dir: Path | None, output_format: str
) -> None:
    """Per-stage, per-node and per-release state (state file, plus live facts if reachable).

    The rack is the cluster directory's emulated rack when one is running, else bare metal.
    An interrupted run is shown as such, with the stage it stopped in."""
    from ..emulate.rack_control import read_rack
    from ..pipeline import Events, Options

    ctx = _context(inventory_path, secrets_dir, cluster_dir, Events(), Options())
    if read_rack(ctx.cluster_dir) is not None:
        ctx = _context(inventory_path, secrets_dir, cluster_dir, Events(), Options(),
                       rack="emulated")
    report = status_report(ctx)
    if output_format == "json":
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo(f"cluster {report['cluster']} ({report['cluster_dir']}, {report['rack']}); "
               f"next stage: {report['next_stage'] or 'none (done)'}")
    if report["interrupted"]:
        click.echo(f"interrupted during stage {report['interrupted']}: rerun bootstrap with "
                   "--resume to continue")
    for name, s in report["stages"].items():
        click.echo(f"  {name:10} {s['status']:8} {s['error'] or s['detail'] or ''}")
    click.echo("nodes:")
    for name, n in report["nodes"].items():
        live = {None: "unknown", True: "running", False: "not running"}[n["running"]]
        click.echo(f"  {name:10} {n['role']:12} {n['ip']:15} {n['phase']:10} live: {live}")
    if report["releases"]:
        click.echo("releases:")
        for name, r in report["releases"].items():
            why = f" ({r['reason']}: {r['message']})" if r.get("reason") else ""
            click.echo(f"  {name:18} {r['state'] or '-':12} live: {r['live'] or '-'}{why}")
    if ctx.inventory.tenants:
        click.echo("tenants:")
        for t in ctx.inventory.tenants:
            live_t = (report["tenants"] or {}).get(t.name)
            state = "unknown (API not reachable)" if live_t is None else (
                "Ready" if live_t["ready"] else f"not ready: {live_t['detail']}")
            click.echo(f"  {t.name:18} {state}")


COMMANDS = [bootstrap, status]
