"""``cloudctl bootstrap``: the pipeline from powered-off rack to platform Ready.

Stages (``state.STAGES``): preflight → image → hooks-before-boot → boot → discover → apply →
bootstrap → hooks-after-bootstrap → kubeconfig → flux → platform → hooks-after-platform → tenants
→ done
(the ``hooks-*`` stages run the inventory's Ansible hooks, ``hooks``). State lives in the
cluster directory
(``<inventory dir>/clusters/<cluster>/``): ``state.json``, ``render/``, ``kubeconfig`` (0600),
``bootstrap.json`` (the etcd bootstrap marker: its one record), ``events.jsonl``,
``debug.log`` (tracebacks of unexpected errors). Each stage gathers facts, plans, and runs its
plan (``stages``); the rack it drives is ``Context.rack`` (``cloudctl.rack``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import Context, Options, default_cluster_dir
    from .events import Event, Events, JsonLinesSink, Redactor, TextSink
    from .plan import Action, StagePlan, Step
    from .runner import mark_interrupted, plan_pipeline, run_pipeline, select_stages
    from .state import STAGES, NodePhase, PipelineState, StageStatus, StateFile

_HOME = {
    "Context": "context", "Options": "context", "default_cluster_dir": "context",
    "Event": "events", "Events": "events", "JsonLinesSink": "events", "Redactor": "events",
    "TextSink": "events", "Action": "plan", "StagePlan": "plan", "Step": "plan",
    "mark_interrupted": "runner", "plan_pipeline": "runner", "run_pipeline": "runner",
    "select_stages": "runner", "STAGES": "state", "NodePhase": "state",
    "PipelineState": "state", "StageStatus": "state", "StateFile": "state",
}
"""Where each name lives: imported on first use, so ``from .pipeline.state import STAGES``
(the CLI's stage choices) does not load the whole pipeline (Kubernetes client, gRPC)."""


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "STAGES",
    "Action",
    "Context",
    "Event",
    "Events",
    "JsonLinesSink",
    "NodePhase",
    "Options",
    "PipelineState",
    "Redactor",
    "StagePlan",
    "StageStatus",
    "StateFile",
    "Step",
    "TextSink",
    "default_cluster_dir",
    "mark_interrupted",
    "plan_pipeline",
    "run_pipeline",
    "select_stages",
]
