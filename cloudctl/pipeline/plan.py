"""Plans: what a stage will do, per node or release, and why (pure data).

Each stage gathers facts, computes a ``StagePlan`` from them with a pure function, and runs
that plan; ``bootstrap --plan`` prints the same plans. A ``BLOCK`` step means the stage cannot
run as things stand: running it fails with the step's reason (and its error type).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..errors import CloudctlError


class Action(StrEnum):
    RUN = "run"
    SKIP = "skip"
    BLOCK = "block"


@dataclass(frozen=True)
class Step:
    stage: str
    action: Action
    reason: str
    target: str | None = None
    """The node or release the step is about (None: the whole stage)."""
    error: type[CloudctlError] | None = None
    """For BLOCK steps: the error raised when the stage is run anyway."""

    def line(self) -> str:
        who = f" {self.target}:" if self.target else ""
        return f"{self.action:5} {self.stage:10}{who} {self.reason}"


@dataclass(frozen=True)
class StagePlan:
    stage: str
    steps: tuple[Step, ...]

    @property
    def runs(self) -> bool:
        return any(s.action is Action.RUN for s in self.steps)

    @property
    def blocked(self) -> Step | None:
        return next((s for s in self.steps if s.action is Action.BLOCK), None)

    def targets(self, action: Action = Action.RUN) -> list[str]:
        return [s.target for s in self.steps if s.action is action and s.target]

    def skip_reason(self) -> str:
        reasons = list(dict.fromkeys(s.reason for s in self.steps if s.action is Action.SKIP))
        if len(reasons) == 1:
            return reasons[0]
        return "; ".join(f"{s.target}: {s.reason}" if s.target else s.reason
                         for s in self.steps if s.action is Action.SKIP)

    def lines(self) -> list[str]:
        return [s.line() for s in self.steps]


def plan_of(stage: str, *steps: Step) -> StagePlan:
    return StagePlan(stage, tuple(steps))
