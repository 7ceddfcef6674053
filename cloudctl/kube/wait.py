"""Waiting for what was applied: workloads rolled out, HelmReleases Ready in dependsOn order.

The decisions are pure functions of one object (``workload_status``, ``release_status``) or of a
set (``release_order``). The loops around them look, judge, and then sleep until what they look
at changes: a watch from the resourceVersion of the look (:mod:`cloudctl.kube.changes`), so a
change is seen at once and an idle wait sends no requests. A watch that fails (410 Expired, an
error, a dropped connection) falls back to looking again every ``interval`` seconds; a timeout
then says so. The clock and the fallback sleep are injectable.

HelmReleases are judged as helm-controller treats them. A failed Helm action (``InstallFailed``,
``UpgradeFailed``, ...) that helm-controller will retry — ``spec.install|upgrade.remediation.
retries`` negative (unlimited) or above ``status.installFailures|upgradeFailures``, or the
``RetryOnFailure`` strategy — is *retrying*, shown with its attempt count and last reason. The
wait fails (``PlatformError``, exit code 8, naming the release with its reason and message) when
helm-controller gave up (``Stalled=True``, e.g. ``RetriesExceeded``), when the failure has no
retries left, or when time runs out while a release is still retrying (its last reason). When
time runs out otherwise the ``Timeout`` (exit 7) names every release still pending and what it
waits on. ``DependencyNotReady``, ``ArtifactFailed`` and ``InitFailed`` are waits, not
failures: they clear when the dependency, source or values appear.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import PlatformError, Timeout
from ..util.conditions import condition
from .changes import Changes
from .client import Kube
from .objects import ObjectRef

__all__ = [
    "FAILURE_REASONS",
    "ReleaseStatus",
    "WorkloadStatus",
    "is_operator_cr",
    "operator_status",
    "release_order",
    "release_status",
    "wait_helmreleases",
    "wait_operators",
    "wait_ready",
    "wait_workloads",
    "workload_status",
]

HELMRELEASE_API = "helm.toolkit.fluxcd.io/v2"
FAILURE_REASONS = frozenset(
    {"InstallFailed", "UpgradeFailed", "TestFailed", "RollbackFailed", "UninstallFailed"}
)
WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet")

ReleaseState = Literal["missing", "waiting", "progressing", "retrying", "ready", "failed"]


def _current(obj: Mapping[str, Any], cond: Mapping[str, Any]) -> bool:
    """Does the condition describe the object's current generation?"""
    gen = (obj.get("metadata") or {}).get("generation")
    observed = cond.get("observedGeneration")
    return gen is None or observed is None or observed == gen


# --------------------------------------------------------------------------- HelmReleases


@dataclass(frozen=True)
class ReleaseStatus:
    namespace: str
    name: str
    state: ReleaseState
    reason: str = ""
    message: str = ""
    depends_on: tuple[str, ...] = ()  # "namespace/name"
    attempts: int = 0
    """Failed attempts helm-controller counted for the current action (retrying, failed)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def describe(self) -> str:
        what = f"{self.reason}: {self.message}" if self.reason else self.message or self.state
        if self.state == "retrying":
            return f"{self.key} (retrying after {self.attempts} failed attempt(s); last: {what})"
        return f"{self.key} ({what})"


def _retries_left(obj: Mapping[str, Any], reason: str) -> tuple[bool, int]:
    """(helm-controller will retry, failed attempts so far) for a failed Helm action."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    action = "upgrade" if reason.startswith(("Upgrade", "Rollback")) else "install"
    failures = status.get(f"{action}Failures")
    attempts = int(failures) if isinstance(failures, int) and failures > 0 else 1
    section = spec.get(action) or {}
    strategy = (section.get("strategy") or {}).get("name")
    if strategy == "RetryOnFailure":
        return True, attempts
    retries = (section.get("remediation") or {}).get("retries", 0)
    retries = int(retries) if isinstance(retries, int) else 0
    return retries < 0 or attempts <= retries, attempts


