"""``cloudctl upgrade``: one plan across the platform, Talos and Kubernetes, then a safe
rolling execution (see :mod:`cloudctl.upgrade`)."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from ..cli import (
    EXIT_CODES,
    cluster_dir_option,
    format_option,
    handle_errors,
    inventory_option,
    run_async,
    secrets_option,
)
from ..errors import EnvironmentNotReady, InputError, Problem, StateError


def _say(ctx: Any) -> Any:
    def say(kind: str, message: str, *, node: str | None = None,
            phase: str | None = None) -> None:
        ctx.events("upgrade", kind, message, node=node, phase=phase)
    return say


async def _add_nodes(ctx: Any) -> None:
    """The bootstrap pipeline's boot, discover and apply stages: each plans per node and acts
    only on nodes not running yet (the new ones)."""
    from ..pipeline.runner import run_stage
    from ..pipeline.stages import STAGE_BY_NAME

    for name in ("boot", "discover", "apply"):
        await run_stage(ctx, STAGE_BY_NAME[name])


async def _platform(ctx: Any) -> None:
    from ..pipeline.stages import STAGE_BY_NAME

    stage = STAGE_BY_NAME["platform"]
    facts = await stage.facts(ctx)
    plan = stage.plan(ctx.inventory, facts)
    await stage.run(ctx, plan, facts)


def _storage_checks(ctx: Any, kube: Any) -> list[Any]:
    from ..render.gitops import platform_releases
    from ..upgrade.gates import LinstorCheck

    inv = ctx.inventory
    if not inv.platform.linstor.enabled:
        return []
    ns = next((r.namespace for r in platform_releases(inv) if r.name == "linstor"),
              "piraeus-datastore")
    return [LinstorCheck(kube, ns)]


def _restore_releases(ctx: Any, releases: dict[str, Any], names: list[str]) -> None:
    """Direct mode: each HelmRelease's live spec with the recorded chart version and values
    (server-side apply), then wait Ready as bootstrap does."""
    from ..kube import Kube, wait_helmreleases

    with Kube.from_kubeconfig(ctx.kubeconfig_path) as kube:
        for name in names:
            was = releases[name]
            live = kube.get(_hr(name))
            assert live is not None
            chart = dict((live["spec"].get("chart") or {}).get("spec") or {})
            chart["version"] = was["version"]
            kube.server_side_apply({
                "apiVersion": live["apiVersion"], "kind": "HelmRelease",
                "metadata": {"name": name, "namespace": "flux-system"},
                "spec": {**live["spec"], "chart": {"spec": chart},
                         "values": was.get("values") or {}}})
        wait_helmreleases(kube, names=names, timeout=ctx.options.timeout, interval=ctx.poll)


def _git_revision(ctx: Any) -> str | None:
    """GitOps mode: the branch head the cluster follows before the platform changes (the
    rollback record's revision); None in direct mode."""
    if ctx.inventory.gitops is None:
        return None
    from ..gitops import commit_tree

    result = commit_tree(ctx.inventory, ctx.files, push=False, dry_run=True,
                         cache=ctx.cluster_dir / "gitops.git")
    return result.remote_head


def _hr(name: str) -> Any:
    from ..kube import ObjectRef
    from ..kube.wait import HELMRELEASE_API

    return ObjectRef(HELMRELEASE_API, "HelmRelease", name, "flux-system")


async def _run(ctx: Any, *, plan_only: bool, resume: bool, force: bool, drain_timeout: float,
               output_format: str, rollback: bool = False) -> int:
    from ..catalog import talos_catalog
    from ..kube.client import Kube
    from ..pipeline.state import now
    from ..upgrade.facts import gather, node_targets, release_targets
    from ..upgrade.plan import Change, plan_rollback, plan_upgrade
    from ..upgrade.record import (
        FAILED,
        INTERRUPTED,
        RUNNING,
        RecordFile,
        UpgradeRecord,
        previous_of,
    )
    from ..upgrade.run import Upgrader, plan_record, set_install_image

    inv = ctx.inventory
    if not ctx.rack.reachable():
        raise EnvironmentNotReady(f"{ctx.rack.describe()}: nothing to upgrade (bootstrap the "
                                  "cluster first)")
    if not ctx.kubeconfig_path.is_file():
        raise EnvironmentNotReady(f"no kubeconfig at {ctx.kubeconfig_path}: bootstrap the "
                                  "cluster first")
    records = RecordFile(ctx.cluster_dir, inv.cluster.name)
    rec = records.load()
    if rollback and (rec is None or not rec.previous):
        raise InputError(Problem("--rollback", f"no upgrade is recorded in {records.path}: "
                                 "nothing to roll back to"))
    if rec is not None and rec.unfinished and not resume and not plan_only and not rollback:
        raise StateError(f"an unfinished upgrade is recorded in {records.path} (status "
                         f"{rec.status}{': ' + rec.error.splitlines()[0] if rec.error else ''})"
                         ": rerun with --resume to continue it")
    _ = ctx.bundle  # secrets are redacted from every event from here on
    files = ctx.files
    creds = ctx.credentials
    say = _say(ctx)

    def dial(node: Any) -> Any:
        return ctx.rack.dial(str(node.ip)).named(node.name)

    configs = {n.name: files[f"talos/nodes/{n.name}.yaml"].data.decode() for n in inv.nodes}
    rollback_of = rec if rollback else None
    if rollback_of is not None:
        was = rollback_of.previous.get("nodes") or {}
        configs = {n: set_install_image(c, str(was[n]["installer_image"]))
                   if (was.get(n) or {}).get("installer_image") else c
                   for n, c in configs.items()}
    with Kube.from_kubeconfig(ctx.kubeconfig_path) as kube:
        def platform() -> None:
            if rollback_of is None:
                run_async(_platform(ctx))
                return
            assert plan is not None
            names = [c.target for c in plan.changes if c.layer == "platform"]
            _restore_releases(ctx, rollback_of.previous.get("releases") or {}, names)

        def upgrader(plan: Any, record: Any) -> Upgrader:
            return Upgrader(inv, plan, record, records, dial=dial, dial_address=ctx.rack.dial,
                            creds=creds, kube=kube, configs=configs,
                            storage=_storage_checks(ctx, kube), say=say,
                            timeout=ctx.options.timeout, drain_timeout=drain_timeout,
                            poll=ctx.poll, platform=platform,
                            add_nodes=lambda: run_async(_add_nodes(ctx)),
                            extra=dict(facts.extra) if facts is not None else {})

        facts = None
        # a change in flight (its Upgrade call sent) is finished first: the node may be
        # rebooting and invisible to the facts
        plan = None
        if resume and rec is not None and rec.current is not None and rec.current.sent:
            raw = next((c for c in rec.plan if c.get("key") == rec.current.key), None)
            if raw is not None:
                change = Change(**{k: v for k, v in raw.items() if k != "key"})
                up = upgrader(None, rec)
                say("node-start", change.describe() + " (resumed)", node=change.target,
                    phase=change.key)
                try:
                    await up.talos(change)
                except Exception as exc:
                    rec.status, rec.error = FAILED, str(exc)
                    records.save(rec)
                    raise
                up._done(change)
                say("node-done", change.describe(), node=change.target, phase=change.key)

        facts = await gather(inv, dial, creds, kube)
        if rollback_of is not None:
            order = [n.name for n in sorted(inv.nodes, key=lambda n: n.role != "controlplane")]
            plan = plan_rollback(rollback_of.previous, facts, order)
        else:
            plan = plan_upgrade(node_targets(inv, files), release_targets(inv, files), facts,
                                talos_catalog(), force=force)
        if rollback_of is not None and inv.gitops is not None and \
                any(c.layer == "platform" for c in plan.changes):
            head = (rollback_of.previous or {}).get("git_revision")
            raise InputError(Problem(
                "gitops", "the platform follows Git, so --rollback does not change it: revert "
                f"the GitOps branch to {head or 'the revision before the upgrade'} (git revert), "
                "then run cloudctl upgrade --rollback for the Talos nodes"))
        if plan_only:
            _print_plan(ctx, plan, output_format)
            if plan.problems:
                raise _refused(plan)
            return 0
        if plan.problems:
            raise _refused(plan)
        if plan.unknown:
            raise EnvironmentNotReady("cannot plan the upgrade safely; facts missing:\n  - "
                                      + "\n  - ".join(plan.unknown))
        for w in plan.warnings:
            say("warn", w)
        if not plan.changes:
            if rec is not None and rec.unfinished:
                rec.status = "done"
                rec.finished = str(now())
                records.save(rec)
            say("done", "nothing to do: the cluster runs what the inventory says")
            return 0
        revision = _git_revision(ctx) if any(c.layer == "platform" for c in plan.changes) \
            else None
        if rollback_of is not None:
            rec = UpgradeRecord(cluster=inv.cluster.name, started=str(now()),
                                previous=previous_of(facts, revision),
                                target={"rollback_of": rollback_of.started})
        elif rec is None or not rec.unfinished:
            rec = UpgradeRecord(cluster=inv.cluster.name, started=str(now()),
                                previous=previous_of(facts, revision),
                                target={"talos": inv.cluster.talos_version,
                                        "kubernetes": inv.cluster.kubernetes_version})
        rec.plan = plan_record(plan) + [c for c in rec.plan
                                        if c["key"] in rec.done and
                                        c["key"] not in {x.key for x in plan.changes}]
        rec.status = RUNNING
        rec.error = ""
        records.save(rec)
        say("plan", f"{len(plan.changes)} change(s): "
            + "; ".join(c.describe() for c in plan.changes))
        try:
            await upgrader(plan, rec).run()
        except KeyboardInterrupt:
            rec.status = INTERRUPTED
            records.save(rec)
            raise
        except Exception as exc:
            rec.status = FAILED
            rec.error = str(exc)
            records.save(rec)
            raise
        rec.finished = str(now())
        records.save(rec)
        say("done", f"upgrade done: {len(plan.changes)} change(s)")
    return 0


def _mark_interrupted(ctx: Any) -> None:
    """A run stopped by Ctrl-C/SIGTERM is recorded as interrupted (wherever it was stopped)."""
    from ..errors import CloudctlError
    from ..upgrade.record import INTERRUPTED, RUNNING, RecordFile

    records = RecordFile(ctx.cluster_dir, ctx.inventory.cluster.name)
    try:
        rec = records.load()
    except CloudctlError:
        return
    if rec is not None and rec.status == RUNNING:
        rec.status = INTERRUPTED
        records.save(rec)


def _refused(plan: Any) -> InputError:
    return InputError([Problem("upgrade preflight", p) for p in plan.problems])


def _print_plan(ctx: Any, plan: Any, output_format: str) -> None:
    if output_format == "json":
        click.echo(json.dumps(plan.as_dict(), indent=2, sort_keys=True))
        return
    if plan.nothing_to_do:
        click.echo("nothing to do: the cluster runs what the inventory says")
        return
    for c in plan.changes:
        click.echo(ctx.events.redactor(f"  {c.layer:<10} {c.describe()}"))
    for w in plan.warnings:
        click.echo(f"  warning: {w}")
    for u in plan.unknown:
        click.echo(f"  unknown: {u}")
    for p in plan.problems:
        click.echo(f"  refused: {p}")


@click.command(epilog=EXIT_CODES)
@inventory_option
@secrets_option
@cluster_dir_option
@click.option("--emulate", is_flag=True,
              help="Upgrade the cluster's running emulated rack (bootstrapped with --emulate).")
@click.option("--plan", "plan_only", is_flag=True,
              help="Print the plan across layers (from live facts) and change nothing.")
@click.option("--resume", is_flag=True,
              help="Continue a stopped upgrade: the change in flight, then the next ones.")
@click.option("--rollback", is_flag=True,
              help="Return to the versions the last upgrade record holds: HelmRelease chart "
                   "versions and values (direct mode) and each node's previous Talos installer "
                   "image, with the same gates. Kubernetes is not rolled back.")
@click.option("--force", is_flag=True,
              help="Upgrade a chart to a version without a vendored values schema (a warning "
                   "instead of a refusal).")
@click.option("--timeout", type=float, default=900.0, show_default=True,
              help="Seconds to wait for each remote step (reboot, Ready, etcd, releases).")
@click.option("--drain-timeout", type=float, default=300.0, show_default=True,
              help="Seconds an eviction may stay refused by a PodDisruptionBudget before the "
                   "drain gives up.")
@format_option
@handle_errors
def upgrade(
    inventory_path: Path,
    secrets_dir: Path | None,
    cluster_dir: Path | None,
    emulate: bool,
    plan_only: bool,
    resume: bool,
    rollback: bool,
    force: bool,
    timeout: float,
    drain_timeout: float,
    output_format: str,
) -> None:
    """Upgrade the cluster to what the inventory says, one plan across layers.

    \b
    Live facts (each node's Talos version and installer image over the Talos API, kubelet
    and control-plane versions, HelmRelease chart versions and values) are compared with the
    inventory. Then, in order: the platform (GitOps: commit and push, Flux reconciles; direct:
    apply), Talos one node at a time with control planes first (cordon, drain honouring
    PodDisruptionBudgets, etcd and storage gates, upgrade, verify the running version, pin the
    installer image, uncordon), then Kubernetes (control-plane components, then kubelets) one
    node at a time. The record is <cluster dir>/upgrade.json (previous versions for rollback).
    A failed gate or a node back on its old version stops the run with exit 10; --resume
    continues and never upgrades a node twice. -o json streams events as JSON lines.
    """
    from ..pipeline import Events, JsonLinesSink, Options, TextSink
    from .bootstrap import _context, interrupts_raise, rack_kind

    events = Events()
    ctx = _context(inventory_path, secrets_dir, cluster_dir, events,
                   Options(timeout=timeout), rack=rack_kind(emulate))
    with ExitStack() as stack:
        if not plan_only:
            ctx.cluster_dir.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(ctx.cluster_dir / "events.jsonl", "a"))
            events.sinks.append(JsonLinesSink(log))
            if output_format == "json":
                events.sinks.append(JsonLinesSink(sys.stdout))
            else:
                events.sinks.append(TextSink(sys.stderr))
        try:
            with interrupts_raise():
                code = run_async(_run(ctx, plan_only=plan_only, resume=resume, force=force,
                                        drain_timeout=drain_timeout,
                                        output_format=output_format, rollback=rollback))
        except KeyboardInterrupt:
            stack.close()
            _mark_interrupted(ctx)
            click.echo(f"interrupted; the upgrade record is {ctx.cluster_dir / 'upgrade.json'}:"
                       " rerun with --resume to continue", err=True)
            from ..errors import EXIT_INTERRUPTED

            sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)


COMMANDS = (upgrade,)
