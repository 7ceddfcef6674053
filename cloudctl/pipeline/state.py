"""Persisted pipeline state: what has been done, per stage and per node.

The state file (``<cluster dir>/state.json``) is rewritten atomically after every step, so a
process killed at any point leaves either the previous or the next consistent state. It holds no
secrets.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import CloudctlError

STAGES: tuple[str, ...] = (
    "preflight",
    "image",
    "boot",
    "discover",
    "apply",
    "bootstrap",
    "kubeconfig",
    "flux",
    "platform",
    "done",
)

STATE_VERSION = 1


@dataclass
class StageState:
    status: str = "pending"  # pending | running | done | failed | skipped
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    detail: str | None = None


@dataclass
class NodeState:
    phase: str = "pending"  # pending | discovered | applied | ready
    maintenance_endpoint: str | None = None
    endpoint: str | None = None
    applied_config_sha256: str | None = None
    error: str | None = None


@dataclass
class PipelineState:
    cluster: str
    version: int = STATE_VERSION
    stages: dict[str, StageState] = field(default_factory=dict)
    nodes: dict[str, NodeState] = field(default_factory=dict)
    bootstrapped: bool = False
    bootstrap_node: str | None = None
    bootstrap_at: float | None = None
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> StageState:
        return self.stages.setdefault(name, StageState())

    def node(self, name: str) -> NodeState:
        return self.nodes.setdefault(name, NodeState())

    def first_unfinished(self) -> str | None:
        for name in STAGES:
            if self.stage(name).status not in ("done", "skipped"):
                return name
        return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PipelineState:
        raw = json.loads(text)
        if raw.get("version") != STATE_VERSION:
            raise CloudctlError(f"state file version {raw.get('version')} is not supported")
        st = cls(cluster=raw["cluster"])
        st.stages = {k: StageState(**v) for k, v in raw.get("stages", {}).items()}
        st.nodes = {k: NodeState(**v) for k, v in raw.get("nodes", {}).items()}
        st.bootstrapped = bool(raw.get("bootstrapped"))
        st.bootstrap_node = raw.get("bootstrap_node")
        st.bootstrap_at = raw.get("bootstrap_at")
        st.releases = dict(raw.get("releases", {}))
        st.facts = dict(raw.get("facts", {}))
        return st


class StateFile:
    """Atomic load/save of a PipelineState."""

    def __init__(self, path: Path, cluster: str) -> None:
        self.path = path
        self.cluster = cluster

    def load(self) -> PipelineState:
        if not self.path.is_file():
            return PipelineState(cluster=self.cluster)
        try:
            st = PipelineState.from_json(self.path.read_text())
        except (ValueError, KeyError, TypeError) as exc:
            raise CloudctlError(f"{self.path}: corrupt state file ({exc})") from None
        if st.cluster != self.cluster:
            raise CloudctlError(
                f"{self.path} belongs to cluster {st.cluster!r}, not {self.cluster!r}"
            )
        return st

    def save(self, state: PipelineState) -> None:
        write_atomic(self.path, state.to_json(), mode=0o600)


def now() -> float:
    return round(time.time(), 3)
