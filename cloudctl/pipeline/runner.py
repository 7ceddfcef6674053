"""Run the stages in order with persisted state, or plan them.

For each selected stage ``run_pipeline`` gathers the stage's facts, computes its plan (pure),
records the plan in the state and runs it; ``plan_pipeline`` computes the same plans and runs
nothing. The state file is saved when a stage starts, after every step inside it and when it
ends; every event goes to ``events.jsonl``. ``--resume`` starts at the first stage that is not
done; a plain rerun goes through every stage, whose plans skip what is already true.

How a stage ends is recorded as a ``StageStatus``: done, skipped, failed (a CloudctlError, or
an unexpected exception whose traceback goes to ``debug.log``), or interrupted (Ctrl-C,
SIGTERM).
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

from ..errors import CloudctlError, InputError
from .context import Context
from .plan import StagePlan, Step
from .stages import STAGE_BY_NAME, STAGE_LIST, Stage
from .state import STAGES, NodeState, StageState, StageStatus, now

TALOS_STAGES = ("discover", "apply", "bootstrap", "kubeconfig", "flux", "platform", "tenants",
                "done")
"""Stages whose results live on the rack's machines (gone with an emulated rack)."""


class InternalError(CloudctlError):
    """An unexpected exception in a stage (a bug); the traceback is in the debug log."""

    exit_code = 1


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


def new_rack_reset(ctx: Context) -> str | None:
    """When the rack is a new instance (an emulated rack restarted), the machines the state
    describes are gone: forget them (node states, Talos-side stages, bootstrap marker,
    kubeconfig) so this run builds a new cluster. Returns what was done, or None."""
    current = ctx.rack.identity()
    recorded = ctx.state.rack
    if current is None or recorded is None or current == recorded:
        ctx.state.rack = current
        return None
    st = ctx.state
    st.nodes = {name: NodeState() for name in st.nodes}
    for name in TALOS_STAGES:
        st.stages[name] = StageState()
    st.releases = {}
    moved = []
    for path in (ctx.bootstrap_path, ctx.kubeconfig_path):
        if path.exists():
            path.replace(path.with_name(path.name + ".old"))
            moved.append(path.name)
    st.rack = current
    ctx.save()
    return (f"{ctx.rack.describe()} is a new rack (the state described {recorded}): its "
            "machines are new, so this is a new cluster; node states reset"
            + (f", {' and '.join(moved)} kept as *.old" if moved else ""))


async def gather_plan(ctx: Context, stage: Stage) -> tuple[Any, StagePlan]:
    facts = await stage.facts(ctx)
    return facts, stage.plan(ctx.inventory, facts)


def _debug_log(ctx: Context, stage: str, exc: BaseException) -> None:
    ctx.cluster_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(traceback.format_exception(exc))
    redacted = ctx.events.redactor(text) or ""
    with open(ctx.debug_log, "a") as f:
        f.write(f"--- {now()} stage {stage}\n{redacted}\n")
    ctx.debug_log.chmod(0o600)


async def run_stage(ctx: Context, stage: Stage) -> None:
    name = stage.name
    st = ctx.state.stage(name)
    st.status, st.started, st.finished, st.error = StageStatus.RUNNING, now(), None, None
    ctx.save()
    ctx.events(name, "stage-start", f"{name}")
    try:
        if stage.needs_rack:
            await ctx.rack.attach(lambda line: ctx.events(name, "info", line))
        facts, plan = await gather_plan(ctx, stage)
        st.plan = [ctx.events.redactor(line) or "" for line in plan.lines()]
        for step in plan.steps:
            ctx.events(name, "plan", step.reason, node=step.target, phase=str(step.action))
        blocked = plan.blocked
        if blocked is not None:
            raise (blocked.error or CloudctlError)(blocked.reason)
        if not plan.runs:
            st.status, st.finished, st.detail = StageStatus.SKIPPED, now(), plan.skip_reason()
            ctx.save()
            ctx.events(name, "stage-skipped", st.detail)
            return
        detail = await stage.run(ctx, plan, facts)
    except CloudctlError as exc:
        st.status, st.finished = StageStatus.FAILED, now()
        st.error = ctx.events.redactor(exc.message)
        ctx.save()
        ctx.events(name, "stage-failed", f"{name} failed", error=exc.message)
        raise
    except (KeyboardInterrupt, asyncio.CancelledError):
        st.status, st.finished, st.error = StageStatus.INTERRUPTED, now(), "interrupted"
        ctx.save()
        ctx.events(name, "stage-interrupted", f"{name} interrupted; rerun with --resume")
        raise
    except Exception as exc:
        _debug_log(ctx, name, exc)
        message = (f"internal error in stage {name}: {type(exc).__name__}: {exc} (a bug; "
                   f"traceback in {ctx.debug_log})")
        st.status, st.finished = StageStatus.FAILED, now()
        st.error = ctx.events.redactor(message)
        ctx.save()
        ctx.events(name, "stage-failed", f"{name} failed", error=message)
        raise InternalError(ctx.events.redactor(message) or message) from exc
    st.status, st.finished, st.detail = StageStatus.DONE, now(), ctx.events.redactor(detail)
    ctx.save()
    ctx.events(name, "stage-done", detail)


