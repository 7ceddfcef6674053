"""Inventory hooks: Ansible playbooks ``bootstrap`` runs at three stage boundaries.

``hooks.beforeBoot`` runs as stage ``hooks-before-boot`` (after ``image``, before ``boot``),
``hooks.afterBootstrap`` as ``hooks-after-bootstrap`` (after etcd is bootstrapped, before
``kubeconfig``) and ``hooks.afterPlatform`` as ``hooks-after-platform`` (after ``platform``,
before ``done``). Each is a stage like any other: recorded in ``state.json``, skipped by
``--resume`` once finished, selectable with ``--only``/``--from``, planned by ``--plan``;
a plain rerun runs the playbooks again (they are expected to be idempotent, as Ansible
playbooks are). A stage without hooks is skipped ("no hooks").

Relative playbook paths are relative to the inventory file's directory. Every hook's playbook
(of all three boundaries) is checked before the first hook stage runs anything, so a typo in
``afterPlatform`` fails before the nodes boot (exit 2, naming the field). The playbooks see
the inventory (``cloudctl.ansible.inventory``); their events go to the pipeline's events
(``events.jsonl``, the progress view); a failed task stops the stage (exit 11).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import InputError, Problem
from ..inventory.models import Hook, Inventory
from ..ssh import KNOWN_HOSTS
from .context import Context
from .plan import Action, StagePlan, plan_of
from .stage import Stage

BOUNDARIES: dict[str, str] = {
    "before_boot": "beforeBoot",
    "after_bootstrap": "afterBootstrap",
    "after_platform": "afterPlatform",
}
"""Hook fields (model name: YAML name), in the order their stages run."""


class HookInputError(InputError):
    """A hook's playbook or variables are wrong; built from a plan step's reason
    (``field: message``) so the field is named like any inventory problem."""

    def __init__(self, reason: str) -> None:
        path, _, message = reason.partition(": ")
        super().__init__(Problem(path, message))


@dataclass(frozen=True)
class HookFacts:
    base: Path
    """The inventory file's directory (relative playbooks are relative to it)."""
    existing: frozenset[Path]
    """The hook playbooks (all boundaries, resolved) that are files."""


def playbook_path(base: Path, hook: Hook) -> Path:
    path = Path(hook.playbook).expanduser()
    return path if path.is_absolute() else base / path


def hook_problems(inv: Inventory, facts: HookFacts, fields: tuple[str, ...]) -> list[Problem]:
    """Missing playbooks and extraVars redefining cloudctl's own variables, per field."""
    from ..ansible.inventory import RESERVED_VARS

    problems = []
    for name in fields:
        for i, hook in enumerate(getattr(inv.hooks, name)):
            where = f"hooks.{BOUNDARIES[name]}[{i}]"
            path = playbook_path(facts.base, hook)
            if path not in facts.existing:
                problems.append(Problem(f"{where}.playbook", f"{path} is not a file"))
            for var in sorted(set(hook.extra_vars) & set(RESERVED_VARS)):
                problems.append(Problem(f"{where}.extraVars.{var}",
                                        "is set by cloudctl; choose another name"))
    return problems


def _inventory(inv: Inventory, known_hosts: Path, key_dir: Path) -> dict[str, Any]:
    from ..ansible import ansible_inventory

    return ansible_inventory(inv, key_dir=key_dir, known_hosts=known_hosts)


class HookStage(Stage):
    field: ClassVar[str]
    needs_rack = False
    checks: ClassVar[tuple[str, ...]] = ()
    """The fields this stage's plan checks (the first hook stage checks them all)."""

    async def facts(self, ctx: Context) -> HookFacts:
        base = ctx.inventory_path.resolve().parent
        paths = {playbook_path(base, h) for name in BOUNDARIES
                 for h in getattr(ctx.inventory.hooks, name)}
        return HookFacts(base, frozenset(p for p in paths if p.is_file()))

    def plan(self, inv: Inventory, facts: HookFacts) -> StagePlan:
        steps = [self.step(Action.BLOCK, str(p), error=HookInputError)
                 for p in hook_problems(inv, facts, self.checks or (self.field,))]
        hooks: list[Hook] = getattr(inv.hooks, self.field)
        if not hooks:
            steps.append(self.step(Action.SKIP, "no hooks"))
        for hook in hooks:
            limit = f" (limit {hook.limit})" if hook.limit else ""
            steps.append(self.step(
                Action.RUN, f"run playbook {playbook_path(facts.base, hook)}{limit}",
                Path(hook.playbook).name))
        return plan_of(self.name, *steps)

    async def run(self, ctx: Context, plan: StagePlan, facts: HookFacts) -> str:
        from ..ansible import PlaybookRun, extravars, inventory_keys, run_playbook

        inv = ctx.inventory
        keys = inventory_keys(inv)
        known_hosts = ctx.cluster_dir / KNOWN_HOSTS
        if keys and not known_hosts.is_file():
            ctx.events(self.name, "warn", f"{known_hosts} does not exist: the host keys of the "
                       f"ssh: nodes ({', '.join(keys)}) cannot be verified, so Ansible cannot "
                       "reach them; put their host keys there")
        hooks: list[Hook] = getattr(inv.hooks, self.field)
        changed = 0
        for i, hook in enumerate(hooks):
            run = PlaybookRun(
                playbook=playbook_path(facts.base, hook),
                inventory=functools.partial(_inventory, inv, known_hosts),
                source=f"hooks.{BOUNDARIES[self.field]}[{i}].playbook",
                keys=keys,
                extravars=extravars(inv, stage=self.name,
                                    inventory_file=ctx.inventory_path.resolve(),
                                    cluster_dir=ctx.cluster_dir.resolve(),
                                    kubeconfig=ctx.kubeconfig_path.resolve(),
                                    extra=hook.extra_vars),
                limit=hook.limit,
                timeout=ctx.options.timeout,
            )
            changed += run_playbook(run, stage=self.name, events=ctx.events).changed
        return f"{len(hooks)} playbook(s) ran, {changed} change(s)"


class BeforeBootHooks(HookStage):
    name = "hooks-before-boot"
    field = "before_boot"
    checks = tuple(BOUNDARIES)


class AfterBootstrapHooks(HookStage):
    name = "hooks-after-bootstrap"
    field = "after_bootstrap"


class AfterPlatformHooks(HookStage):
    name = "hooks-after-platform"
    field = "after_platform"
