"""Server-side printing (``meta.k8s.io/v1`` Table) of the Kubernetes API emulator (pure).

``kubectl get`` asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the
cells the server sends; without a Table it can only show names. The columns follow the API
server's printers (pkg/printers/internalversion; priority 1 columns only with ``-o wide``):
Pods (NAME READY STATUS RESTARTS AGE, wide: IP NODE NOMINATED NODE READINESS GATES), Nodes
(NAME STATUS ROLES AGE VERSION, wide: INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION
CONTAINER-RUNTIME), Namespaces (NAME STATUS AGE), Deployments (NAME READY UP-TO-DATE AVAILABLE
AGE, wide: CONTAINERS IMAGES SELECTOR), ConfigMaps, Secrets, PodDisruptionBudgets and Events
(LAST SEEN TYPE REASON OBJECT MESSAGE, wide: SUBOBJECT SOURCE FIRST SEEN COUNT NAME). Ages are
the server's ``HumanDuration`` ("90s", "3m20s", "5h12m", "3d4h").

Custom resources get their CRD version's ``additionalPrinterColumns`` (``jsonPath`` evaluated
with the subset CRDs use: fields, ``[n]``, ``[*]``, ``[?(@.a.b=="x")]``; cells typed as the
column: ``date`` printed as an age, no match is an empty cell), or NAME and AGE without them, as
the apiextensions server does. Other built-in kinds get NAME and AGE.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["evaluate", "human_duration", "parse_jsonpath", "table", "wants_table"]

Column = tuple[str, str, int]  # name, type, priority (1: only with -o wide)
Row = Callable[[Mapping[str, Any], dt.datetime], list[Any]]


def wants_table(accept: str) -> bool:
    """Whether the Accept header asks for a meta.k8s.io/v1 Table."""
    return any(
        "as=Table" in part and "g=meta.k8s.io" in part and "v=v1" in part.replace("v1beta1", "")
        for part in accept.split(",")
    )


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration`` (what ``kubectl get`` shows as AGE)."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    secs = int(seconds)
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        return f"{minutes}m" if secs % 60 == 0 else f"{minutes}m{secs % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def _since(stamp: Any, now: dt.datetime) -> str:
    if not isinstance(stamp, str) or not stamp:
        return "<unknown>"
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return human_duration((now - when).total_seconds())


def _age(obj: Mapping[str, Any], now: dt.datetime) -> str:
    return _since((obj.get("metadata") or {}).get("creationTimestamp"), now)


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
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [
        d["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        status.get("updatedReplicas", 0), status.get("availableReplicas", 0), _age(d, now),
        ",".join(str(c.get("name")) for c in containers),
        ",".join(str(c.get("image")) for c in containers),
        _selector_text(spec.get("selector") or {}),
    ]


def _selector_text(selector: Mapping[str, Any]) -> str:
    """A LabelSelector as ``metav1.FormatLabelSelector`` prints it."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for req in selector.get("matchExpressions") or []:
        op, key, values = req.get("operator"), req.get("key"), req.get("values") or []
        if op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            parts.append(f"{key} {str(op).lower()} ({','.join(sorted(values))})")
    return ",".join(parts) or "<none>"


def _namespace_row(ns: Mapping[str, Any], now: dt.datetime) -> list[Any]:
    return [ns["metadata"]["name"], (ns.get("status") or {}).get("phase") or "", _age(ns, now)]


def _configmap_row(cm: Mapping[str, Any], now: dt.datetime) -> list[Any]:
    return [cm["metadata"]["name"], len(cm.get("data") or {}) + len(cm.get("binaryData") or {}),
            _age(cm, now)]


def _secret_row(secret: Mapping[str, Any], now: dt.datetime) -> list[Any]:
    return [secret["metadata"]["name"], secret.get("type") or "Opaque",
            len(secret.get("data") or {}) + len(secret.get("stringData") or {}),
            _age(secret, now)]


