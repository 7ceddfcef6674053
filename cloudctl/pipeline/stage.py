"""The base of every pipeline stage (``stages``, ``hooks``): facts, a pure plan, run."""

from __future__ import annotations

from typing import Any, ClassVar

from ..errors import CloudctlError
from ..inventory.models import Inventory
from .context import Context
from .plan import Action, StagePlan, Step


class Stage:
    name: ClassVar[str]
    needs_rack: ClassVar[bool] = True
    """Whether ``run`` needs the rack attached (started, for the emulated rack)."""

    async def facts(self, ctx: Context) -> Any:
        return None

    def plan(self, inv: Inventory, facts: Any) -> StagePlan:
        raise NotImplementedError

    async def run(self, ctx: Context, plan: StagePlan, facts: Any) -> str:
        raise NotImplementedError

    def step(self, action: Action, reason: str, target: str | None = None,
             error: type[CloudctlError] | None = None) -> Step:
        return Step(self.name, action, reason, target, error)
