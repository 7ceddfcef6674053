"""Faults injected into the emulated rack: the spec model and its parser (pure, no I/O).

A fault is written on the command line as ``KIND:TARGET[:key=value,key=value]``
(``cloudctl emulate start --fault SPEC``) or, in a faults file, as a YAML list of mappings
``{kind: KIND, target: TARGET, key: value, ...}``. Parameters are split at a comma that is
followed by ``word=``, so a message may contain commas and colons
(``release-fails:cilium:times=2,message=timed out: context deadline exceeded``).

Kinds::

    release-fails:RELEASE[:times=N,reason=R,message=M]
        the HelmRelease RELEASE (namespace flux-system) fails its Helm install/upgrade N times,
        then succeeds; without ``times`` every attempt fails. helm-controller's retry rules
        (``spec.<action>.remediation.retries``) decide whether it retries or stalls.
    node-unreachable:NODE             the node's Talos API never answers (connection refused)
    node-slow:NODE[:seconds=S]        every Talos API call of the node waits S seconds (default 2)
    apply-rejected:NODE[:message=M]   ApplyConfiguration answers Internal with M
    upgrade-rollback:NODE             an upgrade "fails to boot": the node comes back on its
                                      old version (A/B rollback)
    etcd-unhealthy:NODE[:message=M]   the node's etcd member reports error M in EtcdStatus
    pdb-blocks-drain:NODE[:policy=P,pod=S]
        a Deployment ``drain-guard`` (namespace default) with one pod pinned to NODE and a
        PodDisruptionBudget ``maxUnavailable: 0`` over it: evicting it answers 429, so draining
        NODE is refused naming ``drain-guard``. ``policy`` sets the budget's
        ``unhealthyPodEvictionPolicy`` (IfHealthyBudget or AlwaysAllow); ``pod=unhealthy``
        keeps the pod running but not Ready (with AlwaysAllow it may then be evicted).
    storage-not-uptodate:RESOURCE[:node=NODE,state=S]
        the LINSTOR resource RESOURCE (made with a replica on NODE and one on another node when
        it does not exist) has every replica but the one on NODE in DRBD disk state S (default
        Outdated): NODE holds its last UpToDate replica. Without ``node`` the replica on the
        first node by name keeps UpToDate.
    component-not-deployed:kubevirt|cdi[:reason=R,message=M]
        the operator never finishes deploying: the KubeVirt/CDI CR stays in phase Deploying
        with Available=False and Degraded=True carrying R and M

NODE is a node name of the inventory, RELEASE a HelmRelease name of the platform catalog.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, Problem

__all__ = [
    "COMPONENTS",
    "KINDS",
    "Fault",
    "FaultSet",
    "fault_from_mapping",
    "parse_fault",
    "parse_faults",
    "parse_faults_document",
]

COMPONENTS = ("kubevirt", "cdi")
"""Targets of ``component-not-deployed``."""

_INT, _FLOAT, _TEXT, _REASON = "int", "float", "text", "reason"

KINDS: dict[str, dict[str, str]] = {
    "release-fails": {"times": _INT, "reason": _REASON, "message": _TEXT},
    "node-unreachable": {},
    "node-slow": {"seconds": _FLOAT},
    "apply-rejected": {"message": _TEXT},
    "upgrade-rollback": {},
    "etcd-unhealthy": {"message": _TEXT},
    "pdb-blocks-drain": {"policy": _REASON, "pod": _TEXT},
    "storage-not-uptodate": {"node": _TEXT, "state": _TEXT},
    "component-not-deployed": {"reason": _REASON, "message": _TEXT},
}
"""Kind -> its parameters and their types."""

NODE_KINDS = ("node-unreachable", "node-slow", "apply-rejected", "upgrade-rollback",
              "etcd-unhealthy")

KUBE_NODE_KINDS = ("pdb-blocks-drain",)
EVICTION_POLICIES = ("IfHealthyBudget", "AlwaysAllow")
"""Kinds whose target is a node, injected into the Kubernetes API emulator (not Talos)."""

DISK_STATES = ("UpToDate", "Outdated", "Inconsistent", "Consistent", "Failed", "DUnknown",
               "Negotiating", "Attaching", "Detaching", "Diskless")
"""DRBD disk states ``storage-not-uptodate`` accepts for ``state``."""

GRAMMAR = "KIND:TARGET[:key=value,key=value]"

_PARAM_SPLIT = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_-]*=)")
_REASON_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # a Kubernetes condition reason


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str
    params: tuple[tuple[str, str | int | float], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in self.params:
            if k == key:
                return v
        return default

    @property
    def spec(self) -> str:
        """The canonical ``KIND:TARGET[:k=v,...]`` text (parameters sorted)."""
        if not self.params:
            return f"{self.kind}:{self.target}"
        return f"{self.kind}:{self.target}:" + ",".join(f"{k}={v}" for k, v in self.params)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, **dict(self.params)}


def _problem(spec: str, message: str) -> InputError:
    return InputError(Problem(f"fault {spec!r}", message))


def _typed(spec: str, key: str, kind: str, raw: Any) -> str | int | float:
    what = KINDS[kind][key]
    if what == _INT:
        try:
            value = int(str(raw).strip()) if not isinstance(raw, bool) else None
        except ValueError:
            value = None
        if value is None or value < 1:
            raise _problem(spec, f"{key} must be a whole number >= 1, got {raw!r}")
        return value
    if what == _FLOAT:
        try:
            number = float(str(raw).strip()) if not isinstance(raw, bool) else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number <= 0:
            raise _problem(spec, f"{key} must be a number of seconds > 0, got {raw!r}")
        return number
    text = str(raw).strip() if raw is not None else ""
    if not text:
        raise _problem(spec, f"{key} must not be empty")
    if what == _REASON and not _REASON_RE.match(text):
        raise _problem(
            spec, f"{key} must be a CamelCase condition reason (letters, digits, _), got {text!r}"
        )
    return text


def _build(spec: str, kind: str, target: str, params: Mapping[str, Any]) -> Fault:
    if kind not in KINDS:
        raise _problem(spec, f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if not target:
        raise _problem(spec, f"no target: the format is {GRAMMAR}")
    if kind == "pdb-blocks-drain":
        if params.get("policy") not in (None, *EVICTION_POLICIES):
            raise _problem(spec, f"policy must be one of {', '.join(EVICTION_POLICIES)}, "
                                 f"got {params['policy']!r}")
        if params.get("pod") not in (None, "healthy", "unhealthy"):
            raise _problem(spec, f"pod must be healthy or unhealthy, got {params['pod']!r}")
    if kind == "component-not-deployed" and target not in COMPONENTS:
        raise _problem(spec, f"component must be one of {', '.join(COMPONENTS)}, got {target!r}")
    allowed = KINDS[kind]
    typed: dict[str, str | int | float] = {}
    for key, raw in params.items():
        if key not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise _problem(spec, f"unknown parameter {key!r} for {kind} (parameters: {known})")
        typed[key] = _typed(spec, key, kind, raw)
    return Fault(kind, target, tuple(sorted(typed.items())))


def parse_fault(text: str) -> Fault:
    """``KIND:TARGET[:key=value,...]`` -> :class:`Fault`; :class:`InputError` (exit 2) naming the
    spec when it is malformed (structure, kind, parameter names and values)."""
    spec = text.strip()
    kind, sep, rest = spec.partition(":")
    if not sep:
        raise _problem(spec, f"expected {GRAMMAR}")
    target, _, param_text = rest.partition(":")
    params: dict[str, str] = {}
    if param_text.strip():
        for item in _PARAM_SPLIT.split(param_text):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise _problem(spec, f"parameter {item!r} is not key=value")
            if key in params:
                raise _problem(spec, f"parameter {key!r} given twice")
            params[key] = value
    return _build(spec, kind.strip(), target.strip(), params)


def fault_from_mapping(item: Any, where: str) -> Fault:
    """One entry of a faults file: ``{kind, target, <params>}``."""
    if not isinstance(item, Mapping):
        raise InputError(Problem(where, f"must be a mapping with kind and target, got {item!r}"))
    kind, target = item.get("kind"), item.get("target")
    if not isinstance(kind, str) or not isinstance(target, str):
        raise InputError(Problem(where, "needs string fields 'kind' and 'target'"))
    params = {str(k): v for k, v in item.items() if k not in ("kind", "target")}
    spec = f"{kind}:{target}" + (
        ":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else ""
    )
    try:
        return _build(spec, kind.strip(), target.strip(), params)
    except InputError as exc:
        raise InputError([Problem(where, str(p)) for p in exc.problems]) from None


def parse_faults_document(text: str, *, source: str) -> list[Fault]:
    """A faults file (YAML: a list of ``{kind, target, key: value}`` mappings)."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(Problem("faults file", f"invalid YAML: {exc}"), source=source) from None
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise InputError(
            Problem("faults file", "must be a YAML list of {kind, target, ...} mappings"),
            source=source,
        )
    faults: list[Fault] = []
    problems: list[Problem] = []
    for i, item in enumerate(doc):
        try:
            faults.append(fault_from_mapping(item, f"[{i}]"))
        except InputError as exc:
            problems += exc.problems
    if problems:
        raise InputError(problems, source=source)
    return faults


