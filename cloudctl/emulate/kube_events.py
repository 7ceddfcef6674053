"""Events of the Kubernetes API emulator, recorded as the real controllers record them.

The recorder reads the store's change history (what changed since its last look) after each
reconcile pass and writes the Events the controller behind each change would have written:

- helm-controller, on a HelmRelease whose ``Ready`` condition changed to a Helm action's
  outcome (or failed once more): reason ``InstallSucceeded``, ``UpgradeSucceeded``,
  ``RollbackSucceeded``, ``UninstallSucceeded``, ``TestSucceeded`` (Normal) or
  ``InstallFailed``, ``UpgradeFailed``, ``RollbackFailed``, ``UninstallFailed``,
  ``TestFailed``, ``ArtifactFailed``, ``InitFailed`` (Warning), the condition's message;
- the kubelet, when a Node turns Ready: ``NodeReady`` ("Node w1 status is now: NodeReady"),
  involvedObject UID = the node's name as the kubelet sets it (what ``kubectl describe node``
  searches for); the node controller when it stops being Ready: ``NodeNotReady``;
- the deployment controller, when a ReplicaSet it owns is created or resized:
  ``ScalingReplicaSet`` ("Scaled up replica set web-5d4f8 from 0 to 3") on the Deployment.

Each Event is written as core/v1 and as events.k8s.io/v1 (the same name; the API server serves
one object under both groups, the emulator stores the two views). Repeats of the same event
(same object, reason, message and source) bump ``count`` and ``lastTimestamp`` as client-go's
event correlator does. Events of cluster-scoped objects live in ``default``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from ..util.conditions import condition
from .kube_store import ApiError, Change, Store, StoredObject
from .kube_types import ResourceType

__all__ = ["HELM_REASONS", "EventRecorder"]

HELM_REASONS = {
    "InstallSucceeded": "Normal",
    "UpgradeSucceeded": "Normal",
    "RollbackSucceeded": "Normal",
    "UninstallSucceeded": "Normal",
    "TestSucceeded": "Normal",
    "InstallFailed": "Warning",
    "UpgradeFailed": "Warning",
    "RollbackFailed": "Warning",
    "UninstallFailed": "Warning",
    "TestFailed": "Warning",
    "ArtifactFailed": "Warning",
    "InitFailed": "Warning",
}
_FAILURE_COUNTERS = ("failures", "installFailures", "upgradeFailures")


def _controller_owner(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return ref  # type: ignore[no-any-return]
    return None


class EventRecorder:
    """Turns store changes into Events (see the module docstring); ``observe`` after a pass."""

    def __init__(self, store: Store, wallclock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.wallclock = wallclock
        self.cursor = store.revision
        self._seq = itertools.count()
        self._seen: dict[tuple[str, ...], str] = {}  # correlation key -> event name

    # ------------------------------------------------------------------ observing

    def observe(self) -> None:
        """Record the Events of every change since the last call."""
        if self.store.compacted > self.cursor:  # fell behind the history: start afresh
            self.cursor = self.store.revision
            return
        changes = self.store.changes_since(self.cursor)
        self.cursor = self.store.revision
        for change in changes:
            group, plural = change.group_resource
            if plural == "events":
                continue
            if (group, plural) == ("", "nodes"):
                self._node(change)
            elif (group, plural) == ("apps", "replicasets"):
                self._replicaset(change)
            elif plural == "helmreleases" and group == "helm.toolkit.fluxcd.io":
                self._helmrelease(change)
        self.cursor = self.store.revision

    def _helmrelease(self, change: Change) -> None:
        if change.kind == "DELETED":
            return
        obj, old = change.stored.obj, change.previous.obj if change.previous else None
        ready, before = condition(obj, "Ready"), condition(old or {}, "Ready")
        if ready is None or ready.get("reason") not in HELM_REASONS:
            return
        status, old_status = obj.get("status") or {}, (old or {}).get("status") or {}
        again = any((status.get(c) or 0) > (old_status.get(c) or 0) for c in _FAILURE_COUNTERS)
        same = before is not None and all(
            before.get(k) == ready.get(k) for k in ("status", "reason", "message"))
        if same and not again:
            return
        reason = str(ready["reason"])
        self.record(obj, HELM_REASONS[reason], reason, str(ready.get("message") or ""),
                    component="helm-controller",
                    annotations={"helm.toolkit.fluxcd.io/revision":
                                 str(status.get("lastAttemptedRevision") or "")})

    def _node(self, change: Change) -> None:
        if change.kind == "DELETED":
            return
        ready = condition(change.stored.obj, "Ready")
        before = condition(change.previous.obj if change.previous else {}, "Ready")
        now_ready = ready is not None and ready.get("status") == "True"
        was_ready = before is not None and before.get("status") == "True"
        name = change.stored.obj["metadata"]["name"]
        if now_ready and not was_ready:
            self.record(change.stored.obj, "Normal", "NodeReady",
                        f"Node {name} status is now: NodeReady", component="kubelet", host=name,
                        uid=name)
        elif was_ready and not now_ready:
            self.record(change.stored.obj, "Normal", "NodeNotReady",
                        f"Node {name} status is now: NodeNotReady",
                        component="node-controller", uid=name)

    def _replicaset(self, change: Change) -> None:
        if change.kind == "DELETED":
            return
        rs = change.stored.obj
        owner = _controller_owner(rs, "Deployment")
        if owner is None:
            return
        new = int((rs.get("spec") or {}).get("replicas") or 0)
        old = 0 if change.previous is None else \
            int((change.previous.obj.get("spec") or {}).get("replicas") or 0)
        if new == old:
            return
        ns = rs["metadata"].get("namespace")
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": owner.get("name"), "namespace": ns,
                                   "uid": owner.get("uid")}}
        dep_rt = self.store.type_of("apps/v1", "Deployment")
        stored = None if dep_rt is None else self.store.lookup(dep_rt, ns, str(owner.get("name")))
        if stored is not None:
            deployment = {"apiVersion": "apps/v1", "kind": "Deployment", **stored.obj}
        way = "up" if new > old else "down"
        self.record(deployment, "Normal", "ScalingReplicaSet",
                    f"Scaled {way} replica set {rs['metadata']['name']} from {old} to {new}",
                    component="deployment-controller")

    # ------------------------------------------------------------------ writing

    def _type(self, api_version: str) -> ResourceType:
        rt = self.store.type_of(api_version, "Event")
        assert rt is not None
        return rt

    def record(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str = "",
        uid: str | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        """Write (or bump) the Event about ``involved``; returns its name."""
        meta = involved.get("metadata") or {}
        ref: dict[str, Any] = {"kind": involved.get("kind"), "name": meta.get("name"),
                               "apiVersion": involved.get("apiVersion")}
        if meta.get("namespace"):
            ref["namespace"] = meta["namespace"]
        if uid or meta.get("uid"):
            ref["uid"] = uid or meta.get("uid")
        if meta.get("resourceVersion"):
            ref["resourceVersion"] = meta["resourceVersion"]
        namespace = meta.get("namespace") or "default"
        stamp = self.wallclock().strftime("%Y-%m-%dT%H:%M:%SZ")
        key = (namespace, str(ref.get("kind")), str(ref.get("name")), str(ref.get("uid")),
               reason, message, component, host)
        core, new = self._type("v1"), self._type("events.k8s.io/v1")
        name = self._seen.get(key)
        existing = None if name is None else self.store.lookup(core, namespace, name)
        if name is not None and existing is not None:
            count = int(existing.obj.get("count") or 1) + 1
            self._write(core, namespace, name, {"count": count, "lastTimestamp": stamp},
                        component)
            self._write(new, namespace, name, {
                "deprecatedCount": count, "deprecatedLastTimestamp": stamp,
                "series": {"count": count, "lastObservedTime": self._micro()}}, component)
            return name
        nanos = int(self.wallclock().timestamp() * 1e9) + next(self._seq)
        name = f"{ref['name']}.{nanos:x}"
        self._seen[key] = name
        source = {"component": component, **({"host": host} if host else {})}
        event_meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if annotations:
            event_meta["annotations"] = {k: v for k, v in annotations.items() if v}
        self._create(core, namespace, {
            "apiVersion": "v1", "kind": "Event", "metadata": dict(event_meta),
            "involvedObject": ref, "reason": reason, "message": message, "type": event_type,
            "source": source, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "reportingComponent": component, "reportingInstance": host,
        }, component)
        self._create(new, namespace, {
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": dict(event_meta),
            "regarding": ref, "reason": reason, "note": message, "type": event_type,
            "eventTime": self._micro(), "action": reason, "reportingController": component,
            "reportingInstance": host or component, "deprecatedSource": source,
            "deprecatedFirstTimestamp": stamp, "deprecatedLastTimestamp": stamp,
            "deprecatedCount": 1,
        }, component)
        return name

    def _micro(self) -> str:
        return self.wallclock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _create(self, rt: ResourceType, namespace: str, body: dict[str, Any],
                manager: str) -> None:
        with contextlib.suppress(ApiError):  # the namespace is gone: refused as by the server
            self.store.create(rt, namespace, body, manager=manager)

    def _write(self, rt: ResourceType, namespace: str, name: str, patch: dict[str, Any],
               manager: str) -> None:
        stored: StoredObject | None = self.store.lookup(rt, namespace, name)
        if stored is not None:
            self.store.patch(rt, namespace, name, "merge", patch, manager=manager)
