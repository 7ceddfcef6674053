"""Server-side printing (``meta.k8s.io/v1`` Table) of the Kubernetes API emulator (pure).

``kubectl get`` asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the
cells the server sends; without a Table it can only show names. The columns follow the API
server's printers (pkg/printers/internalversion) for the kinds a drain is watched with: Pods
(NAME READY STATUS RESTARTS AGE, wide: IP NODE NOMINATED NODE READINESS GATES), Nodes (NAME
STATUS ROLES AGE VERSION, wide: INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION
CONTAINER-RUNTIME), Deployments, PodDisruptionBudgets; other kinds get NAME and AGE, as
custom resources without printer columns do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["table", "wants_table"]

Column = tuple[str, str, int]  # name, type, priority (1: only with -o wide)
Row = Callable[[Mapping[str, Any], dt.datetime], list[Any]]


def wants_table(accept: str) -> bool:
    """Whether the Accept header asks for a meta.k8s.io/v1 Table."""
    return any(
        "as=Table" in part and "g=meta.k8s.io" in part and "v=v1" in part.replace("v1beta1", "")
        for part in accept.split(",")
    )


def _age(obj: Mapping[str, Any], now: dt.datetime) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    created = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    seconds = max(0, int((now - created).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _pod_row(pod: Mapping[str, Any], now: dt.datetime) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    containers = spec.get("containers") or []
    ready = sum(1 for c in status.get("containerStatuses") or [] if c.get("ready"))
    reason = status.get("phase") or "Pending"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or [])
    return [
        pod["metadata"]["name"], f"{ready}/{len(containers)}", reason, restarts, _age(pod, now),
        status.get("podIP") or "<none>", spec.get("nodeName") or "<none>", "<none>", "<none>",
    ]


def _node_row(node: Mapping[str, Any], now: dt.datetime) -> list[Any]:
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    status = node.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Unknown" if ready is None else ("Ready" if ready.get("status") == "True"
                                              else "NotReady")
    if spec.get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in meta.get("labels") or {}
                   if k.startswith("node-role.kubernetes.io/"))
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    info = status.get("nodeInfo") or {}
    return [
        meta["name"], state, ",".join(roles) or "<none>", _age(node, now),
        info.get("kubeletVersion", ""), addresses.get("InternalIP") or "<none>",
        addresses.get("ExternalIP") or "<none>", info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _deployment_row(d: Mapping[str, Any], now: dt.datetime) -> list[Any]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    return [
        d["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        status.get("updatedReplicas", 0), status.get("availableReplicas", 0), _age(d, now),
    ]


def _pdb_row(pdb: Mapping[str, Any], now: dt.datetime) -> list[Any]:
    spec, status = pdb.get("spec") or {}, pdb.get("status") or {}
    return [
        pdb["metadata"]["name"],
        "N/A" if spec.get("minAvailable") is None else str(spec["minAvailable"]),
        "N/A" if spec.get("maxUnavailable") is None else str(spec["maxUnavailable"]),
        status.get("disruptionsAllowed", 0), _age(pdb, now),
    ]


def _generic_row(obj: Mapping[str, Any], now: dt.datetime) -> list[Any]:
    return [obj["metadata"]["name"], _age(obj, now)]


_PRINTERS: dict[str, tuple[tuple[Column, ...], Row]] = {
    "Pod": (
        (("Name", "string", 0), ("Ready", "string", 0), ("Status", "string", 0),
         ("Restarts", "string", 0), ("Age", "string", 0), ("IP", "string", 1),
         ("Node", "string", 1), ("Nominated Node", "string", 1),
         ("Readiness Gates", "string", 1)),
        _pod_row,
    ),
    "Node": (
        (("Name", "string", 0), ("Status", "string", 0), ("Roles", "string", 0),
         ("Age", "string", 0), ("Version", "string", 0), ("Internal-IP", "string", 1),
         ("External-IP", "string", 1), ("OS-Image", "string", 1),
         ("Kernel-Version", "string", 1), ("Container-Runtime", "string", 1)),
        _node_row,
    ),
    "Deployment": (
        (("Name", "string", 0), ("Ready", "string", 0), ("Up-to-date", "integer", 0),
         ("Available", "integer", 0), ("Age", "string", 0)),
        _deployment_row,
    ),
    "PodDisruptionBudget": (
        (("Name", "string", 0), ("Min Available", "string", 0),
         ("Max Unavailable", "string", 0), ("Allowed Disruptions", "integer", 0),
         ("Age", "string", 0)),
        _pdb_row,
    ),
}
_GENERIC: tuple[tuple[Column, ...], Row] = (
    (("Name", "string", 0), ("Age", "date", 0)), _generic_row,
)


def table(
    kind: str,
    objects: Sequence[Mapping[str, Any]],
    resource_version: str,
    now: dt.datetime,
    *,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    """The Table for ``objects`` of ``kind`` (``include_object``: None, Metadata or Object)."""
    columns, row = _PRINTERS.get(kind, _GENERIC)
    rows = []
    for obj in objects:
        entry: dict[str, Any] = {"cells": row(obj, now)}
        if include_object == "Object":
            entry["object"] = obj
        elif include_object != "None":
            meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
            entry["object"] = {"kind": "PartialObjectMetadata",
                               "apiVersion": "meta.k8s.io/v1", "metadata": meta}
        rows.append(entry)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": name, "type": ctype, "format": "name" if name == "Name" else "",
             "description": name, "priority": prio}
            for name, ctype, prio in columns
        ],
        "rows": rows,
    }
