"""Workload, scheduler, kubelet and disruption controllers of the Kubernetes API emulator.

``PodControllers.reconcile(now)`` is one pass, run by ``kube_reconcile.Controllers`` once at
least one Node is registered (with no Node at all, workloads keep the emulator's older
pod-less status: Available ``workload_delay`` after each generation). What it stands for:

- deployment controller: a Deployment owns one ReplicaSet per pod template
  (``<name>-<pod-template-hash>``, labels and selector with ``pod-template-hash``, revision
  annotation); the current one is scaled to ``spec.replicas`` and older ones to 0 at once (a
  template change replaces every pod like ``Recreate``, not a surge-limited rolling update);
  Available follows upstream: availableReplicas >= replicas - maxUnavailable (the rolling
  update's ``maxUnavailable``, default 25% rounded down; 0 for ``Recreate``);
- replicaset controller: keeps ``spec.replicas`` pods (``<rs>-<5 chars>``) owned by the
  ReplicaSet (controller ownerReference), deleting unscheduled, then not-Ready, then the last
  by name first when there are too many;
- statefulset controller: pods ``<name>-<ordinal>`` with ``controller-revision-hash``,
  ``statefulset.kubernetes.io/pod-name`` and ``apps.kubernetes.io/pod-index``, all ordinals at
  once (as ``podManagementPolicy: Parallel``); a pod of an older revision is deleted and
  recreated; a deleted (evicted) pod comes back under the same name;
- daemonset controller: one pod per node the template fits (with the DaemonSet tolerations,
  ``unschedulable`` included, so cordoned nodes keep their daemon pods), pinned by the
  ``matchFields metadata.name`` node affinity, as upstream;
- kube-scheduler: binds unbound pods (``spec.nodeName``) with :mod:`cloudctl.emulate.kube_pods`
  (cordon and NoSchedule taints honoured, spread, deterministic); a pod nothing fits stays
  Pending with ``PodScheduled=False Unschedulable`` and the scheduler's message;
- kubelet: a bound pod is Pending until ``workload_delay`` after binding, then Running and
  Ready (``set_pod_ready`` turns Ready off and on: a running but unhealthy pod); on a Node
  whose Ready condition is Unknown (its kubelet stopped posting status, e.g. a rebooting
  machine) the pods are marked not Ready, as the node lifecycle controller does, and become
  Ready again ``workload_delay`` after the kubelet is back;
- pod GC / garbage collector: pods of deleted Nodes and pods/ReplicaSets whose controller owner
  is gone are deleted;
- disruption controller: every PodDisruptionBudget's status (:mod:`.kube_disruption`).

Deletion is immediate (the store has no graceful deletion): an evicted pod is gone at once and
its controller creates the replacement in the same pass, Ready ``workload_delay`` later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .kube_disruption import (
    EvictionOutcome,
    budget_status,
    decide_eviction,
    is_pod_ready,
    scaled_value,
    selector_matches,
)
from .kube_fields import clone
from .kube_pods import (
    DAEMON_TOLERATIONS,
    fit_problems,
    pending_status,
    pick_node,
    pod_from_template,
    running_status,
    safe_hash,
    unschedulable_message,
)
from .kube_store import ApiError, Store, StoredObject, bad_request
from .kube_types import ResourceType

__all__ = ["PodControllers"]

_MANAGER = "kube-controller-manager"
_DISRUPTED_TIMEOUT = 120.0  # the disruption controller's DeletionTimeout


def _controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    ref = _controller_ref(obj)
    return ref is not None and ref.get("uid") == uid


def _terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _kubelet_gone(node: Mapping[str, Any]) -> bool:
    """The node's Ready condition is Unknown: its kubelet stopped posting status."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "Unknown"
        for c in (node.get("status") or {}).get("conditions") or []
    )


def _node_ip(node: Mapping[str, Any]) -> str:
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP":
            return str(a.get("address"))
    return ""