def _depends_on(obj: Mapping[str, Any], namespace: str) -> tuple[str, ...]:
    out = []
    for dep in (obj.get("spec") or {}).get("dependsOn") or []:
        if isinstance(dep, Mapping) and dep.get("name"):
            out.append(f"{dep.get('namespace') or namespace}/{dep['name']}")
    return tuple(out)


def release_status(obj: Mapping[str, Any]) -> ReleaseStatus:
    """Where one HelmRelease stands, from its conditions, spec and failure counters (see the
    module doc: retrying until helm-controller gives up)."""
    meta = obj.get("metadata") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    deps = _depends_on(obj, ns)
    ready = condition(obj, "Ready")
    stalled = condition(obj, "Stalled")
    if ready is None:
        return ReleaseStatus(ns, name, "progressing", "", "not reconciled yet", deps)
    reason, message = str(ready.get("reason") or ""), str(ready.get("message") or "")
    if not _current(obj, ready):
        return ReleaseStatus(
            ns, name, "progressing", reason, "new generation not reconciled yet", deps
        )
    if ready.get("status") == "True":
        return ReleaseStatus(ns, name, "ready", reason, message, deps)
    if stalled is not None and stalled.get("status") == "True" and _current(obj, stalled):
        why = str(stalled.get("message") or "")
        _, attempts = _retries_left(obj, reason)
        return ReleaseStatus(ns, name, "failed", reason,
                             f"{message} ({why})" if why and why not in message else message,
                             deps, attempts)
    if ready.get("status") == "False" and reason in FAILURE_REASONS:
        retry, attempts = _retries_left(obj, reason)
        state: ReleaseState = "retrying" if retry else "failed"
        return ReleaseStatus(ns, name, state, reason, message, deps, attempts)
    if reason == "DependencyNotReady":
        return ReleaseStatus(ns, name, "waiting", reason, message, deps)
    return ReleaseStatus(ns, name, "progressing", reason, message, deps)


def release_order(objs: Iterable[Mapping[str, Any]]) -> list[str]:
    """``namespace/name`` of every release, dependencies first (ties by name; a cycle or an
    edge to a release outside the set does not stop the order)."""
    deps: dict[str, tuple[str, ...]] = {}
    for obj in objs:
        meta = obj.get("metadata") or {}
        ns = str(meta.get("namespace") or "")
        deps[f"{ns}/{meta.get('name')}"] = _depends_on(obj, ns)
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(key: str) -> None:
        if state.get(key):
            return
        state[key] = 1
        for dep in sorted(deps.get(key, ())):
            if dep in deps:
                visit(dep)
        state[key] = 2
        order.append(key)

    for key in sorted(deps):
        visit(key)
    return order


def _timeout_message(
    timeout: float, pending: Sequence[ReleaseStatus], by_key: Mapping[str, ReleaseStatus]
) -> str:
    lines = []
    for st in pending:
        line = f"  - {st.describe()}"
        blockers = [d for d in st.depends_on if d not in by_key or by_key[d].state != "ready"]
        if blockers:
            parts = [by_key[d].describe() if d in by_key else f"{d} (not found)" for d in blockers]
            line += f"; waits for {', '.join(parts)}"
        lines.append(line)
    return (
        f"timed out after {timeout:g}s waiting for {len(pending)} HelmRelease(s) to be "
        "Ready:\n" + "\n".join(lines)
    )


