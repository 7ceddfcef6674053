"""``cloudctl bootstrap`` and ``cloudctl status``."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ..cli import EXIT_CODES, _load, format_option, handle_errors, inventory_option, secrets_option
from ..pipeline.state import STAGES

cluster_dir_option = click.option(
    "--cluster-dir",
    "cluster_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="State directory [default: <inventory dir>/clusters/<cluster>/].",
)
stage_choice = click.Choice(list(STAGES))


def _context(
    inventory_path: Path, secrets_dir: Path | None, cluster_dir: Path | None, events: Any,
    options: Any,
) -> Any:
    from ..pipeline import Context, default_cluster_dir
    from ..secrets import default_secrets_dir

    loaded = _load_quiet(inventory_path)
    inv = loaded.inventory
    return Context(
        inventory=inv,
        inventory_path=inventory_path,
        cluster_dir=cluster_dir or default_cluster_dir(inventory_path, inv.cluster.name),
        secrets_dir=secrets_dir or default_secrets_dir(inventory_path, inv.cluster.name),
        events=events,
        options=options,
        warnings=[str(w) for w in loaded.warnings],
    )


def _load_quiet(path: Path) -> Any:
    from ..inventory import load_inventory

    return load_inventory(path)


@click.command(epilog=EXIT_CODES)
@inventory_option
@secrets_option
@cluster_dir_option
@click.option("--emulate", is_flag=True,
              help="Rehearse against an emulated rack (Talos nodes + Kubernetes API) started "
                   "in the background and reused by later runs.")
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
@click.option("--emulate-fail-release", "fail_releases", multiple=True,
              metavar="NAME=REASON:MESSAGE", hidden=True,
              help="Emulator only: make a HelmRelease fail (for rehearsing failures).")
@format_option
@handle_errors
def bootstrap(
    inventory_path: Path,
    secrets_dir: Path | None,
    cluster_dir: Path | None,
    emulate: bool,
    resume: bool,
    plan: bool,
    only: str | None,
    from_stage: str | None,
    force: bool,
    timeout: float,
    fail_releases: tuple[str, ...],
    output_format: str,
) -> None:
    """Take the rack from PXE boot to the platform Ready.

    \b
    Stages: preflight → image → boot → discover → apply → bootstrap → kubeconfig → flux →
    platform → done. State is saved after every step in the cluster directory (state.json,
    render/, kubeconfig (0600), events.jsonl), so a rerun is idempotent and --resume continues
    where a run stopped. etcd is bootstrapped exactly once. -o json streams events as JSON
    lines on stdout. With --emulate the boot stage is skipped and the host-network checks
    are not run.
    """
    from ..pipeline import Events, JsonLinesSink, Options, TextSink, plan_pipeline, run_pipeline

    if sum(bool(x) for x in (resume, only, from_stage)) > 1:
        from ..errors import InputError

        raise InputError("use at most one of --resume, --only, --from")
    options = Options(emulate=emulate, force=force, timeout=timeout,
                      poll=0.05 if emulate else 1.0, fail_releases=fail_releases)
    events = Events()
    ctx = _context(inventory_path, secrets_dir, cluster_dir, events, options)
    with ExitStack() as stack:
        if plan:
            if output_format == "json":
                events.sinks.append(JsonLinesSink(sys.stdout))
            items = asyncio.run(plan_pipeline(ctx, resume=resume, from_stage=from_stage,
                                              only=only))
            for item in items:
                if output_format == "json":
                    events(item.stage, "plan", item.reason, node=item.node, phase=item.action)
                else:
                    click.echo(item.line())
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
        asyncio.run(run_pipeline(ctx, resume=resume, from_stage=from_stage, only=only))
    if output_format != "json":
        click.echo(f"cluster {ctx.inventory.cluster.name}: "
                   f"{ctx.state.stage('done').detail or 'stages done'}")


# --------------------------------------------------------------------------- status


def status_report(ctx: Any, *, emulate: bool) -> dict[str, Any]:
    """State file + live facts (nodes over mTLS, HelmReleases) where reachable."""
    from ..pipeline.runner import _live_releases, _live_running

    st = ctx.state
    ctx.options.emulate = emulate
    running = asyncio.run(_live_running(ctx))
    releases_live = _live_releases(ctx)
    nodes = {}
    for n in ctx.inventory.nodes:
        ns = st.node(n.name)
        nodes[n.name] = {
            "role": n.role, "ip": str(n.ip), "phase": ns.phase, "error": ns.error,
            "running": None if running is None else n.name in running,
        }
    releases: dict[str, dict[str, Any]] = {}
    for name, rec in st.releases.items():
        releases[name] = {"state": rec.get("state"), "reason": rec.get("reason"),
                          "message": rec.get("message"), "live": None}
    for name, state in (releases_live or {}).items():
        releases.setdefault(name, {"state": None, "reason": None, "message": None})
        releases[name]["live"] = state
    return {
        "cluster": ctx.inventory.cluster.name,
        "cluster_dir": str(ctx.cluster_dir),
        "next_stage": st.first_unfinished(),
        "stages": {name: asdict(st.stage(name)) for name in STAGES},
        "bootstrapped": st.bootstrapped,
        "bootstrap_node": st.bootstrap_node,
        "nodes": nodes,
        "releases": releases,
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
    """Per-stage, per-node and per-release state (state file, plus live facts if reachable)."""
    from ..emulate.rack_control import read_rack
    from ..pipeline import Events, Options

    ctx = _context(inventory_path, secrets_dir, cluster_dir, Events(), Options())
    emulate = read_rack(ctx.cluster_dir) is not None
    report = status_report(ctx, emulate=emulate)
    if output_format == "json":
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo(f"cluster {report['cluster']} ({report['cluster_dir']}); next stage: "
               f"{report['next_stage'] or 'none (done)'}")
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


COMMANDS = [bootstrap, status]
