"""Controllers of the Kubernetes API emulator: what would move objects' status in a cluster.

``Controllers.reconcile(now)`` is one pass over the store (``now`` is a monotonic time in
seconds, so tests drive time themselves). It stands in for:

- the apiextensions controller: a CRD becomes ``Established`` (and its kind served) after
  ``crd_delay``;
- the deployment/replicaset/daemonset/statefulset controllers, kube-scheduler, the kubelet,
  the garbage collector and the disruption controller (:mod:`cloudctl.emulate.kube_workloads`):
  once a Node is registered, workloads run Pods bound to Nodes (cordon and NoSchedule taints
  honoured), Ready ``workload_delay`` after binding, and their status follows the pods;
  PodDisruptionBudgets get their status. With no Node at all, workloads become
  Available/ready ``workload_delay`` after each new generation without Pods (the API alone);
- the node lifecycle: Nodes (added with ``KubeApiEmulator.add_node``) are ``NotReady`` with the
  kubelet's "cni plugin not initialized" message and the not-ready taint until a CNI HelmRelease
  (chart ``cilium`` by default) is Ready, then ``Ready``; a cordoned Node
  (``spec.unschedulable``) gets the ``node.kubernetes.io/unschedulable:NoSchedule`` taint;
  a Node whose kubelet stops posting status (``KubeApiEmulator.set_kubelet``: the rack says so
  while its Talos machine reboots) is ``Ready=Unknown`` ``NodeStatusUnknown`` with the
  ``node.kubernetes.io/unreachable:NoSchedule`` taint, and ``nodeInfo.kubeletVersion``
  follows the version the rack reports;
- source-controller: HelmRepository/GitRepository/OCIRepository/HelmChart/Bucket Ready with a
  stored artifact (an OCI HelmRepository stays static without conditions, as in Flux v2);
- kustomize-controller: a Kustomization is Ready once its source exists and is Ready;
- helm-controller: a HelmRelease reports ``DependencyNotReady`` until every ``dependsOn`` release
  is Ready, ``ArtifactFailed`` while its chart source is missing or not Ready, ``InitFailed`` when
  a ``valuesFrom`` reference cannot be resolved; otherwise each Helm action (install, or upgrade
  once installed) runs ``release_delay`` seconds (per release overridable; Ready=Unknown,
  Reconciling=True meanwhile) and then either succeeds (Ready/Released=True
  ``InstallSucceeded``/``UpgradeSucceeded``, history, failure counters reset) or fails, when the
  values break the chart's values schema or an injected :class:`Failure` has attempts left:
  Ready/Released=False ``InstallFailed``/``UpgradeFailed`` (or the injected reason) with
  helm-controller's message ``Helm <action> failed for release <ns>/<name> with chart
  <chart>@<version>: <error>``, ``status.failures`` and ``installFailures``/``upgradeFailures``
  counted. As helm-controller with ``spec.<action>.remediation.retries``: while retries remain
  (negative: forever) the next attempt follows ``retry_interval`` seconds later; once the count
  exceeds them, Stalled=True ``RetriesExceeded`` ("Failed to <action> after N attempt(s)") and no
  more attempts for this generation. A new generation resets the counters.
  Helm's own part of the action is done by ``helm`` (a
  :class:`~cloudctl.emulate.kube_helm.HelmInstaller`; None: no objects are installed): a chart
  whose source it can read (the rack: a GitRepository on loopback, i.e. cloudctl's local charts
  in GitOps mode) is rendered with the real ``helm template`` and its objects are applied
  before the release is Ready; helm's error, an unmapped kind or a rejected object is a failed
  action like any other, and a chart path missing from the source is ``ArtifactFailed``
  (retried, not counted). Charts from Helm/OCI repositories cannot be read offline: those
  releases become Ready without objects.
- the Piraeus operator, for LINSTOR only: once a HelmRelease of chart ``linstor-cluster`` is
  Ready, the ``linstor-controller`` Service (port 3370, ``api``) exists in its target namespace
  and :attr:`Controllers.storage` (:mod:`cloudctl.emulate.linstor_view`) is served through the
  service proxy: seeded with two PVC resources of 2 UpToDate replicas when nothing was
  defined, then shaped by the injected ``storage_faults``;
- virt-operator / cdi-operator: a ``KubeVirt`` (kubevirt.io/v1) / ``CDI``
  (cdi.kubevirt.io/v1beta1) CR gets a status only once its operator Deployment
  (``virt-operator`` in the CR's namespace / ``cdi-operator``) is Available: phase
  ``Deploying`` (Available=False, Progressing=True, Degraded=False), then ``operator_delay``
  seconds later ``Deployed`` (Available=True, Progressing=False, Degraded=False; KubeVirt adds
  Created=True and the observed version/registry/generation, CDI its observedVersion). An
  injected component fault keeps phase ``Deploying`` with Available=False and Degraded=True
  carrying its reason and message.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import Problem
from .kube_events import EventRecorder
from .kube_fields import clone
from .kube_helm import HelmAction, HelmInstaller, Outcome
from .kube_pods import UNSCHEDULABLE_TAINT
from .kube_store import ApiError, Store, StoredObject
from .kube_tenants import TenantControllers
from .kube_types import ResourceType
from .kube_workloads import PodControllers
from .linstor_view import LINSTOR_PORT, LINSTOR_SERVICE, StorageTable

__all__ = ["Controllers", "Failure", "ValuesValidator"]

ValuesValidator = Callable[[Mapping[str, Any], str], Iterable[Problem | str]]
"""Checks a release's computed values for a chart version; returns the problems (none: valid)."""

_SOURCE_KINDS = ("HelmRepository", "GitRepository", "OCIRepository", "HelmChart", "Bucket")
_CONTROLLER = "emulated-controller-manager"


@dataclass(frozen=True)
class Failure:
    """An injected Helm action failure: ``times`` attempts fail (None: every attempt), each
    with this condition reason ("" : InstallFailed/UpgradeFailed) and error message."""

    reason: str = ""
    message: str = "injected failure"
    times: int | None = None