@dataclass
class PodControllers:
    store: Store
    workload_delay: float
    write_status: Callable[[ResourceType, StoredObject, dict[str, Any]], None]
    wallclock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    note_due: Callable[[float], None] = lambda when: None
    """Told when a timed transition (a pod starting, a disruption expiring) falls due."""
    _bound_at: dict[str, float] = field(default_factory=dict)
    _started: dict[str, str] = field(default_factory=dict)
    _unready: set[str] = field(default_factory=set)
    _serial: dict[str, int] = field(default_factory=dict)
    _disrupted_at: dict[tuple[str, str], float] = field(default_factory=dict)
    _now: float = 0.0

    # ------------------------------------------------------------------ helpers

    def _rt(self, api_version: str, kind: str) -> ResourceType:
        rt = self.store.type_of(api_version, kind)
        assert rt is not None
        return rt

    @property
    def _pod_rt(self) -> ResourceType:
        return self._rt("v1", "Pod")

    def _stamp(self) -> str:
        return self.wallclock().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _objs(self, rt: ResourceType) -> list[StoredObject]:
        return list(self.store.iter_stored(rt))

    def _pods(self) -> list[dict[str, Any]]:
        return [s.obj for s in self._objs(self._pod_rt)]

    def _owned_pods(self, uid: str) -> list[dict[str, Any]]:
        return [
            p for p in self._pods()
            if _owned_by(p, uid) and not (p["metadata"].get("deletionTimestamp"))
        ]

    def _create(self, rt: ResourceType, namespace: str, body: dict[str, Any]) -> None:
        self.store.create(rt, namespace, body, manager=_MANAGER)

    def _delete(self, rt: ResourceType, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        if self.store.lookup(rt, meta.get("namespace"), meta["name"]) is not None:
            self.store.delete(rt, meta.get("namespace"), meta["name"])

    def _set_replicas(self, rt: ResourceType, obj: Mapping[str, Any], replicas: int) -> None:
        meta = obj["metadata"]
        self.store.patch(rt, meta["namespace"], meta["name"], "merge",
                         {"spec": {"replicas": replicas}}, manager=_MANAGER)

    def _fresh_name(self, prefix: str, seed: str) -> str:
        while True:
            n = self._serial.get(seed, 0)
            self._serial[seed] = n + 1
            name = f"{prefix}-{safe_hash(seed, n, length=5)}"
            if not any(p["metadata"]["name"] == name for p in self._pods()):
                return name

    # ------------------------------------------------------------------ the pass

    def reconcile(self, now: float) -> None:
        self._now = now
        nodes = {s.obj["metadata"]["name"]: s.obj for s in self._objs(self._rt("v1", "Node"))}
        self._garbage(nodes)
        self._deployments()
        self._replicasets()
        self._statefulsets()
        self._daemonsets(nodes)
        self._schedule(nodes)
        self._kubelet(nodes, now)
        self._statuses(nodes)
        self._disruption(now)

    def _garbage(self, nodes: Mapping[str, Any]) -> None:
        owners = {
            "ReplicaSet": self._rt("apps/v1", "ReplicaSet"),
            "Deployment": self._rt("apps/v1", "Deployment"),
            "StatefulSet": self._rt("apps/v1", "StatefulSet"),
            "DaemonSet": self._rt("apps/v1", "DaemonSet"),
        }

        def orphan(obj: Mapping[str, Any]) -> bool:
            ref = _controller_ref(obj)
            if ref is None or ref.get("kind") not in owners:
                return False
            owner = self.store.lookup(owners[ref["kind"]], obj["metadata"].get("namespace"),
                                      ref.get("name", ""))
            return owner is None or owner.obj["metadata"].get("uid") != ref.get("uid")

        rs_rt = owners["ReplicaSet"]
        for rs in [s.obj for s in self._objs(rs_rt)]:
            if orphan(rs):
                self._delete(rs_rt, rs)
        for pod in self._pods():
            node = (pod.get("spec") or {}).get("nodeName")
            if orphan(pod) or (node and node not in nodes):
                self._delete(self._pod_rt, pod)

    # ------------------------------------------------------------------ workload controllers

    def _deployments(self) -> None:
        rt, rs_rt = self._rt("apps/v1", "Deployment"), self._rt("apps/v1", "ReplicaSet")
        for stored in self._objs(rt):
            d = stored.obj
            meta, spec = d["metadata"], d.get("spec") or {}
            template = spec.get("template") or {}
            h = safe_hash(template)
            rs_name = f"{meta['name']}-{h}"
            replicas = int(spec.get("replicas", 1))
            owned = [s.obj for s in self._objs(rs_rt) if _owned_by(s.obj, meta["uid"])]
            current = next((r for r in owned if r["metadata"]["name"] == rs_name), None)
            if current is None:
                revision = 1 + max(
                    (int((r["metadata"].get("annotations") or {})
                         .get("deployment.kubernetes.io/revision", 0)) for r in owned),
                    default=0,
                )
                tmeta = clone(template.get("metadata") or {})
                labels = {**(tmeta.get("labels") or {}), "pod-template-hash": h}
                selector = clone(spec.get("selector") or {})
                selector["matchLabels"] = {**(selector.get("matchLabels") or {}),
                                           "pod-template-hash": h}
                body = {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": rs_name,
                        "namespace": meta["namespace"],
                        "labels": labels,
                        "annotations": {
                            "deployment.kubernetes.io/desired-replicas": str(replicas),
                            "deployment.kubernetes.io/revision": str(revision),
                        },
                        "ownerReferences": _owner_refs(d, "apps/v1", "Deployment"),
                    },
                    "spec": {
                        "replicas": replicas,
                        "selector": selector,
                        "template": {
                            **clone(template),
                            "metadata": {**tmeta, "labels": labels},
                        },
                    },
                }
                self._create(rs_rt, meta["namespace"], body)
            elif int((current.get("spec") or {}).get("replicas", 1)) != replicas:
                self._set_replicas(rs_rt, current, replicas)
            for old in owned:
                if old["metadata"]["name"] != rs_name and (old.get("spec") or {}).get(
                    "replicas", 1
                ) != 0:
                    self._set_replicas(rs_rt, old, 0)

    def _replicasets(self) -> None:
        rs_rt = self._rt("apps/v1", "ReplicaSet")
        for stored in self._objs(rs_rt):
            rs = stored.obj
            meta, spec = rs["metadata"], rs.get("spec") or {}
            want = int(spec.get("replicas", 1))
            pods = [p for p in self._owned_pods(meta["uid"]) if not _terminal(p)]
            if len(pods) > want:
                victims = sorted(
                    pods,
                    key=lambda p: (
                        bool((p.get("spec") or {}).get("nodeName")),
                        is_pod_ready(p),
                        [-ord(c) for c in p["metadata"]["name"]],
                    ),
                )[: len(pods) - want]
                for p in victims:
                    self._delete(self._pod_rt, p)
            for _ in range(want - len(pods)):
                name = self._fresh_name(meta["name"], meta["uid"])
                body = pod_from_template(
                    spec.get("template") or {}, name=name, namespace=meta["namespace"],
                    owner={**rs, "apiVersion": "apps/v1", "kind": "ReplicaSet"},
                )
                self._create(self._pod_rt, meta["namespace"], body)

    def _statefulsets(self) -> None:
        rt = self._rt("apps/v1", "StatefulSet")
        for stored in self._objs(rt):
            sts = stored.obj
            meta, spec = sts["metadata"], sts.get("spec") or {}
            template = spec.get("template") or {}
            revision = f"{meta['name']}-{safe_hash(template)}"
            want = int(spec.get("replicas", 1))
            by_name = {p["metadata"]["name"]: p for p in self._owned_pods(meta["uid"])}
            for name, pod in by_name.items():
                ordinal = name.rsplit("-", 1)[-1]
                stale = (pod["metadata"].get("labels") or {}).get(
                    "controller-revision-hash") != revision
                if not ordinal.isdigit() or int(ordinal) >= want or stale or _terminal(pod):
                    self._delete(self._pod_rt, pod)
            for i in range(want):
                name = f"{meta['name']}-{i}"
                if self.store.lookup(self._pod_rt, meta["namespace"], name) is not None:
                    continue
                body = pod_from_template(
                    template, name=name, namespace=meta["namespace"],
                    owner={**sts, "apiVersion": "apps/v1", "kind": "StatefulSet"},
                    extra_labels={
                        "controller-revision-hash": revision,
                        "statefulset.kubernetes.io/pod-name": name,
                        "apps.kubernetes.io/pod-index": str(i),
                    },
                )
                body["spec"]["hostname"] = name
                if spec.get("serviceName"):
                    body["spec"]["subdomain"] = spec["serviceName"]
                self._create(self._pod_rt, meta["namespace"], body)

    def _daemon_nodes(self, ds: Mapping[str, Any], nodes: Mapping[str, Any]) -> list[str]:
        spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
        probe = {**spec, "tolerations": [*(spec.get("tolerations") or []), *DAEMON_TOLERATIONS]}
        return sorted(n for n, node in nodes.items() if not fit_problems(node, probe))

    def _daemonsets(self, nodes: Mapping[str, Any]) -> None:
        rt = self._rt("apps/v1", "DaemonSet")
        # a daemon pod keeps running where only NoSchedule taints (or a cordon) appeared since:
        # the DaemonSet controller's shouldContinueRunning looks at NoExecute taints only
        running_nodes = {
            n: {**node, "spec": {"taints": [t for t in (node.get("spec") or {}).get("taints")
                                            or [] if t.get("effect") == "NoExecute"]}}
            for n, node in nodes.items()
        }
        for stored in self._objs(rt):
            ds = stored.obj
            meta, spec = ds["metadata"], ds.get("spec") or {}
            template = spec.get("template") or {}
            h = safe_hash(template)
            eligible = set(self._daemon_nodes(ds, nodes))
            may_stay = set(self._daemon_nodes(ds, running_nodes))
            placed: set[str] = set()
            for pod in self._owned_pods(meta["uid"]):
                target = _daemon_target(pod)
                labels = pod["metadata"].get("labels") or {}
                if (target not in may_stay or target in placed or _terminal(pod)
                        or labels.get("controller-revision-hash") != h):
                    self._delete(self._pod_rt, pod)
                else:
                    placed.add(target)
            for node in sorted(eligible - placed):  # new daemon pods: every filter
                body = pod_from_template(
                    template, name=self._fresh_name(meta["name"], f"{meta['uid']}/{node}"),
                    namespace=meta["namespace"],
                    owner={**ds, "apiVersion": "apps/v1", "kind": "DaemonSet"},
                    extra_labels={"controller-revision-hash": h,
                                  "pod-template-generation": str(meta.get("generation", 1))},
                    tolerations=DAEMON_TOLERATIONS, node_name=node,
                )
                self._create(self._pod_rt, meta["namespace"], body)

    # ------------------------------------------------------------------ scheduler, kubelet

    def _schedule(self, nodes: Mapping[str, Any]) -> None:
        pods = self._pods()
        total: dict[str, int] = {}
        per_owner: dict[str, dict[str, int]] = {}
        for p in pods:
            node = (p.get("spec") or {}).get("nodeName")
            if node:
                total[node] = total.get(node, 0) + 1
                ref = _controller_ref(p)
                key = ref.get("uid", "") if ref else ""
                per_owner.setdefault(key, {})[node] = per_owner.get(key, {}).get(node, 0) + 1
        for p in sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
            spec = p.get("spec") or {}
            if spec.get("nodeName") or _terminal(p):
                continue
            problems = {n: fit_problems(node, spec) for n, node in sorted(nodes.items())}
            ref = _controller_ref(p)
            key = ref.get("uid", "") if ref else ""
            chosen = pick_node([n for n, why in problems.items() if not why],
                               per_owner.get(key, {}), total)
            meta = p["metadata"]
            if chosen is None:
                stored = self.store.lookup(self._pod_rt, meta["namespace"], meta["name"])
                if stored is not None:
                    self.write_status(self._pod_rt, stored, pending_status(
                        scheduled=False, message=unschedulable_message(problems)))
                continue
            self.store.patch(self._pod_rt, meta["namespace"], meta["name"], "merge",
                             {"spec": {"nodeName": chosen}}, manager="kube-scheduler")
            total[chosen] = total.get(chosen, 0) + 1
            per_owner.setdefault(key, {})[chosen] = per_owner.get(key, {}).get(chosen, 0) + 1

    def _kubelet(self, nodes: Mapping[str, Any], now: float) -> None:
        live: set[str] = set()
        for stored in self._objs(self._pod_rt):
            pod = stored.obj
            uid = pod["metadata"]["uid"]
            live.add(uid)
            node = (pod.get("spec") or {}).get("nodeName")
            if not node or node not in nodes or _terminal(pod):
                continue
            host_ip = _node_ip(nodes[node])
            bound = self._bound_at.setdefault(uid, now)
            if _kubelet_gone(nodes[node]):
                self._bound_at[uid] = now  # containers start again once the kubelet is back
                if (pod.get("status") or {}).get("phase") == "Running":
                    started = self._started.setdefault(uid, self._stamp())
                    self.write_status(self._pod_rt, stored, running_status(
                        pod, host_ip=host_ip, ready=False, started=started,
                        stamp=self._stamp()))
                continue
            if now - bound < self.workload_delay:
                self.note_due(bound + self.workload_delay)
                status = pending_status(scheduled=True, host_ip=host_ip)
            else:
                started = self._started.setdefault(uid, self._stamp())
                status = running_status(pod, host_ip=host_ip, ready=uid not in self._unready,
                                        started=started, stamp=self._stamp())
            self.write_status(self._pod_rt, stored, status)
        for gone in set(self._bound_at) - live:
            self._bound_at.pop(gone, None)
            self._started.pop(gone, None)
            self._unready.discard(gone)

    # ------------------------------------------------------------------ workload status

    def _statuses(self, nodes: Mapping[str, Any]) -> None:
        rs_rt = self._rt("apps/v1", "ReplicaSet")
        rs_pods: dict[str, list[dict[str, Any]]] = {}
        for stored in self._objs(rs_rt):
            rs = stored.obj
            pods = [p for p in self._owned_pods(rs["metadata"]["uid"]) if not _terminal(p)]
            rs_pods[rs["metadata"]["uid"]] = pods
            ready = sum(1 for p in pods if is_pod_ready(p))
            selector = (rs.get("spec") or {}).get("selector")
            self.write_status(rs_rt, stored, {
                "replicas": len(pods),
                "fullyLabeledReplicas": sum(
                    1 for p in pods
                    if selector_matches(selector, p["metadata"].get("labels") or {})),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            })
        dep_rt = self._rt("apps/v1", "Deployment")
        for stored in self._objs(dep_rt):
            self.write_status(dep_rt, stored, self._deployment_status(stored.obj, rs_pods))
        sts_rt = self._rt("apps/v1", "StatefulSet")
        for stored in self._objs(sts_rt):
            sts = stored.obj
            meta, spec = sts["metadata"], sts.get("spec") or {}
            revision = f"{meta['name']}-{safe_hash(spec.get('template') or {})}"
            pods = self._owned_pods(meta["uid"])
            ready = sum(1 for p in pods if is_pod_ready(p))
            updated = sum(
                1 for p in pods
                if (p["metadata"].get("labels") or {}).get("controller-revision-hash") == revision
            )
            self.write_status(sts_rt, stored, {
                "observedGeneration": meta.get("generation", 1),
                "replicas": len(pods),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "currentReplicas": updated,
                "updatedReplicas": updated,
                "currentRevision": revision,
                "updateRevision": revision,
                "collisionCount": 0,
            })
        ds_rt = self._rt("apps/v1", "DaemonSet")
        for stored in self._objs(ds_rt):
            ds = stored.obj
            eligible = set(self._daemon_nodes(ds, nodes))
            pods = [p for p in self._owned_pods(ds["metadata"]["uid"])
                    if _daemon_target(p) in eligible]
            want = len(eligible)
            ready = sum(1 for p in pods if is_pod_ready(p))
            self.write_status(ds_rt, stored, {
                "observedGeneration": ds["metadata"].get("generation", 1),
                "currentNumberScheduled": len(pods),
                "desiredNumberScheduled": want,
                "numberMisscheduled": 0,
                "numberReady": ready,
                "numberAvailable": ready,
                "numberUnavailable": max(0, want - ready),
                "updatedNumberScheduled": len(pods),
            })

    def _deployment_status(
        self, d: Mapping[str, Any], rs_pods: Mapping[str, list[dict[str, Any]]]
    ) -> dict[str, Any]:
        meta, spec = d["metadata"], d.get("spec") or {}
        want = int(spec.get("replicas", 1))
        rs_name = f"{meta['name']}-{safe_hash(spec.get('template') or {})}"
        rs_rt = self._rt("apps/v1", "ReplicaSet")
        owned = [s.obj for s in self._objs(rs_rt) if _owned_by(s.obj, meta["uid"])]
        pods = [p for r in owned for p in rs_pods.get(r["metadata"]["uid"], [])]
        new = next((r for r in owned if r["metadata"]["name"] == rs_name), None)
        new_pods = rs_pods.get(new["metadata"]["uid"], []) if new else []
        available = sum(1 for p in pods if is_pod_ready(p))
        new_available = sum(1 for p in new_pods if is_pod_ready(p))
        ok = available >= want - _max_unavailable(spec, want)
        done = new_available >= want and len(pods) == len(new_pods)
        conditions = [
            {
                "type": "Available",
                "status": "True" if ok else "False",
                "reason": "MinimumReplicasAvailable" if ok else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability." if ok
                else "Deployment does not have minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                "message": f'ReplicaSet "{rs_name}" has successfully progressed.' if done
                else f'ReplicaSet "{rs_name}" is progressing.',
            },
        ]
        out: dict[str, Any] = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(pods),
            "updatedReplicas": len(new_pods),
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": conditions,
        }
        if want - available > 0:
            out["unavailableReplicas"] = want - available
        return out

    # ------------------------------------------------------------------ disruption controller

    def _scale_of(self, pod: Mapping[str, Any]) -> int | None:
        ref = _controller_ref(pod)
        ns = pod["metadata"].get("namespace")
        if ref is None:
            return None
        if ref.get("kind") == "ReplicaSet":
            rs = self.store.lookup(self._rt("apps/v1", "ReplicaSet"), ns, ref.get("name", ""))
            if rs is None:
                return None
            dref = _controller_ref(rs.obj)
            if dref is not None and dref.get("kind") == "Deployment":
                d = self.store.lookup(self._rt("apps/v1", "Deployment"), ns, dref.get("name", ""))
                return None if d is None else int((d.obj.get("spec") or {}).get("replicas", 1))
            return int((rs.obj.get("spec") or {}).get("replicas", 1))
        if ref.get("kind") == "StatefulSet":
            s = self.store.lookup(self._rt("apps/v1", "StatefulSet"), ns, ref.get("name", ""))
            return None if s is None else int((s.obj.get("spec") or {}).get("replicas", 1))
        return None  # DaemonSets and others have no scale subresource

    def _pdb_pods(self, pdb: Mapping[str, Any]) -> list[dict[str, Any]]:
        ns = pdb["metadata"].get("namespace")
        selector = (pdb.get("spec") or {}).get("selector")
        if selector is None:
            return []
        return [
            p for p in self._pods()
            if p["metadata"].get("namespace") == ns
            and selector_matches(selector, p["metadata"].get("labels") or {})
        ]

    def _disruption(self, now: float) -> None:
        rt = self._rt("policy/v1", "PodDisruptionBudget")
        for stored in self._objs(rt):
            pdb = stored.obj
            meta = pdb["metadata"]
            pods = self._pdb_pods(pdb)
            names = {p["metadata"]["name"] for p in pods}
            old = (pdb.get("status") or {}).get("disruptedPods") or {}
            disrupted: dict[str, str] = {}
            for pod_name, when in old.items():
                key = (meta["namespace"], pod_name)
                at = self._disrupted_at.setdefault(key, now)
                if pod_name in names and now - at < _DISRUPTED_TIMEOUT:
                    self.note_due(at + _DISRUPTED_TIMEOUT)
                    disrupted[pod_name] = when
                else:
                    self._disrupted_at.pop(key, None)
            result = budget_status(
                pdb.get("spec") or {}, pods,
                {p["metadata"]["name"]: self._scale_of(p) for p in pods},
                tuple(disrupted),
            )
            status = result.as_status(meta.get("generation", 1))
            if disrupted:
                status["disruptedPods"] = disrupted
            self.write_status(rt, stored, status)

    # ------------------------------------------------------------------ API hooks

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        stored = self.store.lookup(self._pod_rt, namespace, name)
        if stored is None:
            raise KeyError(f"no pod {namespace}/{name}")
        uid = stored.obj["metadata"]["uid"]
        if ready:
            self._unready.discard(uid)
        else:
            self._unready.add(uid)

    def evict(
        self, namespace: str, name: str, body: Any, *, dry_run: bool
    ) -> tuple[int, dict[str, Any], tuple[tuple[str, str], ...]]:
        """The ``pods/eviction`` subresource: (HTTP code, Status, extra headers)."""
        if not isinstance(body, dict) or body.get("kind") not in (None, "Eviction"):
            raise bad_request(f"not a Eviction object: {type(body).__name__}")
        group = str(body.get("apiVersion") or "policy/v1").rpartition("/")[0]
        if group != "policy":
            raise bad_request(f"not a Eviction object: apiVersion {body.get('apiVersion')}")
        if (body.get("metadata") or {}).get("name") != name:
            raise bad_request("name in URL does not match name in Eviction object")
        options = body.get("deleteOptions") or {}
        dry_run = dry_run or "All" in (options.get("dryRun") or [])
        pod = self.store.get(self._pod_rt, namespace, name)
        pre = options.get("preconditions") or {}
        for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            want, have = pre.get(key), pod["metadata"].get(key)
            if want is not None and want != have:
                raise ApiError(
                    409, "Conflict",
                    f"Operation cannot be fulfilled on pods \"{name}\": Precondition failed: "
                    f"{label} in precondition: {want}, {label} in object meta: {have}",
                    {"name": name, "kind": "pods"},
                )
        pdb_rt = self._rt("policy/v1", "PodDisruptionBudget")
        pdbs = [s.obj for s in self._objs(pdb_rt) if s.obj["metadata"]["namespace"] == namespace]
        outcome = decide_eviction(pod, pdbs)
        if not outcome.delete:
            return _refusal(outcome, namespace, name)
        if outcome.spend is not None and not dry_run:
            self._spend(pdb_rt, namespace, outcome.spend, name)
        if not dry_run:
            self.store.delete(self._pod_rt, namespace, name)
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                     "status": "Success", "code": 201}, ()

    def _spend(self, rt: ResourceType, namespace: str, pdb_name: str, pod: str) -> None:
        stored = self.store.lookup(rt, namespace, pdb_name)
        assert stored is not None
        status = clone(stored.obj.get("status") or {})
        status["disruptionsAllowed"] = int(status.get("disruptionsAllowed", 0)) - 1
        if status["disruptionsAllowed"] == 0:
            status["conditions"] = [
                {**c, "status": "False", "reason": "InsufficientPods", "message": ""}
                if c.get("type") == "DisruptionAllowed" else c
                for c in status.get("conditions") or []
            ]
        status["disruptedPods"] = {**(status.get("disruptedPods") or {}), pod: self._stamp()}
        self.write_status(rt, stored, status)


