"""Cordon, drain and uncordon a node through the Kubernetes API, as ``kubectl drain`` does.

- Cordon/uncordon: a JSON merge patch of ``spec.unschedulable``.
- Drain: every pod bound to the node (``spec.nodeName``) is evicted through the Eviction
  subresource (``POST .../pods/<name>/eviction`` with a ``policy/v1`` Eviction), so the API
  server applies the PodDisruptionBudgets — including ``unhealthyPodEvictionPolicy`` — itself.
  Pods owned by a DaemonSet, mirror (static) pods and pods already finished are left alone, as
  ``kubectl drain --ignore-daemonsets`` does. A 429 answer (the eviction would violate a
  budget) is retried when a PodDisruptionBudget changes (a watch) and at least every
  ``RETRY`` seconds (kubectl's interval) until ``timeout``; then :class:`DrainBlocked` names the
  pod and the budget the API server named.
- The drain is over when no evicted pod remains on the node (watched as pods change).

Where a watch fails the waits fall back to polling every ``interval``
(:mod:`cloudctl.kube.changes`).

Pure helpers (:func:`pods_to_evict`, :func:`eviction_body`) hold the selection rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import GateRefused
from .changes import Changes
from .client import Kube
from .errors import KubeApiError

MERGE_PATCH = "application/merge-patch+json"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
RETRY = 5.0
"""Seconds between retries of a refused eviction at most (kubectl drain's interval)."""


class DrainBlocked(GateRefused):
    """An eviction stayed refused (PodDisruptionBudget) until the drain timeout."""


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def pods_to_evict(pods: Iterable[Mapping[str, Any]], node: str) -> list[PodRef]:
    """Pods on ``node`` that a drain evicts (not DaemonSet-owned, not mirror pods, not
    finished), sorted for a stable order."""
    out = []
    for pod in pods:
        spec = pod.get("spec") or {}
        meta = pod.get("metadata") or {}
        if spec.get("nodeName") != node:
            continue
        if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
            continue
        if any(o.get("kind") == "DaemonSet" and o.get("controller")
               for o in meta.get("ownerReferences") or []):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        out.append(PodRef(str(meta.get("namespace") or "default"), str(meta.get("name"))))
    return sorted(out, key=lambda p: (p.namespace, p.name))


def eviction_body(pod: PodRef) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace}}


def set_unschedulable(kube: Kube, node: str, unschedulable: bool) -> None:
    """Cordon (True) or uncordon (False) ``node``."""
    kube.request("PATCH", f"/api/v1/nodes/{node}", what=f"Node {node}",
                 body={"spec": {"unschedulable": True if unschedulable else None}},
                 content_type=MERGE_PATCH)


def _pods(kube: Kube) -> list[dict[str, Any]]:
    return kube.list("v1", "Pod")


def _refusal(err: KubeApiError) -> str:
    causes = "; ".join(p.message for p in err.causes if p.message)
    return f"{err.api_message}{' (' + causes + ')' if causes else ''}"


def drain(
    kube: Kube,
    node: str,
    *,
    timeout: float,
    interval: float = 1.0,
    on_event: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[PodRef]:
    """Evict the node's pods (see the module doc); returns the pods evicted."""
    say = on_event or (lambda _m: None)
    deadline = clock() + timeout
    pending = pods_to_evict(_pods(kube), node)
    evicted: list[PodRef] = []
    refused: dict[PodRef, str] = {}
    budgets = Changes(kube, interval, sleep)
    while pending:
        budgets.mark("policy/v1", "PodDisruptionBudget")
        still: list[PodRef] = []
        for pod in pending:
            try:
                kube.request("POST", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"
                             "/eviction", what=f"eviction of Pod {pod}", body=eviction_body(pod))
            except KubeApiError as err:
                if err.code == 404:  # gone already
                    continue
                if err.code == 429:
                    why = _refusal(err)
                    if refused.get(pod) != why:
                        say(f"eviction of pod {pod} refused, retrying: {why}")
                    refused[pod] = why
                    still.append(pod)
                    continue
                raise
            say(f"evicted pod {pod}")
            evicted.append(pod)
        pending = still
        if not pending:
            break
        if clock() >= deadline:
            blocked = "; ".join(f"pod {p}: {refused[p]}" for p in pending)
            raise DrainBlocked(f"drain of node {node} blocked after {timeout:g}s by a "
                               f"PodDisruptionBudget: {blocked}; the node stays cordoned "
                               f"(kubectl uncordon {node} to give it back)")
        budgets.wait(min(deadline - clock(), RETRY))
    _wait_gone(kube, node, evicted, deadline=deadline, interval=interval, clock=clock,
               sleep=sleep)
    return evicted


def _wait_gone(
    kube: Kube, node: str, evicted: list[PodRef], *, deadline: float, interval: float,
    clock: Callable[[], float], sleep: Callable[[float], None],
) -> None:
    names = set(evicted)
    pods = Changes(kube, interval, sleep)
    while True:
        left = [PodRef(str(p["metadata"].get("namespace")), str(p["metadata"]["name"]))
                for p in pods.list("v1", "Pod") if (p.get("spec") or {}).get("nodeName") == node]
        left = [p for p in left if p in names]
        if not left:
            return
        if clock() >= deadline:
            raise DrainBlocked(f"drain of node {node}: evicted pods still present after the "
                               f"timeout: {', '.join(map(str, left))}")
        pods.wait(deadline - clock())