def _condition(
    ctype: str, status: str, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ctype, "status": status, "reason": reason, "message": message}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def _merge_conditions(
    old: list[dict[str, Any]] | None, new: list[dict[str, Any]], stamp: str
) -> list[dict[str, Any]]:
    """Keep ``lastTransitionTime`` of a condition whose status did not change."""
    before = {c.get("type"): c for c in old or []}
    out = []
    for cond in new:
        prev = before.get(cond["type"])
        when = (
            prev.get("lastTransitionTime")
            if prev and prev.get("status") == cond["status"]
            else None
        )
        out.append({**cond, "lastTransitionTime": when or stamp})
    return out


def ready_condition(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond  # type: ignore[no-any-return]
    return None


def is_ready(obj: Mapping[str, Any]) -> bool:
    cond = ready_condition(obj)
    gen = (obj.get("metadata") or {}).get("generation")
    return bool(
        cond
        and cond.get("status") == "True"
        and (gen is None or cond.get("observedGeneration", gen) == gen)
    )


def _digest(obj: Any, algo: str = "sha256") -> str:
    data = json.dumps(obj, sort_keys=True).encode()
    return hashlib.new(algo, data).hexdigest()


@dataclass(frozen=True)
class Kubelet:
    """A node's kubelet as the rack sees it: posting status (its machine runs) and its
    version (the kubelet image of the node's machine config)."""

    posting: bool = True
    version: str | None = None


@dataclass
class Controllers:
    store: Store
    workload_delay: float = 0.0
    release_delay: float = 0.0
    source_delay: float = 0.0
    crd_delay: float = 0.0
    values_validators: dict[str, ValuesValidator] = field(default_factory=dict)
    cni_charts: tuple[str, ...] = ("cilium",)
    kubelet_version: str = "v1.34.1"
    release_delays: dict[str, float] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)
    retry_interval: float = 0.4
    """Seconds between a failed Helm action and helm-controller's next attempt."""
    operator_delay: float = 0.0
    """Seconds the KubeVirt/CDI operators take to deploy once their Deployment is available."""
    component_faults: dict[str, Failure] = field(default_factory=dict)
    """``kubevirt``/``cdi`` -> the failure that keeps its CR from being deployed."""
    helm: HelmInstaller | None = None
    """Renders and installs the charts it can read before a release is Ready (None: no chart
    objects are installed)."""
    wallclock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    _since: dict[tuple[str, ...], tuple[Any, float]] = field(default_factory=dict)
    _checked: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    _retry_at: dict[tuple[str, ...], float] = field(default_factory=dict)
    _injected: dict[str, int] = field(default_factory=dict)
    next_due: float = math.inf
    """After ``reconcile``: when the next timed transition falls due (see there)."""
    pods: PodControllers = field(init=False)
    storage: StorageTable = field(default_factory=StorageTable)
    """LINSTOR resource health per node (served through the service proxy)."""
    linstor_charts: tuple[str, ...] = ("linstor-cluster",)
    linstor_namespace: str | None = None
    """Where the emulated Piraeus operator created the ``linstor-controller`` Service (None:
    LINSTOR is not running)."""
    storage_faults: list[tuple[str, str | None, str]] = field(default_factory=list)
    """(resource, node keeping the UpToDate replica, state of the others) applied once
    LINSTOR runs."""
    kubelets: dict[str, Kubelet] = field(default_factory=dict)
    """Node name -> what its kubelet reports (set by the rack from its Talos node); a Node not
    listed has a kubelet that always posts status."""
    cni_installed: bool | None = None
    """Whether the nodes' network plugin runs; None: when a HelmRelease of a ``cni_charts``
    chart is Ready (a tenant cluster's API is told by its management cluster instead)."""
    _last_run: dict[str, tuple[tuple[int, ...], float]] = field(default_factory=dict)
    """Controller -> (revisions of the kinds it watches when it last ran, its next due time)."""
    _node_settled: dict[str, tuple[StoredObject, Kubelet, bool]] = field(default_factory=dict)
    """Node name -> (the stored Node, its kubelet, whether the CNI was ready) when the node
    lifecycle controller last found nothing to change for it: the same three again need no
    visit (stored objects are replaced, never changed in place)."""
    tenants: TenantControllers = field(init=False)
    """Cluster API, Kamaji and KubeVirt controllers for tenant clusters (kube_tenants)."""

    events: EventRecorder = field(init=False)
    """Events of what the passes changed, as the controllers record them (kube_events)."""

    def __post_init__(self) -> None:
        self.events = EventRecorder(self.store, self.wallclock)
        self.tenants = TenantControllers(self.store, self._write_status, is_ready, self._stamp)
        self.pods = PodControllers(
            self.store, self.workload_delay, self._write_status, wallclock=self.wallclock,
            note_due=self.note_due,
        )

    # ------------------------------------------------------------------ helpers

    def _stamp(self) -> str:
        return self.wallclock().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _waiting(self, key: tuple[str, ...], state: Any, now: float, delay: float) -> bool:
        """Whether ``key`` has been in ``state`` for less than ``delay`` seconds; if so, the
        moment it will have been is noted in ``next_due`` (the rack sleeps until then)."""
        elapsed = self._elapsed(key, state, now)
        if elapsed < delay:
            self.note_due(now + delay - elapsed)
            return True
        return False

    def note_due(self, when: float) -> None:
        """A timed transition falls due at ``when`` (monotonic clock)."""
        self.next_due = min(self.next_due, when)

    def _elapsed(self, key: tuple[str, ...], state: Any, now: float) -> float:
        """Seconds since ``key`` was first seen in ``state`` (restarts when the state changes)."""
        prev = self._since.get(key)
        if prev is None or prev[0] != state:
            self._since[key] = (state, now)
            return 0.0
        return now - prev[1]

    def _type(self, api_version: str, kind: str) -> ResourceType | None:
        return self.store.type_of(api_version, kind)

    def _types_of_kind(self, kind: str) -> list[ResourceType]:
        """One served type per stored kind (versions share storage)."""
        seen: set[tuple[str, str]] = set()
        out = []
        for rt in self.store.types():
            if rt.kind == kind and (rt.group, rt.plural) not in seen:
                seen.add((rt.group, rt.plural))
                out.append(rt)
        return out

    def _write_status(self, rt: ResourceType, stored: StoredObject, status: dict[str, Any]) -> None:
        meta = stored.obj["metadata"]
        if "conditions" in status:
            status["conditions"] = _merge_conditions(
                (stored.obj.get("status") or {}).get("conditions"),
                status["conditions"],
                self._stamp(),
            )
        self.store.set_status(rt, meta.get("namespace"), meta["name"], status)

    def _find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        for rt in self._types_of_kind(kind):
            stored = self.store.lookup(rt, namespace, name)
            if stored is not None:
                return stored.obj
        return None

    # ------------------------------------------------------------------ passes

    def reconcile(self, now: float, *, incremental: bool = False) -> None:
        """One pass over every controller. Afterwards ``next_due`` is the earliest moment a
        timed transition (a delay, a retry) falls due, ``math.inf`` when none is pending: until
        then, or until an object changes, another pass would change nothing.

        ``incremental``: nothing the controllers read outside the store changed since the last
        pass, so the controllers that scale with the rack (the workload controllers and the
        node lifecycle controller, which visit every node and pod) run only when an object of
        a kind they watch changed since they last ran, or a transition of theirs fell due, as
        informer-driven controllers do."""
        self.next_due = math.inf
        self._crds(now)
        self._watching("workloads", self._workloads, now, incremental)
        self._sources(now)
        self._kustomizations(now)
        self._helmreleases(now)
        self._operators(now)
        self._watching("nodes", lambda _: self._nodes(), now, incremental)
        self._linstor()
        self.tenants.reconcile()
        self.events.observe()

    def _watching(
        self, name: str, controller: Callable[[float], None], now: float, incremental: bool
    ) -> None:
        """Run ``controller`` unless, in an incremental pass, none of the kinds it watches
        changed since it last ran and none of its timed transitions is due (its due time is
        kept in ``next_due`` either way)."""
        seen = tuple(self.store.kind_revision(g, k) for g, k in _WATCHED[name])
        last = self._last_run.get(name)
        if incremental and last is not None and last[0] == seen and now < last[1]:
            self.note_due(last[1])
            return
        outer, self.next_due = self.next_due, math.inf
        try:
            controller(now)
        finally:
            mine = self.next_due
            self.next_due = min(outer, mine)
            # the revisions from before it ran: its own writes make it look once more
            self._last_run[name] = (seen, mine)

    def _crds(self, now: float) -> None:
        rt = self._type("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        assert rt is not None
        for stored in self.store.iter_stored(rt):
            obj = stored.obj
            name = obj["metadata"]["name"]
            gen = obj["metadata"].get("generation")
            established = self.store.is_established(name)
            if established and is_established_at(obj, gen):
                continue
            if not established and self._waiting(("crd", name), gen, now, self.crd_delay):
                continue
            self.store.register_crd(obj)
            spec = obj["spec"]
            storage = [v["name"] for v in spec["versions"] if v.get("storage")]
            status = {
                "conditions": [
                    _condition("NamesAccepted", "True", "NoConflicts", "no conflicts found", gen),
                    _condition(
                        "Established",
                        "True",
                        "InitialNamesAccepted",
                        "the initial names have been accepted",
                        gen,
                    ),
                ],
                "acceptedNames": clone(spec["names"]),
                "storedVersions": storage,
            }
            self._write_status(rt, stored, status)

    def _node_count(self) -> int:
        rt = self._type("v1", "Node")
        assert rt is not None
        return sum(1 for _ in self.store.iter_stored(rt))

    def _workloads(self, now: float) -> None:
        nodes = self._node_count()
        if nodes:
            self.pods.workload_delay = self.workload_delay
            self.pods.wallclock = self.wallclock
            self.pods.reconcile(now)
            return
        for kind in ("Deployment", "DaemonSet", "StatefulSet"):
            rt = self._type("apps/v1", kind)
            assert rt is not None
            for stored in self.store.iter_stored(rt):
                meta = stored.obj["metadata"]
                gen = meta.get("generation", 1)
                want = (
                    nodes
                    if kind == "DaemonSet"
                    else int((stored.obj.get("spec") or {}).get("replicas", 1))
                )
                key = (kind, meta.get("namespace", ""), meta["name"])
                ready = not self._waiting(key, (gen, want), now, self.workload_delay)
                self._write_status(rt, stored, _workload_status(kind, meta, gen, want, ready))

    def _sources(self, now: float) -> None:
        for kind in _SOURCE_KINDS:
            for rt in self._types_of_kind(kind):
                for stored in self.store.iter_stored(rt):
                    meta = stored.obj["metadata"]
                    spec = stored.obj.get("spec") or {}
                    gen = meta.get("generation", 1)
                    if kind == "HelmRepository" and spec.get("type") == "oci":
                        continue  # static object in Flux v2: no reconciliation, no conditions
                    if is_ready(stored.obj):
                        continue
                    key = (kind, meta.get("namespace", ""), meta["name"])
                    if self._waiting(key, gen, now, self.source_delay):
                        status = {
                            "conditions": [
                                _condition(
                                    "Ready",
                                    "Unknown",
                                    "Progressing",
                                    "reconciliation in progress",
                                    gen,
                                ),
                                _condition(
                                    "Reconciling",
                                    "True",
                                    "Progressing",
                                    "reconciliation in progress",
                                    gen,
                                ),
                            ]
                        }
                    else:
                        status = _source_ready(kind, spec, gen, self._stamp())
                    self._write_status(rt, stored, status)

    def _kustomizations(self, now: float) -> None:
        for rt in self._types_of_kind("Kustomization"):
            for stored in self.store.iter_stored(rt):
                obj = stored.obj
                meta = obj["metadata"]
                spec = obj.get("spec") or {}
                gen = meta.get("generation", 1)
                if spec.get("suspend") or is_ready(obj):
                    continue
                ns = meta.get("namespace", "")
                ref = spec.get("sourceRef") or {}
                src = self._find(
                    ref.get("kind", "GitRepository"), ref.get("namespace", ns), ref.get("name", "")
                )
                blocked = self._blocked_dependency("Kustomization", obj)
                key = ("Kustomization", ns, meta["name"])
                if blocked:
                    cond = _condition("Ready", "False", "DependencyNotReady", blocked, gen)
                    self._since.pop(key, None)
                elif src is None or not is_ready(src):
                    what = "not found" if src is None else "is not ready"
                    cond = _condition(
                        "Ready",
                        "False",
                        "ArtifactFailed",
                        f"Source artifact not found: {ref.get('kind')} "
                        f"'{ref.get('namespace', ns)}/{ref.get('name')}' {what}",
                        gen,
                    )
                    self._since.pop(key, None)
                elif self._waiting(key, gen, now, self.release_delay):
                    cond = _condition(
                        "Ready", "Unknown", "Progressing", "Reconciliation in progress", gen
                    )
                else:
                    revision = ((src.get("status") or {}).get("artifact") or {}).get("revision")
                    cond = _condition(
                        "Ready",
                        "True",
                        "ReconciliationSucceeded",
                        f"Applied revision: {revision}",
                        gen,
                    )
                status = {
                    "observedGeneration": gen if cond["status"] == "True" else -1,
                    "conditions": [cond],
                }
                self._write_status(rt, stored, status)

    def _blocked_dependency(self, kind: str, obj: Mapping[str, Any]) -> str | None:
        ns = obj["metadata"].get("namespace", "")
        for dep in (obj.get("spec") or {}).get("dependsOn") or []:
            dep_ns = dep.get("namespace") or ns
            target = self._find(kind, dep_ns, dep.get("name", ""))
            if target is None or not is_ready(target):
                return f"dependency '{dep_ns}/{dep.get('name')}' is not ready"
        return None

    def _release_delay(self, namespace: str, name: str) -> float:
        for key in (f"{namespace}/{name}", name):
            if key in self.release_delays:
                return self.release_delays[key]
        return self.release_delay

    def _failure(self, namespace: str, name: str) -> tuple[str, Failure | None]:
        for key in (f"{namespace}/{name}", name):
            if key in self.failures:
                return key, self.failures[key]
        return name, None

    def _helmreleases(self, now: float) -> None:
        for rt in self._types_of_kind("HelmRelease"):
            for stored in self.store.iter_stored(rt):
                self._helmrelease(rt, stored, now)

    def _helmrelease(self, rt: ResourceType, stored: StoredObject, now: float) -> None:
        obj = stored.obj
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        ns, name, gen = meta.get("namespace", ""), meta["name"], meta.get("generation", 1)
        if spec.get("suspend") or is_ready(obj):
            return  # helm-controller acts again on a new generation only
        old = obj.get("status") or {}
        key = ("HelmRelease", ns, name)
        target_ns = spec.get("targetNamespace") or ns
        release = spec.get("releaseName") or (
            f"{spec['targetNamespace']}-{name}" if spec.get("targetNamespace") else name
        )
        chart, version = _chart_of(spec, name)
        chart_ref = spec.get("chartRef") or {}
        if chart_ref.get("kind") == "OCIRepository":  # the version is the artifact's tag
            oci = self._find(
                "OCIRepository", chart_ref.get("namespace") or ns, chart_ref.get("name", "")
            )
            ref = ((oci or {}).get("spec") or {}).get("ref") or {}
            version = str(ref.get("tag") or ref.get("semver") or version)
        installed = bool(old.get("history"))
        action = "upgrade" if installed else "install"
        counter = "upgradeFailures" if installed else "installFailures"
        # failure counts are "against the latest desired state": a new generation resets them
        counts = {k: int(old.get(k) or 0) for k in _FAILURE_COUNTERS}
        if old.get("lastAttemptedGeneration") not in (None, gen):
            counts = dict.fromkeys(_FAILURE_COUNTERS, 0)
            self._retry_at.pop(key, None)

        def status(conds: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            out = {
                k: v
                for k, v in old.items()
                if k in ("history", "lastAttemptedRevision", "lastAttemptedGeneration",
                         "lastAttemptedReleaseAction", "lastAttemptedConfigDigest",
                         "observedGeneration", "storageNamespace")
            }
            out.update({k: v for k, v in counts.items() if v})
            out.update(extra)
            out["conditions"] = conds
            return out

        blocked = self._blocked_dependency("HelmRelease", obj)
        if blocked:
            self._since.pop(key, None)
            cond = _condition("Ready", "False", "DependencyNotReady", blocked, gen)
            self._write_status(rt, stored, status([cond]))
            return
        source_problem = self._source_problem(spec, ns)
        if source_problem:
            self._since.pop(key, None)
            cond = _condition("Ready", "False", "ArtifactFailed", source_problem, gen)
            self._write_status(rt, stored, status([cond]))
            return
        if old.get("lastAttemptedGeneration") == gen and _stalled_at(old, gen):
            return  # retries exhausted: helm-controller stopped trying this generation
        if now < self._retry_at.get(key, -math.inf):
            self.note_due(self._retry_at[key])
            return  # failed; the next attempt is requeued (status unchanged meanwhile)
        values, init_problem = self._values(spec, ns)
        if init_problem:
            cond = _condition("Ready", "False", "InitFailed", init_problem, gen)
            self._write_status(rt, stored, status([cond]))
            return
        digest = "sha256:" + _digest(values)
        attempt = (gen, counts[counter])
        if self._waiting(key, attempt, now, self._release_delay(ns, name)):
            running = f"Running '{action}' action with timeout of 5m0s"
            self._write_status(
                rt,
                stored,
                status(
                    [
                        _condition("Ready", "Unknown", "Progressing", running, gen),
                        _condition("Reconciling", "True", "Progressing", running, gen),
                    ],
                    lastAttemptedGeneration=gen,
                    lastAttemptedReleaseAction=action,
                    lastAttemptedRevision=version,
                    lastAttemptedConfigDigest=digest,
                ),
            )
            return
        error = self._attempt_error(ns, name, chart, version, values)
        if error is None:
            if spec.get("install", {}).get("createNamespace"):
                self._ensure_namespace(target_ns)  # Helm creates it before the objects
            outcome = self._helm_action(obj, release, target_ns, action, values)
            if outcome.artifact is not None:
                # the chart could not be built from its source: no attempt, retried later
                self._retry_at[key] = now + self.retry_interval
                cond = _condition("Ready", "False", "ArtifactFailed", outcome.artifact, gen)
                self._write_status(rt, stored, status([cond]))
                return
            if outcome.error is not None:
                error = ("", outcome.error)
            else:
                self._crds(now)  # the apiextensions controller sees new CRDs at once
        if error is not None:
            reason, text = error
            reason = reason or ("UpgradeFailed" if installed else "InstallFailed")
            counts["failures"] += 1
            counts[counter] += 1
            message = (
                f"Helm {action} failed for release {target_ns}/{release} with chart "
                f"{chart}@{version}: {text}"
            )
            conds = [
                _condition("Ready", "False", reason, message, gen),
                _condition("Released", "False", reason, message, gen),
            ]
            retries = _retries(spec, action)
            if retries >= 0 and counts[counter] > retries:
                conds.append(
                    _condition(
                        "Stalled",
                        "True",
                        "RetriesExceeded",
                        f"Failed to {action} after {counts[counter]} attempt(s)",
                        gen,
                    )
                )
            else:
                self._retry_at[key] = now + self.retry_interval
            self._write_status(
                rt,
                stored,
                status(
                    conds,
                    lastAttemptedGeneration=gen,
                    lastAttemptedReleaseAction=action,
                    lastAttemptedRevision=version,
                    lastAttemptedConfigDigest=digest,
                ),
            )
            return
        self._retry_at.pop(key, None)
        counts = dict.fromkeys(_FAILURE_COUNTERS, 0)  # reset by a successful reconciliation
        history = list(old.get("history") or [])
        revision = (history[0].get("version", len(history)) if history else 0) + 1
        history.insert(
            0,
            {
                "name": release,
                "namespace": target_ns,
                "version": revision,
                "status": "deployed",
                "chartName": chart,
                "chartVersion": version,
                "configDigest": digest,
            },
        )
        reason = "UpgradeSucceeded" if installed else "InstallSucceeded"
        message = (
            f"Helm {action} succeeded for release {target_ns}/{release}.v{revision} with "
            f"chart {chart}@{version}"
        )
        self._write_status(
            rt,
            stored,
            status(
                [
                    _condition("Ready", "True", reason, message, gen),
                    _condition("Released", "True", reason, message, gen),
                ],
                history=history[:5],
                lastAttemptedRevision=version,
                lastAttemptedGeneration=gen,
                lastAttemptedReleaseAction=action,
                lastAttemptedConfigDigest=digest,
                observedGeneration=gen,
                storageNamespace=target_ns,
            ),
        )

    def _attempt_error(
        self, ns: str, name: str, chart: str, version: str, values: Mapping[str, Any]
    ) -> tuple[str, str] | None:
        """(reason or "", error) when this Helm action fails: the values break the chart's
        schema, or an injected failure has attempts left (one is used up)."""
        problems = self._values_problems(chart, version, name, values)
        if problems:
            lines = "\n".join(f"- {p}" for p in problems)
            return "", (
                "values don't meet the specifications of the schema(s) in the following "
                f"chart(s):\n{chart}:\n{lines}"
            )
        failure_key, failure = self._failure(ns, name)
        if failure is None:
            return None
        used = self._injected.get(failure_key, 0)
        if failure.times is not None and used >= failure.times:
            return None
        self._injected[failure_key] = used + 1
        return failure.reason, failure.message

    def _chart_source(self, spec: Mapping[str, Any], ns: str) -> dict[str, Any] | None:
        chart_ref = spec.get("chartRef")
        if chart_ref:
            ref, src_ns = chart_ref, chart_ref.get("namespace") or ns
        else:
            ref = ((spec.get("chart") or {}).get("spec") or {}).get("sourceRef") or {}
            src_ns = ref.get("namespace") or ns
        if not ref.get("kind"):
            return None
        return self._find(ref["kind"], src_ns, ref.get("name", ""))

    def _helm_action(
        self,
        obj: Mapping[str, Any],
        release: str,
        target_ns: str,
        action: str,
        values: Mapping[str, Any],
    ) -> Outcome:
        """Helm's part of the action (render + install the chart's objects) when a
        :class:`~cloudctl.emulate.kube_helm.HelmInstaller` is configured."""
        meta, spec = obj["metadata"], obj.get("spec") or {}
        if self.helm is None or spec.get("kubeConfig"):
            # no helm, or a release into another cluster (a tenant's API, which the tenant
            # controllers tell when its CNI release is Ready): nothing lands in this store
            return Outcome()
        ns = meta.get("namespace", "")
        chart_path = str(((spec.get("chart") or {}).get("spec") or {}).get("chart") or "")
        act = HelmAction(
            hr_namespace=ns,
            hr_name=meta["name"],
            release=release,
            namespace=target_ns,
            action=action,
            spec=spec,
            source=self._chart_source(spec, ns),
            chart_path=chart_path,
            values=values,
        )
        return self.helm.run(self.store, act, self.kubelet_version)

    def _source_problem(self, spec: Mapping[str, Any], ns: str) -> str | None:
        chart_ref = spec.get("chartRef")
        if chart_ref:
            kind, name = chart_ref.get("kind", ""), chart_ref.get("name", "")
            src_ns = chart_ref.get("namespace") or ns
        else:
            ref = ((spec.get("chart") or {}).get("spec") or {}).get("sourceRef") or {}
            kind, name = ref.get("kind", ""), ref.get("name", "")
            src_ns = ref.get("namespace") or ns
        secret_ref = (spec.get("kubeConfig") or {}).get("secretRef") or {}
        if secret_ref and self._find("Secret", ns, str(secret_ref.get("name", ""))) is None:
            # a release for a remote cluster (a tenant) waits for that cluster's kubeconfig
            return (f"could not get KubeConfig secret '{ns}/{secret_ref.get('name')}': "
                    f"secrets \"{secret_ref.get('name')}\" not found")
        if not kind:
            return None
        src = self._find(kind, src_ns, name)
        if src is None:
            return f"could not get Source object: {kind} '{src_ns}/{name}' not found"
        static = kind == "HelmRepository" and (src.get("spec") or {}).get("type") == "oci"
        if not static and not is_ready(src):
            return f"{kind} '{src_ns}/{name}' is not ready"
        return None

    def _values(self, spec: Mapping[str, Any], ns: str) -> tuple[dict[str, Any], str | None]:
        values: dict[str, Any] = {}
        for ref in spec.get("valuesFrom") or []:
            kind, name = ref.get("kind", ""), ref.get("name", "")
            key = ref.get("valuesKey") or "values.yaml"
            where = f"{kind} chart values reference '{ns}/{name}' with key '{key}'"
            src = self._find(kind, ns, name) if kind in ("ConfigMap", "Secret") else None
            raw: Any = None
            if src is not None:
                if kind == "ConfigMap":
                    raw = (src.get("data") or {}).get(key)
                else:
                    enc = (src.get("data") or {}).get(key)
                    raw = (
                        base64.b64decode(enc).decode()
                        if enc is not None
                        else ((src.get("stringData") or {}).get(key))
                    )
            if raw is None:
                if ref.get("optional"):
                    continue
                return values, f"could not resolve {where}: not found"
            try:
                part = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                return values, f"unable to read values from {where}: {exc}"
            if ref.get("targetPath"):
                _set_dotted(values, ref["targetPath"], part)
            elif isinstance(part, dict):
                values = _deep_merge(values, part)
        return _deep_merge(values, spec.get("values") or {}), None

    def _values_problems(
        self, chart: str, version: str, name: str, values: Mapping[str, Any]
    ) -> list[str]:
        validator = self.values_validators.get(chart) or self.values_validators.get(name)
        if validator is None:
            return []
        key = (f"{chart}@{version}/{name}", _digest(values))
        if key not in self._checked:
            self._checked[key] = [str(p) for p in validator(values, version)]
        return self._checked[key]

    def _ensure_namespace(self, name: str) -> None:
        rt = self._type("v1", "Namespace")
        assert rt is not None
        if self.store.lookup(rt, None, name) is None:
            # an invalid target namespace name: nothing a controller could do about it
            with contextlib.suppress(ApiError):
                self.store.create(
                    rt,
                    None,
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                    manager="helm",
                )

    # ------------------------------------------------------------------ operators

    def _operators(self, now: float) -> None:
        for op in _OPERATORS:
            rt = self._type(op.api_version, op.kind)
            if rt is None:
                continue  # CRD not established yet
            for stored in self.store.iter_stored(rt):
                self._operator_cr(op, rt, stored, now)

    def _operator_deployment(self, op: _Operator, namespace: str | None) -> dict[str, Any] | None:
        rt = self._type("apps/v1", "Deployment")
        assert rt is not None
        for stored in self.store.iter_stored(rt):
            meta = stored.obj["metadata"]
            if meta["name"] == op.deployment and namespace in (None, meta.get("namespace")):
                return stored.obj
        return None

    def _operator_cr(
        self, op: _Operator, rt: ResourceType, stored: StoredObject, now: float
    ) -> None:
        """What virt-operator / cdi-operator write into their CR's status."""
        meta = stored.obj["metadata"]
        gen = meta.get("generation", 1)
        old = stored.obj.get("status") or {}
        deployment = self._operator_deployment(op, meta.get("namespace") if op.namespaced else None)
        key = (op.kind, meta.get("namespace", ""), meta["name"])
        if deployment is None or not _available(deployment):
            self._since.pop(key, None)
            return  # no operator running: nobody writes this status
        fault = self.component_faults.get(op.component)
        was_deployed = old.get("phase") == "Deployed" and fault is None
        if was_deployed and old.get("observedGeneration", gen) == gen:
            return
        version, registry = _image_version(deployment, op.image)
        # a deployed CR stays Deployed while the operator re-syncs a changed spec
        deployed = fault is None and (
            was_deployed or not self._waiting(key, version, now, self.operator_delay)
        )
        stamp = self._stamp()
        status = op.status(version, registry, gen, deployed, fault, _digest([version, registry]))
        for cond in status["conditions"]:
            cond[op.probe_field] = stamp
        self._write_status(rt, stored, status)

    def _linstor(self) -> None:
        """The Piraeus operator: once a linstor-cluster release is Ready, the LINSTOR
        controller's Service exists in its namespace and the storage table is served."""
        if self.linstor_namespace is not None:
            return
        for hrt in self._types_of_kind("HelmRelease"):
            for hr in (s.obj for s in self.store.iter_stored(hrt)):
                spec = hr.get("spec") or {}
                if is_ready(hr) and _chart_of(spec, hr["metadata"]["name"])[0] in (
                    self.linstor_charts
                ):
                    self.start_linstor(spec.get("targetNamespace") or hr["metadata"]["namespace"])
                    return

    def start_linstor(self, namespace: str) -> None:
        """The LINSTOR controller runs in ``namespace``: its Service is created, the default
        resources are seeded when none were defined, injected storage faults applied."""
        ns_rt, svc_rt = self._type("v1", "Namespace"), self._type("v1", "Service")
        node_rt = self._type("v1", "Node")
        assert ns_rt is not None and svc_rt is not None and node_rt is not None
        if self.store.lookup(ns_rt, None, namespace) is None:
            self.store.create(ns_rt, None, {"metadata": {"name": namespace}},
                              manager="helm-controller")
        if self.store.lookup(svc_rt, namespace, LINSTOR_SERVICE) is None:
            self.store.create(
                svc_rt,
                namespace,
                {
                    "metadata": {
                        "name": LINSTOR_SERVICE,
                        "labels": {"app.kubernetes.io/component": "linstor-controller"},
                    },
                    "spec": {
                        "type": "ClusterIP",
                        "selector": {"app.kubernetes.io/component": "linstor-controller"},
                        "ports": [{"name": "api", "port": LINSTOR_PORT,
                                   "targetPort": "api", "protocol": "TCP"}],
                    },
                },
                manager="piraeus-operator",
            )
        nodes = sorted(s.obj["metadata"]["name"] for s in self.store.iter_stored(node_rt))
        if not self.storage.resources:
            self.storage.seed(nodes)
        for resource, keep, state in self.storage_faults:
            self.storage.degrade(resource, nodes, keep, state)
        self.linstor_namespace = namespace

    def _nodes(self) -> None:
        rt = self._type("v1", "Node")
        assert rt is not None
        cni_ready = self.cni_installed if self.cni_installed is not None else any(
            is_ready(hr)
            and (
                _chart_of(hr.get("spec") or {}, hr["metadata"]["name"])[0] in self.cni_charts
                or hr["metadata"]["name"] in self.cni_charts
            )
            for hrt in self._types_of_kind("HelmRelease")
            for hr in (s.obj for s in self.store.iter_stored(hrt))
        )
        settled = self._node_settled
        for stored in self.store.iter_stored(rt):
            name = stored.obj["metadata"]["name"]
            kubelet = self.kubelets.get(name, Kubelet())
            seen = settled.get(name)
            if (seen is not None and seen[0] is stored and seen[1] == kubelet
                    and seen[2] == cni_ready):
                continue
            self._node(rt, stored, cni_ready, kubelet)
            if self.store.lookup(rt, None, name) is stored:  # it changed nothing
                settled[name] = (stored, kubelet, cni_ready)

    def _node(
        self, rt: ResourceType, stored: StoredObject, cni_ready: bool, kubelet: Kubelet
    ) -> None:
        name = stored.obj["metadata"]["name"]
        spec = stored.obj.get("spec") or {}
        taints = [
            t for t in spec.get("taints") or []
            if t.get("key") not in (_NOT_READY_TAINT, _UNREACHABLE_TAINT, UNSCHEDULABLE_TAINT)
        ]
        if not kubelet.posting:
            taints.append({"key": _UNREACHABLE_TAINT, "effect": "NoSchedule"})
        elif not cni_ready:
            taints.append({"key": _NOT_READY_TAINT, "effect": "NoSchedule"})
        if spec.get("unschedulable"):
            taints.append({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"})
        if taints != (spec.get("taints") or []):
            self.store.patch(
                rt,
                None,
                name,
                "merge",
                {"spec": {"taints": taints or None}},
                manager="node-lifecycle-controller",
            )
            stored = self.store.lookup(rt, None, name) or stored
        old = stored.obj.get("status") or {}
        if not kubelet.posting:
            # the node lifecycle controller, once the kubelet stops posting its status
            ready = _condition("Ready", "Unknown", "NodeStatusUnknown",
                               "Kubelet stopped posting node status.", None)
        elif cni_ready:
            ready = _condition(
                "Ready", "True", "KubeletReady", "kubelet is posting ready status", None
            )
        else:
            ready = _condition(
                "Ready",
                "False",
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false "
                "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin "
                "not initialized",
                None,
            )
        status = {k: v for k, v in old.items() if k != "conditions"}
        if kubelet.version and (old.get("nodeInfo") or {}).get("kubeletVersion") != \
                kubelet.version:
            status["nodeInfo"] = {**(old.get("nodeInfo") or {}),
                                  "kubeletVersion": kubelet.version}
        status["conditions"] = [
            _condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                None,
            ),
            _condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                None,
            ),
            _condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                None,
            ),
            ready,
        ]
        self._write_status(rt, stored, status)


_WATCHED: dict[str, tuple[tuple[str, str], ...]] = {
    "workloads": (
        ("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"),
        ("apps", "DaemonSet"), ("policy", "PodDisruptionBudget"), ("", "Node"), ("", "Pod"),
    ),
    "nodes": (("", "Node"), ("helm.toolkit.fluxcd.io", "HelmRelease")),
}
"""(group, kind) of the objects each skippable controller reads (Controllers._watching)."""

_NOT_READY_TAINT = "node.kubernetes.io/not-ready"
_UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


_FAILURE_COUNTERS = ("failures", "installFailures", "upgradeFailures")


def _retries(spec: Mapping[str, Any], action: str) -> int:
    """``spec.<action>.remediation.retries``: 0 by default, negative retries forever."""
    return int(((spec.get(action) or {}).get("remediation") or {}).get("retries", 0))


def _stalled_at(status: Mapping[str, Any], gen: int) -> bool:
    return any(
        c.get("type") == "Stalled"
        and c.get("status") == "True"
        and c.get("observedGeneration", gen) == gen
        for c in status.get("conditions") or []
    )


def is_established_at(crd: Mapping[str, Any], generation: int | None) -> bool:
    for cond in (crd.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Established" and cond.get("status") == "True":
            return cond.get("observedGeneration", generation) == generation
    return False


def _chart_of(spec: Mapping[str, Any], name: str) -> tuple[str, str]:
    chart_spec = (spec.get("chart") or {}).get("spec") or {}
    chart = str(chart_spec.get("chart") or "")
    if chart:
        chart = chart.rstrip("/").rsplit("/", 1)[-1]
    else:
        chart = (spec.get("chartRef") or {}).get("name") or name
    return chart, str(chart_spec.get("version") or "*")


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = clone(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = clone(v)
    return out


def _set_dotted(values: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = values
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


def _workload_status(
    kind: str, meta: Mapping[str, Any], gen: int, want: int, ready: bool
) -> dict[str, Any]:
    n = want if ready else 0
    if kind == "DaemonSet":
        return {
            "observedGeneration": gen,
            "currentNumberScheduled": want,
            "desiredNumberScheduled": want,
            "numberMisscheduled": 0,
            "numberReady": n,
            "numberAvailable": n,
            "numberUnavailable": want - n,
            "updatedNumberScheduled": want,
        }
    if kind == "StatefulSet":
        return {
            "observedGeneration": gen,
            "replicas": want,
            "readyReplicas": n,
            "availableReplicas": n,
            "currentReplicas": want,
            "updatedReplicas": want,
        }
    rs = f"{meta['name']}-{_digest([meta.get('uid'), gen])[:10]}"
    if ready:
        conditions = [
            _condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                None,
            ),
            _condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs}" has successfully progressed.',
                None,
            ),
        ]
    else:
        conditions = [
            _condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                None,
            ),
            _condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs}" is progressing.',
                None,
            ),
        ]
    out: dict[str, Any] = {
        "observedGeneration": gen,
        "replicas": want,
        "updatedReplicas": want,
        "readyReplicas": n,
        "availableReplicas": n,
        "conditions": conditions,
    }
    if want - n:
        out["unavailableReplicas"] = want - n
    return out