def _event_row(ev: Mapping[str, Any], now: dt.datetime) -> list[Any]:
    """core/v1 and events.k8s.io/v1 Events (the same printer on the server)."""
    involved = ev.get("involvedObject") or ev.get("regarding") or {}
    source = ev.get("source") or {}
    component = source.get("component") or ev.get("reportingController") or \
        ev.get("reportingComponent") or ""
    host = source.get("host") or ev.get("reportingInstance") or ""
    last = ev.get("lastTimestamp") or ev.get("deprecatedLastTimestamp") or \
        ((ev.get("series") or {}).get("lastObservedTime")) or ev.get("eventTime")
    first = ev.get("firstTimestamp") or ev.get("deprecatedFirstTimestamp") or ev.get("eventTime")
    count = ev.get("count") or ev.get("deprecatedCount") or \
        (ev.get("series") or {}).get("count") or 1
    return [
        _since(last, now), ev.get("type") or "", ev.get("reason") or "",
        f"{str(involved.get('kind') or '').lower()}/{involved.get('name') or ''}",
        involved.get("fieldPath") or "",
        f"{component}, {host}" if host else component,
        ev.get("message") or ev.get("note") or "", _since(first, now), int(count),
        ev["metadata"]["name"],
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
         ("Available", "integer", 0), ("Age", "string", 0), ("Containers", "string", 1),
         ("Images", "string", 1), ("Selector", "string", 1)),
        _deployment_row,
    ),
    "Namespace": (
        (("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)),
        _namespace_row,
    ),
    "ConfigMap": (
        (("Name", "string", 0), ("Data", "string", 0), ("Age", "string", 0)),
        _configmap_row,
    ),
    "Secret": (
        (("Name", "string", 0), ("Type", "string", 0), ("Data", "string", 0),
         ("Age", "string", 0)),
        _secret_row,
    ),
    "Event": (
        (("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0),
         ("Object", "string", 0), ("Subobject", "string", 1), ("Source", "string", 1),
         ("Message", "string", 0), ("First Seen", "string", 1), ("Count", "string", 1),
         ("Name", "string", 1)),
        _event_row,
    ),
    "PodDisruptionBudget": (
        (("Name", "string", 0), ("Min Available", "string", 0),
         ("Max Unavailable", "string", 0), ("Allowed Disruptions", "integer", 0),
         ("Age", "string", 0)),
        _pdb_row,
    ),
}
_GENERIC: tuple[tuple[Column, ...], Row] = (
    (("Name", "string", 0), ("Age", "string", 0)), _generic_row,
)


def table(
    kind: str,
    objects: Sequence[Mapping[str, Any]],
    resource_version: str,
    now: dt.datetime,
    *,
    include_object: str = "Metadata",
    printer_columns: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The Table for ``objects`` of ``kind`` (``include_object``: None, Metadata or Object).
    ``printer_columns``: a custom resource's ``additionalPrinterColumns`` (None: a built-in
    kind; empty: a custom resource without printer columns)."""
    definitions: list[dict[str, Any]]
    row: Row
    if printer_columns is not None:
        definitions, row = _custom_columns(printer_columns)
    else:
        columns, row = _PRINTERS.get(kind, _GENERIC)
        definitions = [
            {"name": name, "type": ctype, "format": "name" if name == "Name" else "",
             "description": _DESCRIPTIONS.get(name, name), "priority": prio}
            for name, ctype, prio in columns
        ]
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
        "columnDefinitions": definitions,
        "rows": rows,
    }


_DESCRIPTIONS = {
    "Name": "Name must be unique within a namespace. Is required when creating resources, "
            "although some resources may allow a client to request the generation of an "
            "appropriate name automatically. Name is primarily intended for creation "
            "idempotence and configuration definition. Cannot be updated. More info: "
            "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    "Age": "CreationTimestamp is a timestamp representing the server time when this object "
           "was created.",
}
_DEFAULT_CUSTOM = ({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},)


def _custom_columns(
    printer_columns: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], Row]:
    """The apiextensions server's table convertor: NAME, then the CRD's columns (AGE alone
    when it declares none)."""
    columns = list(printer_columns) or list(_DEFAULT_CUSTOM)
    definitions = [{"name": "Name", "type": "string", "format": "name",
                    "description": _DESCRIPTIONS["Name"], "priority": 0}]
    paths = []
    for col in columns:
        definitions.append({
            "name": col.get("name", ""), "type": col.get("type", "string"),
            "format": col.get("format", ""),
            "description": col.get("description") or _DESCRIPTIONS.get(str(col.get("name")), ""),
            "priority": int(col.get("priority", 0)),
        })
        paths.append((str(col.get("type", "string")), parse_jsonpath(str(col["jsonPath"]))))

    def row(obj: Mapping[str, Any], now: dt.datetime) -> list[Any]:
        cells: list[Any] = [obj["metadata"]["name"]]
        for ctype, steps in paths:
            found = evaluate(steps, obj)
            cells.append(None if not found else _typed_cell(ctype, found[0], now))
        return cells

    return definitions, row


def _typed_cell(ctype: str, value: Any, now: dt.datetime) -> Any:
    if ctype == "date":
        return _since(value, now) if isinstance(value, str) else value
    if ctype == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if ctype == "string" and isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return value


# --------------------------------------------------------------------------- JSONPath subset

Step = tuple[str, Any]  # ("field", name) | ("index", n) | ("all", None) | ("filter", (path, op, v))

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_$-]+)"""
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\[['"](?P<quoted>[^'"]+)['"]\]"""
    r"""|\[\*\]|\.\*"""
    r"""|\[\?\(@(?P<fpath>(?:\.[A-Za-z0-9_$-]+)+)\s*(?P<op>==|!=)\s*"""
    r"""(?P<value>"[^"]*"|'[^']*'|-?\d+(?:\.\d+)?|true|false)\s*\)\]"""
)


class JsonPathError(ValueError):
    """A printer column's jsonPath outside the supported subset."""


def parse_jsonpath(text: str) -> list[Step]:
    path = text.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    path = path.removeprefix("$")
    steps: list[Step] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            raise JsonPathError(f"unsupported JSONPath {text!r} at {path[pos:]!r}")
        if m.group("field") is not None:
            steps.append(("field", m.group("field")))
        elif m.group("index") is not None:
            steps.append(("index", int(m.group("index"))))
        elif m.group("quoted") is not None:
            steps.append(("field", m.group("quoted")))
        elif m.group("fpath") is not None:
            raw = m.group("value")
            value: Any = raw[1:-1] if raw[0] in "\"'" else json.loads(raw)
            steps.append(("filter", (m.group("fpath")[1:].split("."), m.group("op"), value)))
        else:
            steps.append(("all", None))
        pos = m.end()
    return steps


def evaluate(steps: Sequence[Step], obj: Any) -> list[Any]:
    """Every value the path selects in ``obj``, in order."""
    current = [obj]
    for kind, arg in steps:
        nxt: list[Any] = []
        for value in current:
            if kind == "field":
                if isinstance(value, Mapping) and arg in value:
                    nxt.append(value[arg])
            elif kind == "index":
                if isinstance(value, list) and -len(value) <= arg < len(value):
                    nxt.append(value[arg])
            elif kind == "all":
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, Mapping):
                    nxt.extend(value.values())
            else:
                fields, op, want = arg
                for item in value if isinstance(value, list) else []:
                    got: Any = item
                    for f in fields:
                        got = got.get(f) if isinstance(got, Mapping) else None
                    if (got == want) == (op == "=="):
                        nxt.append(item)
        current = nxt
    return current
