"""LINSTOR resource health for the Kubernetes API emulator, served as LINSTOR's REST API.

A real client (``cloudctl upgrade``'s storage gate) reads the LINSTOR controller through the
kube-apiserver service proxy::

    GET /api/v1/namespaces/piraeus-datastore/services/linstor-controller:3370/proxy + one of
        /v1/view/resources[?nodes=N&resources=R]
        /v1/resource-definitions/{rd}/resources
        /v1/controller/version

``piraeus-datastore`` is where cloudctl installs the Piraeus operator and the linstor-cluster
chart (flux/platform.yaml); ``linstor-controller`` is the Service the Piraeus operator v2
creates for the LINSTOR controller, HTTP API on port 3370 (named ``api``).

The answers have the shape of LINSTOR's REST API v1 (``ResourceWithVolumes``): per resource
and node ``name``, ``node_name``, ``props``, ``flags`` (``DISKLESS``/``DRBD_DISKLESS``/
``TIE_BREAKER`` for a diskless replica), ``layer_object``, ``state: {in_use}``, ``uuid`` and
``volumes[]`` with ``volume_number``, ``storage_pool_name``, ``provider_kind``, ``device_path``,
sizes and ``state: {disk_state}`` (DRBD disk states: UpToDate, Outdated, Inconsistent,
Diskless, ...). ``view/resources`` honours the ``nodes`` and ``resources`` query filters.
Errors are LINSTOR ``ApiCallRc`` lists. Pure: no store, no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DISK_STATES",
    "LINSTOR_NAMESPACE",
    "LINSTOR_PORT",
    "LINSTOR_SERVICE",
    "StorageTable",
    "handle_rest",
]

LINSTOR_NAMESPACE = "piraeus-datastore"
LINSTOR_SERVICE = "linstor-controller"
LINSTOR_PORT = 3370
DISK_STATES = (
    "UpToDate", "Outdated", "Inconsistent", "Consistent", "Diskless", "Failed", "DUnknown",
    "Negotiating", "Attaching", "Detaching",
)
_DISKLESS = ("TieBreaker", "Diskless")
_STORAGE_POOL = "lvm-thin"
_SIZE_KIB = 10 * 1024 * 1024
_MASK_NOT_FOUND = -4611686018427387904  # LINSTOR's MASK_ERROR
_FAIL_NOT_FOUND_RSC_DFN = _MASK_NOT_FOUND | 1015


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "linstor:" + "/".join(parts)))


@dataclass
class StorageTable:
    """Resource definition -> node -> DRBD disk state of that replica (``TieBreaker`` or
    ``Diskless``: a diskless replica); ``in_use``: resource -> the node it is Primary on."""

    resources: dict[str, dict[str, str]] = field(default_factory=dict)
    in_use: dict[str, str] = field(default_factory=dict)
    minors: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, replicas: Mapping[str, str], *, in_use: str | None = None) -> None:
        for node, state in replicas.items():
            _check_state(state, node)
        self.resources[name] = dict(replicas)
        self.minors.setdefault(name, 1000 + len(self.minors))
        if in_use:
            self.in_use[name] = in_use
        else:
            self.in_use.pop(name, None)

    def set_disk_state(self, name: str, node: str, state: str) -> None:
        if name not in self.resources:
            raise KeyError(f"no LINSTOR resource {name!r}")
        _check_state(state, node)
        self.resources[name][node] = state

    def remove(self, name: str) -> None:
        self.resources.pop(name, None)
        self.in_use.pop(name, None)

    def seed(self, nodes: Sequence[str], count: int = 2) -> None:
        """The default set: ``count`` PVC volumes with 2 UpToDate replicas spread over the
        nodes (1 replica with a single node), each in use on its first replica."""
        nodes = sorted(nodes)
        if not nodes:
            return
        for i in range(count):
            name = f"pvc-{_uid('seed', str(i))}"
            if name in self.resources:
                continue
            picked = [nodes[(i + k) % len(nodes)] for k in range(min(2, len(nodes)))]
            self.add(name, {n: "UpToDate" for n in picked}, in_use=picked[0])

    def degrade(self, name: str, nodes: Sequence[str], keep: str | None, state: str) -> None:
        """Every replica of ``name`` but the one on ``keep`` takes ``state`` (the resource is
        made with ``keep`` and the next node when missing)."""
        _check_state(state, "")
        if name not in self.resources:
            ordered = sorted(nodes)
            first = keep or (ordered[0] if ordered else "")
            others = [n for n in ordered if n != first][:1]
            self.add(name, {first: "UpToDate", **{n: "UpToDate" for n in others}},
                     in_use=first)
        replicas = self.resources[name]
        keep = keep or next(iter(sorted(replicas)), None)
        for node in replicas:
            if node != keep and replicas[node] not in _DISKLESS:
                replicas[node] = state
        if keep is not None:
            replicas[keep] = "UpToDate"

    # ------------------------------------------------------------------ REST shapes

    def resource(self, name: str, node: str) -> dict[str, Any]:
        state = self.resources[name][node]
        diskless = state in _DISKLESS
        flags = ["DRBD_DISKLESS", "DISKLESS"] + (["TIE_BREAKER"] if state == "TieBreaker" else [])
        minor = self.minors.get(name, 1000)
        disk_state = "Diskless" if diskless else state
        volume: dict[str, Any] = {
            "volume_number": 0,
            "storage_pool_name": "DfltDisklessStorPool" if diskless else _STORAGE_POOL,
            "provider_kind": "DISKLESS" if diskless else "LVM_THIN",
            "device_path": f"/dev/drbd{minor}",
            "allocated_size_kib": 0 if diskless else _SIZE_KIB // 10,
            "usable_size_kib": _SIZE_KIB,
            "props": {},
            "flags": [],
            "state": {"disk_state": disk_state},
            "layer_data_list": [{"type": "DRBD"}, {"type": "STORAGE"}],
            "uuid": _uid(name, node, "0"),
        }
        return {
            "name": name,
            "node_name": node,
            "props": {"StorPoolName": volume["storage_pool_name"]},
            "flags": flags if diskless else [],
            "layer_object": {
                "type": "DRBD",
                "drbd": {"drbd_resource_definition": {"resource_name_suffix": ""},
                         "node_id": sorted(self.resources[name]).index(node),
                         "connections": {}},
                "children": [{"type": "STORAGE"}],
            },
            "state": {"in_use": self.in_use.get(name) == node},
            "uuid": _uid(name, node),
            "create_timestamp": 1767225600000,
            "volumes": [volume],
        }

    def view(
        self, nodes: Sequence[str] = (), resources: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        want_nodes = {n.lower() for n in nodes}
        want_rsc = {r.lower() for r in resources}
        out = []
        for name in sorted(self.resources):
            if want_rsc and name.lower() not in want_rsc:
                continue
            for node in sorted(self.resources[name]):
                if want_nodes and node.lower() not in want_nodes:
                    continue
                out.append(self.resource(name, node))
        return out


def _check_state(state: str, node: str) -> None:
    if state not in DISK_STATES and state not in _DISKLESS:
        where = f" on {node}" if node else ""
        raise ValueError(
            f"disk state {state!r}{where} is not a DRBD disk state "
            f"({', '.join(DISK_STATES)}; or TieBreaker for a diskless tie-breaker)"
        )


def _error(code: int, ret_code: int, message: str, **refs: str) -> tuple[int, Any]:
    return code, [{"ret_code": ret_code, "message": message, "obj_refs": dict(refs),
                   "error_report_ids": []}]


def handle_rest(
    table: StorageTable, method: str, path: Sequence[str], query: Mapping[str, list[str]]
) -> tuple[int, Any]:
    """One request to the LINSTOR controller's REST API: (HTTP status, JSON body)."""
    if method != "GET":
        return 405, [{"ret_code": _MASK_NOT_FOUND, "message":
                      "the emulated LINSTOR controller serves only GET", "obj_refs": {}}]
    parts = [p for p in path if p]

    def multi(key: str) -> list[str]:
        return [v for raw in query.get(key, []) for v in raw.split(",") if v]

    if parts == ["v1", "controller", "version"]:
        return 200, {"version": "1.31.0", "git_hash": "0" * 40,
                     "build_time": "2025-01-01T00:00:00+00:00", "rest_api_version": "1.25.0"}
    if parts == ["v1", "view", "resources"]:
        return 200, table.view(multi("nodes"), multi("resources"))
    if len(parts) in (4, 5) and parts[:2] == ["v1", "resource-definitions"] \
            and parts[3] == "resources":
        rd = parts[2]
        match = next((n for n in table.resources if n.lower() == rd.lower()), None)
        if match is None:
            return _error(404, _FAIL_NOT_FOUND_RSC_DFN,
                          f"Resource definition '{rd}' not found.", RscDfn=rd)
        if len(parts) == 5:
            node = next((n for n in table.resources[match] if n.lower() == parts[4].lower()),
                        None)
            if node is None:
                return _error(404, _MASK_NOT_FOUND | 1012,
                              f"Resource '{rd}' on node '{parts[4]}' not found.",
                              RscDfn=rd, Node=parts[4])
            return 200, [table.resource(match, node)]
        return 200, table.view(multi("nodes"), [match])
    return 404, [{"ret_code": _MASK_NOT_FOUND, "message": f"no such endpoint /{'/'.join(parts)}",
                  "obj_refs": {}}]
