"""``cloudctl bootstrap``: the pipeline from powered-off rack to platform Ready.

Stages (``state.STAGES``): preflight → image → boot → discover → apply → bootstrap →
kubeconfig → flux → platform → done. State lives in the cluster directory
(``<inventory dir>/clusters/<cluster>/``): ``state.json``, ``render/``, ``kubeconfig`` (0600),
``bootstrap.json`` (the etcd bootstrap marker: its one record), ``events.jsonl``,
``debug.log`` (tracebacks of unexpected errors). Each stage gathers facts, plans, and runs its
plan (``stages``); the rack it drives is ``Context.rack`` (``cloudctl.rack``).
"""

from .context import Context, Options, default_cluster_dir
from .events import Event, Events, JsonLinesSink, Redactor, TextSink
from .plan import Action, StagePlan, Step
from .runner import mark_interrupted, plan_pipeline, run_pipeline, select_stages
from .state import STAGES, NodePhase, PipelineState, StageStatus, StateFile

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