def parse_faults(items: Iterable[str | Fault]) -> list[Fault]:
    return [i if isinstance(i, Fault) else parse_fault(i) for i in items]


@dataclass(frozen=True)
class FaultSet:
    """The faults of one rack, checked against its inventory and platform."""

    faults: tuple[Fault, ...]

    @classmethod
    def build(
        cls,
        faults: Sequence[str | Fault],
        *,
        nodes: Iterable[str],
        releases: Iterable[str],
    ) -> FaultSet:
        """Parse and check targets: unknown node or release names are input errors."""
        parsed = parse_faults(faults)
        node_names, release_names = sorted(set(nodes)), sorted(set(releases))
        problems: list[Problem] = []
        seen: dict[tuple[str, str], str] = {}
        for f in parsed:
            where = f"fault {f.spec!r}"
            if f.kind in (*NODE_KINDS, *KUBE_NODE_KINDS) and f.target not in node_names:
                problems.append(Problem(where, f"no node {f.target!r} in the inventory "
                                               f"(nodes: {', '.join(node_names)})"))
            if f.kind == "storage-not-uptodate":
                node = f.get("node")
                if node is not None and node not in node_names:
                    problems.append(Problem(where, f"no node {node!r} in the inventory "
                                                   f"(nodes: {', '.join(node_names)})"))
                if f.get("state", "Outdated") not in DISK_STATES:
                    problems.append(Problem(where, f"state must be a DRBD disk state "
                                                   f"({', '.join(DISK_STATES)})"))
            if f.kind == "release-fails" and f.target not in release_names:
                problems.append(Problem(where, f"no HelmRelease {f.target!r} in the platform "
                                               f"(releases: {', '.join(release_names)})"))
            key = (f.kind, f.target)
            if key in seen:
                problems.append(Problem(where, f"{f.kind} for {f.target} is also given as "
                                               f"{seen[key]!r}"))
            seen[key] = f.spec
        if problems:
            raise InputError(problems)
        return cls(tuple(sorted(parsed, key=lambda f: (f.kind, f.target))))

    def of_kind(self, kind: str) -> list[Fault]:
        return [f for f in self.faults if f.kind == kind]

    def specs(self) -> list[str]:
        return [f.spec for f in self.faults]

    def as_list(self) -> list[dict[str, Any]]:
        return [f.as_dict() for f in self.faults]