def mark_interrupted(ctx: Context) -> str | None:
    """After Ctrl-C: record a stage left running as interrupted; returns the interrupted
    stage's name (None when no stage was under way)."""
    for name in STAGES:
        st = ctx.state.stage(name)
        if st.status == StageStatus.RUNNING:
            st.status, st.finished, st.error = StageStatus.INTERRUPTED, now(), "interrupted"
            ctx.save()
    return next((n for n in STAGES if ctx.state.stage(n).status == StageStatus.INTERRUPTED),
                None)


async def run_pipeline(
    ctx: Context, *, resume: bool = False, from_stage: str | None = None,
    only: str | None = None,
) -> list[str]:
    """Run the selected stages; returns their names. A KeyboardInterrupt (the CLI raises it
    on SIGINT and SIGTERM, wherever the process is) marks the running stage interrupted."""
    return await _run(ctx, resume=resume, from_stage=from_stage, only=only)


async def _run(
    ctx: Context, *, resume: bool, from_stage: str | None, only: str | None
) -> list[str]:
    stages = select_stages(ctx, resume=resume, from_stage=from_stage, only=only)
    if ctx.store.exists():
        _ = ctx.bundle  # redact secrets from the first event on
    # --resume of a finished run still checks that the rack is the one the state describes
    if resume or any(STAGE_BY_NAME[n].needs_rack for n in stages):
        await ctx.rack.attach(lambda line: ctx.events("rack", "info", line))
        reset = new_rack_reset(ctx)
        if reset:
            ctx.events("rack", "warn", reset)
            if resume:
                stages = select_stages(ctx, resume=True)
        ctx.save()
    for name in STAGES[: STAGES.index(stages[0])] if stages else STAGES:
        if resume and ctx.state.stage(name).complete:
            ctx.events(name, "stage-skipped", "done in an earlier run")
    for name in stages:
        await run_stage(ctx, STAGE_BY_NAME[name])
    return stages


# --------------------------------------------------------------------------- plan


async def plan_pipeline(
    ctx: Context, *, resume: bool = False, from_stage: str | None = None,
    only: str | None = None,
) -> list[Step]:
    """The plan of every stage, from the state file and, where the rack can be reached
    without starting anything, live facts — the same plans a run computes. Changes nothing.
    Stages not selected are listed as skipped with their recorded status."""
    from .plan import Action

    selected = select_stages(ctx, resume=resume, from_stage=from_stage, only=only)
    if ctx.store.exists():
        _ = ctx.bundle
    steps: list[Step] = []
    if ctx.rack.reachable() and ctx.rack.identity() not in (None, ctx.state.rack) \
            and ctx.state.rack is not None:
        steps.append(Step("rack", Action.RUN, f"{ctx.rack.describe()} is a new rack: reset the "
                          "node states and start a new cluster"))
    for stage in STAGE_LIST:
        if stage.name not in selected:
            status = ctx.state.stage(stage.name).status
            steps.append(Step(stage.name, Action.SKIP, f"not selected ({status})"))
            continue
        try:
            _, plan = await gather_plan(ctx, stage)
        except CloudctlError as exc:
            steps.append(Step(stage.name, Action.BLOCK, f"cannot plan: {exc.message}"))
            continue
        steps += plan.steps
    return steps