def _source_ready(kind: str, spec: Mapping[str, Any], gen: int, stamp: str) -> dict[str, Any]:
    if kind == "GitRepository":
        ref = spec.get("ref") or {}
        branch = ref.get("branch") or "main"
        revision = f"{branch}@sha1:{_digest(spec, 'sha1')}"
        message = f"stored artifact for revision '{revision}'"
    else:
        revision = "sha256:" + _digest(spec)
        message = f"stored artifact: revision '{revision}'"
    return {
        "observedGeneration": gen,
        "artifact": {
            "revision": revision,
            "digest": "sha256:" + _digest([kind, spec]),
            "lastUpdateTime": stamp,
            "path": f"{kind.lower()}/{revision[:16]}.tar.gz",
            "url": f"http://source-controller.flux-system.svc/{kind.lower()}/{revision[:16]}",
        },
        "conditions": [
            _condition("Ready", "True", "Succeeded", message, gen),
            _condition("ArtifactInStorage", "True", "Succeeded", message, gen),
        ],
    }


# --------------------------------------------------------------------------- KubeVirt and CDI


def _available(deployment: Mapping[str, Any]) -> bool:
    status = deployment.get("status") or {}
    gen = (deployment.get("metadata") or {}).get("generation")
    if gen is not None and status.get("observedGeneration") not in (None, gen):
        return False
    return any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _image_version(deployment: Mapping[str, Any], image: str) -> tuple[str, str]:
    """(tag, registry) of the operator's container image (e.g. v1.8.4, quay.io/kubevirt)."""
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    for c in containers:
        ref = str(c.get("image") or "")
        repo, _, tag = ref.rpartition(":")
        if repo.rsplit("/", 1)[-1] == image and "/" not in tag:
            return tag, repo.rsplit("/", 1)[0]
    return "", ""


