"""Pods of the Kubernetes API emulator: scheduling choice, names, pod objects (pure functions).

Scheduling follows kube-scheduler's filters the emulator models, deterministically:

- ``NodeUnschedulable``: a cordoned node (``spec.unschedulable``) takes only pods tolerating
  ``node.kubernetes.io/unschedulable:NoSchedule`` (DaemonSet pods do, as the DaemonSet
  controller adds that toleration);
- ``TaintToleration``: every ``NoSchedule``/``NoExecute`` taint must be tolerated (Kubernetes'
  toleration matching: key, ``Equal``/``Exists``, value, effect). Looser than a cluster on
  purpose: the lifecycle taint ``node.kubernetes.io/not-ready`` is not a filter here, because
  the emulator's NotReady only stands for "the CNI release is not Ready yet" (the pipeline waits
  on it) and the pods it runs would tolerate it (Flux, CNI agents); ``.../unreachable`` (a
  kubelet that stopped posting status) is one; ``PreferNoSchedule`` is ignored; a ``NoExecute``
  taint does not evict running pods;
- ``NodeAffinity``/``nodeSelector``: ``spec.nodeSelector`` labels, and the ``matchFields``
  ``metadata.name`` term DaemonSet pods carry; other affinity terms are not evaluated.
- the choice: the fitting node with the fewest pods of the same owner, then the fewest pods,
  then the smallest name (a spread, stable for tests). Resources are not accounted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .kube_fields import clone

__all__ = [
    "DAEMON_TOLERATIONS",
    "UNSCHEDULABLE_TAINT",
    "fit_problems",
    "pick_node",
    "pod_from_template",
    "safe_hash",
    "tolerates",
]

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
_LIFECYCLE_TAINTS = (NOT_READY_TAINT,)
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # rand.SafeEncodeString's alphabet

DAEMON_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": NOT_READY_TAINT, "operator": "Exists", "effect": "NoExecute"},
    {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"},
)
"""The tolerations the DaemonSet controller adds to every daemon pod."""


def safe_hash(*parts: Any, length: int = 10) -> str:
    """A stable name fragment in the alphabet Kubernetes uses for generated names."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:length])


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """v1.Toleration.ToleratesTaint over a list."""
    for t in tolerations:
        effect = t.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = t.get("key") or ""
        operator = t.get("operator") or "Equal"
        if not key:
            if operator == "Exists":
                return True
            continue
        if key != taint.get("key"):
            continue
        if operator == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _required_names(pod_spec: Mapping[str, Any]) -> set[str] | None:
    """``metadata.name`` values of a required node-affinity matchFields term (DaemonSet pods)."""
    terms = (
        (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
         .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
        .get("nodeSelectorTerms") or []
    )
    names: set[str] | None = None
    for term in terms:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In":
                names = (names or set()) | set(field.get("values") or [])
    return names


def fit_problems(node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> list[str]:
    """Why the pod cannot go to the node (empty: it fits), in the scheduler's words."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    tolerations = pod_spec.get("tolerations") or []
    out: list[str] = []
    names = _required_names(pod_spec)
    selector = pod_spec.get("nodeSelector") or {}
    labels = meta.get("labels") or {}
    if (names is not None and meta.get("name") not in names) or any(
        labels.get(k) != v for k, v in selector.items()
    ):
        out.append("didn't match Pod's node affinity/selector")
    if spec.get("unschedulable") and not tolerates(
        tolerations, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
    ):
        out.append("were unschedulable")
    for taint in spec.get("taints") or []:
        if taint.get("key") in _LIFECYCLE_TAINTS or taint.get("key") == UNSCHEDULABLE_TAINT:
            continue
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(
            tolerations, taint
        ):
            value = f"={taint['value']}" if taint.get("value") else ""
            out.append(f"had untolerated taint {{{taint.get('key')}{value}: }}")
    return out


def unschedulable_message(problems: Mapping[str, list[str]]) -> str:
    """kube-scheduler's FailedScheduling summary: ``0/3 nodes are available: ...``."""
    counts: dict[str, int] = {}
    for reasons in problems.values():
        for r in reasons:
            counts[r] = counts.get(r, 0) + 1
    parts = [
        f"{n} node(s) {reason}" for reason, n in sorted(counts.items(), key=lambda kv: kv[0])
    ]
    head = f"0/{len(problems)} nodes are available"
    tail = ". preemption: 0/{0} nodes are available: {0} Preemption is not helpful for " \
        "scheduling.".format(len(problems))
    return head + (": " + ", ".join(parts) if parts else "") + tail


def pick_node(
    candidates: Sequence[str], owner_load: Mapping[str, int], total_load: Mapping[str, int]
) -> str | None:
    """The spread choice among fitting nodes (None: none fits)."""
    if not candidates:
        return None
    return min(candidates, key=lambda n: (owner_load.get(n, 0), total_load.get(n, 0), n))


def pod_from_template(
    template: Mapping[str, Any],
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any],
    extra_labels: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    node_name: str | None = None,
) -> dict[str, Any]:
    """A Pod as a workload controller creates it from its template (``owner``: the controller
    object: its apiVersion, kind, name and uid become the controller ownerReference)."""
    tmeta = clone(dict(template.get("metadata") or {}))
    spec = clone(dict(template.get("spec") or {}))
    labels = {**(tmeta.get("labels") or {}), **(extra_labels or {})}
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if tmeta.get("annotations"):
        meta["annotations"] = tmeta["annotations"]
    have = [dict(t) for t in spec.get("tolerations") or []]
    for t in tolerations:
        if t not in have:
            have.append(dict(t))
    if have:
        spec["tolerations"] = have
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    if node_name is not None:
        spec["affinity"] = {
            **(spec.get("affinity") or {}),
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": [node_name]}
                            ]
                        }
                    ]
                }
            },
        }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def pod_ip(namespace: str, name: str, uid: str) -> str:
    """A stable address in the default Talos pod subnet (100.65.0.0/16)."""
    digest = hashlib.sha256(f"{namespace}/{name}/{uid}".encode()).digest()
    return f"100.65.{digest[0]}.{max(1, digest[1] % 255)}"


def running_status(
    pod: Mapping[str, Any], *, host_ip: str, ready: bool, started: str, stamp: str
) -> dict[str, Any]:
    """The kubelet's status of a pod whose containers run (Ready or not)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ip = host_ip if spec.get("hostNetwork") else pod_ip(
        meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")
    )
    flag = "True" if ready else "False"
    not_ready = {} if ready else {
        "reason": "ContainersNotReady",
        "message": "containers with unready status: ["
        + " ".join(c.get("name", "") for c in spec.get("containers") or []) + "]",
    }
    return {
        "phase": "Running",
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": flag, **not_ready},
            {"type": "ContainersReady", "status": flag, **not_ready},
            {"type": "PodScheduled", "status": "True"},
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started,
        "qosClass": "BestEffort",
        "containerStatuses": [
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "imageID": "",
                "containerID": "containerd://" + safe_hash(meta.get("uid"), c.get("name"),
                                                           length=32),
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }
            for c in spec.get("containers") or []
        ],
    }


def pending_status(*, scheduled: bool, message: str = "", host_ip: str = "") -> dict[str, Any]:
    if not scheduled:
        return {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                }
            ],
            "qosClass": "BestEffort",
        }
    return {
        "phase": "Pending",
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "False"},
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
            {"type": "PodScheduled", "status": "True"},
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}] if host_ip else [],
        "qosClass": "BestEffort",
    }
