"""Persisted pipeline state: what has been done, per stage and per node.

The state file (``<cluster dir>/state.json``) is rewritten atomically after every step, so a
process killed at any point leaves either the previous or the next consistent state. It holds no
secrets.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import StateError
from ..util.jsontext import Encoded, entry_per_line

STAGES: tuple[str, ...] = (
    "preflight",
    "image",
    "hooks-before-boot",
    "boot",
    "discover",
    "apply",
    "bootstrap",
    "hooks-after-bootstrap",
    "kubeconfig",
    "flux",
    "platform",
    "hooks-after-platform",
    "tenants",
    "done",
)
"""Every stage in order (``stages.STAGE_LIST`` holds them); the ``hooks-*`` stages run the
inventory's Ansible hooks (``pipeline.hooks``)."""

STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 also kept the etcd bootstrap marker; ``bootstrap.json`` is its only record now."""


class StageStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """Stopped by Ctrl-C / SIGINT / SIGTERM; ``--resume`` starts here again."""

    @property
    def finished(self) -> bool:
        return self in (StageStatus.DONE, StageStatus.SKIPPED)


class NodePhase(StrEnum):
    PENDING = "pending"
    DISCOVERED = "discovered"
    APPLYING = "applying"
    APPLIED = "applied"
    READY = "ready"


@dataclass
class StageState:
    status: StageStatus = StageStatus.PENDING
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    detail: str | None = None
    plan: list[str] = field(default_factory=list)
    """The plan the stage ran (or skipped), one line per step."""

    @property
    def complete(self) -> bool:
        """Done or skipped: ``--resume`` starts after it."""
        return StageStatus(self.status).finished


@dataclass
class NodeState:
    phase: NodePhase = NodePhase.PENDING
    maintenance_endpoint: str | None = None
    endpoint: str | None = None
    applied_config_sha256: str | None = None
    error: str | None = None
    boot_address: str | None = None
    """The address the node was seen using while it network-booted (proxy-mode DHCP: handed
    out by another server); discovery probes it."""


@dataclass
class PipelineState:
    cluster: str
    version: int = STATE_VERSION
    stages: dict[str, StageState] = field(default_factory=dict)
    nodes: dict[str, NodeState] = field(default_factory=dict)
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    rack: str | None = None
    """The identity of the rack instance the nodes' states refer to (emulated racks)."""

    def stage(self, name: str) -> StageState:
        return self.stages.setdefault(name, StageState())

    def node(self, name: str) -> NodeState:
        return self.nodes.setdefault(name, NodeState())

    def first_unfinished(self) -> str | None:
        """Where ``--resume`` starts. A hook stage that never started is passed over when
        the stage after it finished: the state predates hook stages (written by an older
        cloudctl) or the run started past it (``--from``)."""
        for i, name in enumerate(STAGES):
            st = self.stage(name)
            if st.complete:
                continue
            after = STAGES[i + 1] if i + 1 < len(STAGES) else None
            if (name.startswith("hooks-") and st.status == StageStatus.PENDING
                    and st.started is None and after and self.stage(after).complete):
                continue
            return name
        return None

    def to_json(self) -> str:
        """The state file's text: one line per top-level field, per stage and per node.

        Written after each node's progress (a hundred times per rack in the apply stage), so
        built for speed: what asdict() gives without its deep copy of every plan line, each
        line by json's C encoder (see ``util.jsontext``)."""
        doc = _fields(self)
        doc["stages"] = {k: _fields(v) for k, v in self.stages.items()}
        doc["nodes"] = {k: _node_text(v) for k, v in self.nodes.items()}
        return entry_per_line(doc, ("stages", "nodes"))

    @classmethod
    def from_json(cls, text: str) -> PipelineState:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"version {raw.get('version')!r} is not supported "
                             f"(this cloudctl reads {', '.join(map(str, READABLE_VERSIONS))})")
        st = cls(cluster=str(raw["cluster"]))
        st.stages = {}
        for k, v in raw.get("stages", {}).items():
            if k not in STAGES:
                raise ValueError(f"unknown stage {k!r}")
            stage = StageState(**v)
            stage.status = StageStatus(stage.status)
            st.stages[k] = stage
        st.nodes = {}
        for k, v in raw.get("nodes", {}).items():
            node = NodeState(**v)
            node.phase = NodePhase(node.phase)
            st.nodes[k] = node
        st.releases = dict(raw.get("releases", {}))
        st.rack = raw.get("rack")
        st.facts = dict(raw.get("facts", {}))
        return st


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


_NODE_FIELDS = tuple(f.name for f in fields(NodeState))


def _node_text(node: NodeState) -> Encoded:
    """A node's JSON text: most nodes are unchanged between two of the many saves of a
    stage, so their text is reused (keyed by every field's value, all of them strings)."""
    return _encoded_node(tuple(getattr(node, name) for name in _NODE_FIELDS))


@functools.lru_cache(maxsize=4096)
def _encoded_node(values: tuple[str | None, ...]) -> Encoded:
    return Encoded(json.dumps(dict(zip(_NODE_FIELDS, values, strict=True)), sort_keys=True))


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
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(
                f"{self.path}: corrupt state file ({type(exc).__name__}: {exc}); move it "
                "aside to start over (the secrets, render/ and bootstrap.json are separate)"
            ) from None
        except OSError as exc:
            raise StateError(f"{self.path}: unreadable state file ({exc})") from None
        if st.cluster != self.cluster:
            raise StateError(
                f"{self.path} belongs to cluster {st.cluster!r}, not {self.cluster!r} "
                "(another inventory's cluster directory? pass --cluster-dir)"
            )
        return st

    def save(self, state: PipelineState, *, fsync: bool = True) -> None:
        write_atomic(self.path, state.to_json(), mode=0o600, fsync=fsync)


def now() -> float:
    return round(time.time(), 3)