def _kubevirt_status(
    version: str, registry: str, gen: int, deployed: bool, fault: Failure | None, deployment_id: str
) -> dict[str, Any]:
    """virt-operator's KubeVirt status (pkg/virt-operator: phase Deploying -> Deployed)."""
    status: dict[str, Any] = {
        "phase": "Deployed" if deployed else "Deploying",
        "operatorVersion": version,
        "targetKubeVirtVersion": version,
        "targetKubeVirtRegistry": registry,
        "targetDeploymentID": deployment_id,
        "defaultArchitecture": "amd64",
    }
    if deployed:
        ready = "All components are ready."
        status.update(
            observedKubeVirtVersion=version,
            observedKubeVirtRegistry=registry,
            observedDeploymentID=deployment_id,
            observedGeneration=gen,
            conditions=[
                _condition("Available", "True", "AllComponentsReady", ready, None),
                _condition("Progressing", "False", "AllComponentsReady", ready, None),
                _condition("Degraded", "False", "AllComponentsReady", ready, None),
                _condition("Created", "True", "AllResourcesCreated",
                           "All resources were created.", None),
            ],
        )
        return status
    deploying = f"Deploying version {version} with registry {registry}"
    if fault is None:
        status["conditions"] = [
            _condition("Available", "False", "DeploymentInProgress", deploying, None),
            _condition("Progressing", "True", "DeploymentInProgress", deploying, None),
            _condition("Degraded", "False", "DeploymentInProgress", deploying, None),
        ]
    else:
        reason = fault.reason or "DeploymentFailed"
        status["conditions"] = [
            _condition("Available", "False", reason, fault.message, None),
            _condition("Progressing", "True", "DeploymentInProgress", deploying, None),
            _condition("Degraded", "True", reason, fault.message, None),
        ]
    return status