def _refusal(
    outcome: EvictionOutcome, namespace: str, name: str
) -> tuple[int, dict[str, Any], tuple[tuple[str, str], ...]]:
    status: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": outcome.message, "code": outcome.code,
    }
    if outcome.reason:
        status["reason"] = outcome.reason
    headers: tuple[tuple[str, str], ...] = ()
    if outcome.code == 429:
        details: dict[str, Any] = {"causes": list(outcome.causes)}
        if outcome.retry_after:
            details["retryAfterSeconds"] = outcome.retry_after
            headers = (("Retry-After", str(outcome.retry_after)),)
        status["details"] = details
    elif outcome.code == 403:
        status["details"] = {"name": outcome.message.split('"')[1], "group": "policy",
                             "kind": "poddisruptionbudget"}
    return outcome.code, status, headers


def _owner_refs(owner: Mapping[str, Any], api_version: str, kind: str) -> list[dict[str, Any]]:
    return [{
        "apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
    }]


def _daemon_target(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    terms = (
        (((spec.get("affinity") or {}).get("nodeAffinity") or {})
         .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
        .get("nodeSelectorTerms") or []
    )
    for term in terms:
        for f in term.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("values"):
                return str(f["values"][0])
    return str(spec.get("nodeName") or "")


def _max_unavailable(spec: Mapping[str, Any], replicas: int) -> int:
    """deploymentutil.MaxUnavailable: 0 for Recreate or 0 replicas; else the rolling update's
    maxUnavailable (default 25%, rounded down), 1 when it and maxSurge both resolve to 0."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or replicas == 0:
        return 0
    rolling = strategy.get("rollingUpdate") or {}
    try:
        unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), replicas,
                                   round_up=False)
        surge = scaled_value(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    except ValueError:
        return 0
    if unavailable == 0 and surge == 0:
        unavailable = 1
    return min(unavailable, replicas)


def pods_on(pods: Iterable[Mapping[str, Any]], node: str) -> list[str]:
    """``namespace/name`` of the pods bound to ``node`` (for tests and snapshots)."""
    return sorted(
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in pods if (p.get("spec") or {}).get("nodeName") == node
    )
