"""PodDisruptionBudget arithmetic and the Eviction decision, as kube-apiserver and the
disruption controller define them (pure functions, no store, no I/O).

The contract followed (Kubernetes docs "API-initiated eviction", "Configure a PDB" and the
policy/v1 types):

- A PDB selects the pods of its namespace by ``spec.selector``; a nil or empty selector selects
  nothing for the eviction subresource (policy/v1: an empty selector matches every pod for the
  disruption controller, but the eviction handler never applies an empty one).
- ``spec.minAvailable`` (int): desiredHealthy = N, expectedPods = the number of selected pods.
- ``spec.minAvailable`` (percent): expectedPods = the scale of the pods' controllers (the sum of
  their ``spec.replicas``); desiredHealthy = ceil(expectedPods * P / 100).
- ``spec.maxUnavailable`` (int or percent): expectedPods = the controllers' scale;
  desiredHealthy = expectedPods - maxUnavailable, the percent rounded up; never below 0.
- currentHealthy = the selected pods that are Ready, not being deleted, and not recorded in
  ``status.disruptedPods`` by an eviction the controller has not seen completed.
- disruptionsAllowed = currentHealthy - desiredHealthy, 0 when negative or when expectedPods is 0.
- The eviction of a pod: a pod Pending/Succeeded/Failed (or already terminating) is deleted
  without looking at PDBs; more than one matching PDB is 500; a not-Ready pod is deleted
  without spending the budget when ``unhealthyPodEvictionPolicy`` is ``AlwaysAllow``, or
  (``IfHealthyBudget``, the default) when currentHealthy >= desiredHealthy > 0; otherwise the
  budget must allow a disruption (429 TooManyRequests with a ``DisruptionBudget`` cause
  naming the PDB) and one is spent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALWAYS_ALLOW",
    "IF_HEALTHY_BUDGET",
    "EvictionOutcome",
    "PdbStatus",
    "budget_status",
    "decide_eviction",
    "is_pod_ready",
    "pdb_causes",
    "pdb_selects",
    "scaled_value",
]

ALWAYS_ALLOW = "AlwaysAllow"
IF_HEALTHY_BUDGET = "IfHealthyBudget"
EVICTION_REFUSED = "Cannot evict pod as it would violate the pod's disruption budget."
MULTIPLE_PDBS = (
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not "
    "support."
)
_PERCENT = re.compile(r"^(\d+)%$")


def scaled_value(value: int | str, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int as is, ``"P%"`` of ``total`` rounded."""
    if isinstance(value, bool):
        raise ValueError(f"invalid value for IntOrString: {value!r}")
    if isinstance(value, int):
        return value
    m = _PERCENT.match(str(value))
    if not m:
        raise ValueError(f"invalid value for IntOrString: invalid type: string is not a "
                         f"percentage: {value!r}")
    exact = int(m.group(1)) * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def _int_or_percent_cause(path: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return f"{path}: Invalid value: {value!r}: must be an integer or percentage (e.g '5%')"
    if isinstance(value, int):
        return None if value >= 0 else (
            f"{path}: Invalid value: {value}: must be greater than or equal to 0")
    m = _PERCENT.match(value)
    if not m:
        return (f'{path}: Invalid value: "{value}": a valid percent string must be a numeric '
                "string followed by an ending '%' (e.g. '1%',  or '93%', regex used for "
                "validation is '[0-9]+%')")
    if int(m.group(1)) > 100:
        return f'{path}: Invalid value: "{value}": must not be greater than 100%'
    return None


def pdb_causes(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The API server's validation of a policy/v1 PodDisruptionBudget spec: (field, message)."""
    spec = obj.get("spec") or {}
    causes: list[tuple[str, str]] = []
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        causes.append(("spec", "Invalid value: minAvailable and maxUnavailable cannot be both set"))
    for key in ("minAvailable", "maxUnavailable"):
        if spec.get(key) is not None:
            problem = _int_or_percent_cause(f"spec.{key}", spec[key])
            if problem:
                causes.append((f"spec.{key}", problem.split(": ", 1)[1]))
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in (ALWAYS_ALLOW, IF_HEALTHY_BUDGET):
        causes.append(
            (
                "spec.unhealthyPodEvictionPolicy",
                f'Unsupported value: "{policy}": supported values: "{ALWAYS_ALLOW}", '
                f'"{IF_HEALTHY_BUDGET}"',
            )
        )
    return causes


def _match_expression(labels: Mapping[str, str], expr: Mapping[str, Any]) -> bool:
    key, op = expr.get("key", ""), expr.get("operator", "")
    values = set(expr.get("values") or [])
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics (an empty selector matches everything)."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    return all(_match_expression(labels, e) for e in selector.get("matchExpressions") or [])


def _selector_empty(selector: Mapping[str, Any] | None) -> bool:
    return not selector or not (selector.get("matchLabels") or selector.get("matchExpressions"))


def pdb_selects(pdb: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """The eviction handler's matching: same namespace, non-empty selector matching the labels."""
    pmeta, dmeta = pod.get("metadata") or {}, pdb.get("metadata") or {}
    if pmeta.get("namespace") != dmeta.get("namespace"):
        return False
    selector = (pdb.get("spec") or {}).get("selector")
    if _selector_empty(selector):
        return False
    return selector_matches(selector, pmeta.get("labels") or {})


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    """podutil.IsPodReady: the Ready condition is True."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


@dataclass(frozen=True)
class PdbStatus:
    """What the disruption controller writes (``error``: the sync failed, nothing allowed)."""

    expected_pods: int
    desired_healthy: int
    current_healthy: int
    disruptions_allowed: int
    error: str = ""

    def as_status(self, generation: int) -> dict[str, Any]:
        ok = not self.error and self.disruptions_allowed > 0
        reason = "SyncFailed" if self.error else ("SufficientPods" if ok else "InsufficientPods")
        return {
            "observedGeneration": generation,
            "disruptionsAllowed": self.disruptions_allowed,
            "currentHealthy": self.current_healthy,
            "desiredHealthy": self.desired_healthy,
            "expectedPods": self.expected_pods,
            "conditions": [
                {
                    "type": "DisruptionAllowed",
                    "status": "True" if ok else "False",
                    "reason": reason,
                    "message": self.error,
                    "observedGeneration": generation,
                }
            ],
        }


def budget_status(
    spec: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    scale_of: Mapping[str, int | None],
    disrupted: Sequence[str] = (),
) -> PdbStatus:
    """The disruption controller's arithmetic for one PDB.

    ``pods``: the pods the PDB selects; ``scale_of``: pod name -> the ``spec.replicas`` of its
    controller (None: no controller with a scale, e.g. a bare pod or a DaemonSet's pod), needed
    only for ``maxUnavailable`` and a percent ``minAvailable``; ``disrupted``: pod names recorded
    in ``status.disruptedPods`` (evicted, deletion not yet observed)."""
    healthy = sum(
        1
        for p in pods
        if is_pod_ready(p) and not _terminating(p)
        and (p.get("metadata") or {}).get("name") not in disrupted
    )
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")

    def controllers_scale() -> int:
        seen: dict[str, int] = {}
        for p in pods:
            meta = p.get("metadata") or {}
            scale = scale_of.get(meta.get("name", ""))
            if scale is None:
                raise LookupError(f'found no controllers for pod "{meta.get("name")}"')
            owner: Mapping[str, Any] = next(
                (o for o in meta.get("ownerReferences") or [] if o.get("controller")), {}
            )
            seen[owner.get("uid", meta.get("name", ""))] = scale
        return sum(seen.values())

    try:
        if max_unavailable is not None:
            expected = controllers_scale()
            desired = max(0, expected - scaled_value(max_unavailable, expected, round_up=True))
        elif isinstance(min_available, int) and not isinstance(min_available, bool):
            expected, desired = len(pods), min_available
        elif min_available is not None:
            expected = controllers_scale()
            desired = scaled_value(min_available, expected, round_up=True)
        else:
            expected, desired = len(pods), 0
    except (LookupError, ValueError) as exc:
        return PdbStatus(0, 0, healthy, 0, str(exc))
    allowed = healthy - desired
    if expected <= 0 or allowed <= 0:
        allowed = 0
    return PdbStatus(expected, desired, healthy, allowed)


@dataclass(frozen=True)
class EvictionOutcome:
    """``delete``: delete the pod; ``spend``: the PDB whose disruptionsAllowed is decremented
    first (None: none); otherwise ``code``/``reason``/``message``/``causes`` make the Status."""

    delete: bool
    spend: str | None = None
    code: int = 201
    reason: str = ""
    message: str = ""
    causes: tuple[dict[str, str], ...] = field(default_factory=tuple)
    retry_after: int = 0


def decide_eviction(
    pod: Mapping[str, Any], pdbs: Sequence[Mapping[str, Any]]
) -> EvictionOutcome:
    """The eviction subresource's decision for ``pod`` given every PDB of its namespace."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Pending", "Succeeded", "Failed") or _terminating(pod):
        return EvictionOutcome(True)
    matching = [p for p in pdbs if pdb_selects(p, pod)]
    if len(matching) > 1:
        return EvictionOutcome(False, code=500, message=MULTIPLE_PDBS)
    if not matching:
        return EvictionOutcome(True)
    pdb = matching[0]
    name = pdb["metadata"]["name"]
    status = pdb.get("status") or {}
    spec = pdb.get("spec") or {}
    current, desired = int(status.get("currentHealthy", 0)), int(status.get("desiredHealthy", 0))
    if not is_pod_ready(pod):
        if spec.get("unhealthyPodEvictionPolicy") == ALWAYS_ALLOW:
            return EvictionOutcome(True)
        if current >= desired and desired > 0:
            return EvictionOutcome(True)
    generation = int((pdb.get("metadata") or {}).get("generation", 0))
    if int(status.get("observedGeneration", 0)) < generation:
        return EvictionOutcome(
            False,
            code=429,
            reason="TooManyRequests",
            message=EVICTION_REFUSED,
            causes=(
                {
                    "reason": "DisruptionBudget",
                    "message": f"The disruption budget {name} is still being processed by the "
                    "server.",
                },
            ),
            retry_after=10,
        )
    allowed = int(status.get("disruptionsAllowed", 0))
    if allowed < 0:
        return EvictionOutcome(
            False,
            code=403,
            reason="Forbidden",
            message=f'poddisruptionbudgets.policy "{name}" is forbidden: pdb disruptions allowed '
            "is negative",
        )
    if allowed == 0:
        return EvictionOutcome(
            False,
            code=429,
            reason="TooManyRequests",
            message=EVICTION_REFUSED,
            causes=(
                {
                    "reason": "DisruptionBudget",
                    "message": f"The disruption budget {name} needs {desired} healthy pods and "
                    f"has {current} currently",
                },
            ),
        )
    return EvictionOutcome(True, spend=name)