def _cdi_status(
    version: str, registry: str, gen: int, deployed: bool, fault: Failure | None, _id: str
) -> dict[str, Any]:
    """cdi-operator's CDI status (controller-lifecycle-operator-sdk conditions)."""
    status: dict[str, Any] = {
        "phase": "Deployed" if deployed else "Deploying",
        "operatorVersion": version,
        "targetVersion": version,
    }
    if deployed:
        status["observedVersion"] = version
        status["conditions"] = [
            {"type": "Available", "status": "True", "reason": "DeployCompleted",
             "message": "Deployment Completed"},
            {"type": "Progressing", "status": "False"},
            {"type": "Degraded", "status": "False"},
        ]
    elif fault is None:
        status["conditions"] = [
            {"type": "Available", "status": "False", "reason": "DeployStarted",
             "message": "Started Deployment"},
            {"type": "Progressing", "status": "True", "reason": "DeployStarted",
             "message": "Started Deployment"},
            {"type": "Degraded", "status": "False"},
        ]
    else:
        reason = fault.reason or "DeployFailed"
        status["conditions"] = [
            {"type": "Available", "status": "False", "reason": reason, "message": fault.message},
            {"type": "Progressing", "status": "True", "reason": "DeployStarted",
             "message": "Started Deployment"},
            {"type": "Degraded", "status": "True", "reason": reason, "message": fault.message},
        ]
    return status


@dataclass(frozen=True)
class _Operator:
    component: str
    api_version: str
    kind: str
    namespaced: bool
    deployment: str
    image: str
    probe_field: str
    status: Callable[[str, str, int, bool, Failure | None, str], dict[str, Any]]


_OPERATORS = (
    _Operator("kubevirt", "kubevirt.io/v1", "KubeVirt", True, "virt-operator", "virt-operator",
              "lastProbeTime", _kubevirt_status),
    _Operator("cdi", "cdi.kubevirt.io/v1beta1", "CDI", False, "cdi-operator", "cdi-operator",
              "lastHeartbeatTime", _cdi_status),
)
