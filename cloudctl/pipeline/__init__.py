"""``cloudctl bootstrap``: the pipeline from powered-off rack to platform Ready.

Stages (``state.STAGES``): preflight → image → boot → discover → apply → bootstrap →
kubeconfig → flux → platform → done. State lives in the cluster directory
(``<inventory dir>/clusters/<cluster>/``): ``state.json``, ``render/``, ``kubeconfig`` (0600),
``bootstrap.json`` (the etcd bootstrap marker), ``events.jsonl``.
"""

from .context import Context, Options, default_cluster_dir
from .events import Event, Events, JsonLinesSink, Redactor, TextSink
from .runner import PlanItem, plan_pipeline, run_pipeline, select_stages
from .state import STAGES, PipelineState, StateFile

__all__ = [
    "STAGES",
    "Context",
    "Event",
    "Events",
    "JsonLinesSink",
    "Options",
    "PipelineState",
    "PlanItem",
    "Redactor",
    "StateFile",
    "TextSink",
    "default_cluster_dir",
    "plan_pipeline",
    "run_pipeline",
    "select_stages",
]