def wait_helmreleases(
    kube: Kube,
    *,
    namespace: str = "flux-system",
    names: Iterable[str] | None = None,
    timeout: float = 900.0,
    interval: float = 1.0,
    api_version: str = HELMRELEASE_API,
    on_status: Callable[[ReleaseStatus], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ReleaseStatus]:
    """Wait until the HelmReleases of ``namespace`` (or just ``names``) are all Ready.

    ``on_status`` is called, in dependsOn order, for each release whose state, reason or
    message changed since the last poll. Returns the final statuses in dependsOn order.
    """
    wanted = None if names is None else set(names)
    deadline = clock() + timeout
    last: dict[str, ReleaseStatus] = {}
    failing: dict[str, ReleaseStatus] = {}
    """The last failed attempt seen per release: helm-controller shows a retry attempt as
    Progressing, and a release retrying when time runs out is still a failing one."""
    changes = Changes(kube, interval, sleep)
    while True:
        listed = changes.list(api_version, "HelmRelease", namespace=namespace)
        everything = {st.key: st for st in (release_status(o) for o in listed)}
        objs = [
            o for o in listed if wanted is None or (o.get("metadata") or {}).get("name") in wanted
        ]
        by_key = {key: everything[key] for key in (f"{_ns(o)}/{_name(o)}" for o in objs)}
        for name in sorted(wanted or ()):
            by_key.setdefault(
                f"{namespace}/{name}", ReleaseStatus(namespace, name, "missing", "", "not found")
            )
        order = [k for k in release_order(objs) if k in by_key]
        order += sorted(k for k in by_key if k not in order)
        current = [by_key[k] for k in order]
        for st in current:
            if on_status is not None and last.get(st.key) != st:
                on_status(st)
            last[st.key] = st
            if st.state == "retrying":
                failing[st.key] = st
            elif st.state != "progressing":
                failing.pop(st.key, None)
        failed = [st for st in current if st.state == "failed"]
        if failed:
            st = failed[0]
            tries = f" after {st.attempts} attempt(s)" if st.attempts > 1 else ""
            raise PlatformError(
                f"HelmRelease {st.key} failed{tries}: {st.reason}: {st.message}"
                + (f" (also failed: {', '.join(f.key for f in failed[1:])})" if failed[1:] else "")
            )
        pending = [st for st in current if st.state != "ready"]
        if not pending and (current or wanted is None):
            return current
        if clock() >= deadline:
            retrying = [st if st.state == "retrying" else failing[st.key] for st in pending
                        if st.state == "retrying"
                        or (st.state == "progressing" and st.key in failing)]
            if retrying:
                if on_status is not None:  # record them as what they are: still failing
                    for failed_st in retrying:
                        if last.get(failed_st.key) != failed_st:
                            on_status(failed_st)
                st = retrying[0]
                raise PlatformError(
                    f"HelmRelease {st.key} still failing after {timeout:g}s "
                    f"({st.attempts} failed attempt(s), helm-controller retries): "
                    f"{st.reason}: {st.message}"
                    + (f" (also retrying: {', '.join(r.key for r in retrying[1:])})"
                       if retrying[1:] else ""))
            raise Timeout(_timeout_message(timeout, pending, {**everything, **by_key})
                          + changes.note())
        changes.wait(deadline - clock())


def _ns(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class WorkloadStatus:
    ref: ObjectRef
    ready: bool
    detail: str


def workload_status(obj: Mapping[str, Any]) -> WorkloadStatus:
    """Rolled out? The checks of ``kubectl rollout status`` for Deployment/DaemonSet/StatefulSet."""
    ref = ObjectRef.of(obj)
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    st = obj.get("status") or {}
    gen = meta.get("generation")
    if gen is not None and st.get("observedGeneration", 0) < gen:
        return WorkloadStatus(ref, False, "waiting for the controller to observe the update")
    if ref.kind == "Deployment":
        want = int(spec.get("replicas", 1))
        updated, avail = int(st.get("updatedReplicas", 0)), int(st.get("availableReplicas", 0))
        total = int(st.get("replicas", 0))
        available = condition(obj, "Available")
        if updated < want:
            return WorkloadStatus(ref, False, f"{updated} of {want} replicas updated")
        if total > updated:
            return WorkloadStatus(ref, False, f"{total - updated} old replicas pending termination")
        if avail < updated:
            return WorkloadStatus(ref, False, f"{avail} of {updated} updated replicas available")
        if available is not None and available.get("status") != "True":
            return WorkloadStatus(
                ref, False, f"{available.get('reason')}: {available.get('message')}"
            )
        return WorkloadStatus(ref, True, f"{avail} replicas available")
    if ref.kind == "DaemonSet":
        want = int(st.get("desiredNumberScheduled", 0))
        updated, avail = int(st.get("updatedNumberScheduled", 0)), int(st.get("numberAvailable", 0))
        if updated < want:
            return WorkloadStatus(ref, False, f"{updated} of {want} pods updated")
        if avail < want:
            return WorkloadStatus(ref, False, f"{avail} of {want} pods available")
        return WorkloadStatus(ref, True, f"{avail} of {want} pods available")
    if ref.kind == "StatefulSet":
        want = int(spec.get("replicas", 1))
        ready, updated = int(st.get("readyReplicas", 0)), int(st.get("updatedReplicas", 0))
        if ready < want:
            return WorkloadStatus(ref, False, f"{ready} of {want} replicas ready")
        if updated < want:
            return WorkloadStatus(ref, False, f"{updated} of {want} replicas updated")
        return WorkloadStatus(ref, True, f"{ready} replicas ready")
    return WorkloadStatus(ref, True, "not a workload")


Judge = Callable[[Kube, ObjectRef], WorkloadStatus]


def poll_objects(
    kube: Kube,
    refs: Iterable[ObjectRef],
    judge: Judge,
    on_timeout: Callable[[list[WorkloadStatus]], Exception],
    *,
    timeout: float,
    interval: float,
    on_status: Callable[[WorkloadStatus], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[WorkloadStatus]:
    """Poll each object's status with ``judge`` until all are ready; ``on_status`` sees every
    change; when time runs out, raise ``on_timeout(still pending)``. ``judge`` may raise to
    end the wait early (a failure that cannot heal)."""
    pending = sorted(set(refs))
    deadline = clock() + timeout
    last: dict[ObjectRef, WorkloadStatus] = {}
    done: list[WorkloadStatus] = []
    changes = Changes(kube, interval, sleep)
    while True:
        if pending:
            changes.look(pending[0])
        still: list[WorkloadStatus] = []
        for ref in pending:
            st = judge(kube, ref)
            if on_status is not None and last.get(ref) != st:
                on_status(st)
            last[ref] = st
            (done if st.ready else still).append(st)
        pending = [st.ref for st in still]
        if not pending:
            return done
        if clock() >= deadline:
            raise _noted(on_timeout(still), changes)
        changes.wait(deadline - clock())


def _noted(exc: Exception, changes: Changes) -> Exception:
    """The timeout error, telling when the wait had to poll because watching failed."""
    note = changes.note()
    if note and type(exc) in (Timeout, PlatformError):
        return type(exc)(str(exc) + note)
    return exc


def _pending_lines(still: list[WorkloadStatus]) -> str:
    return "\n".join(f"  - {st.ref}: {st.detail}" for st in still)


def wait_workloads(
    kube: Kube,
    refs: Iterable[ObjectRef],
    *,
    timeout: float = 300.0,
    interval: float = 1.0,
    on_status: Callable[[WorkloadStatus], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[WorkloadStatus]:
    """Wait until every Deployment/DaemonSet/StatefulSet in ``refs`` is rolled out (other
    kinds are ignored). A workload that does not exist yet is waited for."""
    def judge(kube: Kube, ref: ObjectRef) -> WorkloadStatus:
        obj = kube.get(ref)
        return WorkloadStatus(ref, False, "not found") if obj is None else workload_status(obj)

    def expired(still: list[WorkloadStatus]) -> Exception:
        return Timeout(f"timed out after {timeout:g}s waiting for {len(still)} workload(s) to "
                       f"be ready:\n{_pending_lines(still)}")

    return poll_objects(kube, [r for r in refs if r.kind in WORKLOAD_KINDS], judge, expired,
                        timeout=timeout, interval=interval, on_status=on_status, clock=clock,
                        sleep=sleep)


# --------------------------------------------------------------------------- Ready conditions


def ready_status(obj: Mapping[str, Any]) -> WorkloadStatus:
    """An object with a ``Ready`` condition (Flux Kustomization, GitRepository, ...)."""
    ref = ObjectRef.of(obj)
    ready = condition(obj, "Ready")
    if ready is None:
        return WorkloadStatus(ref, False, "not reconciled yet")
    what = f"{ready.get('reason')}: {ready.get('message')}"
    if not _current(obj, ready):
        return WorkloadStatus(ref, False, "new generation not reconciled yet")
    return WorkloadStatus(ref, ready.get("status") == "True", what)


def wait_ready(
    kube: Kube,
    refs: Iterable[ObjectRef],
    *,
    timeout: float = 300.0,
    interval: float = 1.0,
    on_status: Callable[[WorkloadStatus], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[WorkloadStatus]:
    """Wait for ``Ready=True`` on each object; ``Stalled=True`` fails with its Ready reason
    and message (``PlatformError``), running out of time names what is still not Ready."""
    def judge(kube: Kube, ref: ObjectRef) -> WorkloadStatus:
        obj = kube.get(ref)
        if obj is None:
            return WorkloadStatus(ref, False, "not found")
        st = ready_status(obj)
        stalled = condition(obj, "Stalled")
        if stalled is not None and stalled.get("status") == "True":
            raise PlatformError(f"{ref} failed: {st.detail}")
        return st

    def expired(still: list[WorkloadStatus]) -> Exception:
        return Timeout(f"timed out after {timeout:g}s waiting for {len(still)} object(s) to be "
                       f"Ready:\n{_pending_lines(still)}")

    return poll_objects(kube, refs, judge, expired, timeout=timeout, interval=interval,
                        on_status=on_status, clock=clock, sleep=sleep)


# --------------------------------------------------------------------------- operator CRs

OPERATOR_KINDS: dict[tuple[str, str], str] = {
    ("kubevirt.io", "KubeVirt"): "Deployed",
    ("cdi.kubevirt.io", "CDI"): "Deployed",
}
"""Custom resources whose operator reports the component deployed: (group, kind) -> the
``status.phase`` it reaches (KubeVirt's and CDI's operators both use ``Deployed``)."""


def is_operator_cr(obj: Mapping[str, Any]) -> bool:
    group = str(obj.get("apiVersion", "")).split("/")[0]
    return (group, str(obj.get("kind"))) in OPERATOR_KINDS


def operator_status(obj: Mapping[str, Any]) -> WorkloadStatus:
    """Deployed when the operator says so: ``status.phase`` is the deployed phase and
    ``Available=True``; otherwise the phase and every condition that is not as it should be."""
    ref = ObjectRef.of(obj)
    want = OPERATOR_KINDS.get((ref.group, ref.kind), "Deployed")
    status = obj.get("status") or {}
    phase = str(status.get("phase") or "")
    available = condition(obj, "Available")
    if phase == want and available is not None and available.get("status") == "True":
        return WorkloadStatus(ref, True, f"phase {phase}, Available")
    healthy = {"Available": "True", "Progressing": "False", "Degraded": "False"}
    bad = [
        f"{c.get('type')}={c.get('status')}"
        + (f" ({c.get('reason')}: {c.get('message')})" if c.get("reason") or c.get("message")
           else "")
        for c in status.get("conditions") or []
        if healthy.get(str(c.get("type"))) not in (None, c.get("status"))
    ]
    detail = f"phase {phase or 'not reported yet'}" + (f"; {'; '.join(bad)}" if bad else "")
    return WorkloadStatus(ref, False, detail)


def wait_operators(
    kube: Kube,
    refs: Iterable[ObjectRef],
    *,
    timeout: float = 300.0,
    interval: float = 1.0,
    on_status: Callable[[WorkloadStatus], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[WorkloadStatus]:
    """Wait until each operator CR (KubeVirt, CDI) reports its component deployed. Running out
    of time is a platform failure (``PlatformError``, exit 8) naming each CR with its phase and
    conditions: the component was installed but its operator did not bring it up."""
    def judge(kube: Kube, ref: ObjectRef) -> WorkloadStatus:
        if kube.resource(ref.api_version, ref.kind) is None:
            kube.refresh_discovery()  # asked again next time: the CRD may have come since
            return WorkloadStatus(ref, False, "kind not served yet (its operator's CRD is not "
                                  "installed)")
        obj = kube.get(ref)
        return WorkloadStatus(ref, False, "not created yet") if obj is None \
            else operator_status(obj)

    def expired(still: list[WorkloadStatus]) -> Exception:
        return PlatformError(f"{', '.join(st.ref.kind for st in still)} not deployed after "
                             f"{timeout:g}s:\n{_pending_lines(still)}")

    return poll_objects(kube, refs, judge, expired, timeout=timeout, interval=interval,
                        on_status=on_status, clock=clock, sleep=sleep)
