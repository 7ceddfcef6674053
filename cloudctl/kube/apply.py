"""Server-side apply of a manifest set.

Order: Namespaces, then CustomResourceDefinitions (and wait until each is ``Established``, then
refresh discovery so their kinds resolve), then the rest by kind (RBAC, ServiceAccounts,
ConfigMaps, Services, workloads, webhooks, custom resources: Flux sources before HelmReleases).
Each object is sent as ``application/apply-patch+yaml`` with fieldManager ``cloudctl``,
``force=true`` and strict field validation, so applying the same set twice changes nothing and
an object the API server rejects fails with an error naming it and the offending field.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import Timeout
from ..util.conditions import condition
from .client import Kube
from .objects import ObjectRef, order_for_apply

__all__ = ["Applied", "apply_manifests", "crd_established", "wait_crds_established"]

FIELD_MANAGER = "cloudctl"


@dataclass(frozen=True)
class Applied:
    ref: ObjectRef
    action: Literal["created", "configured", "unchanged"]
    resource_version: str


def crd_established(crd: Mapping[str, Any]) -> bool:
    established = condition(crd, "Established")
    return established is not None and established.get("status") == "True"


def wait_crds_established(
    kube: Kube,
    names: Iterable[str],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll each CustomResourceDefinition until its ``Established`` condition is True.

    The first polls come quickly (an API server usually establishes a new CRD within tens of
    milliseconds), then back off to ``interval``."""
    pending = sorted(set(names))
    deadline = clock() + timeout
    pause = min(0.02, interval)
    while True:
        still = []
        for name in pending:
            crd = kube.get(ObjectRef("apiextensions.k8s.io/v1", "CustomResourceDefinition", name))
            if crd is None or not crd_established(crd):
                still.append(name)
        pending = still
        if not pending:
            return
        if clock() >= deadline:
            raise Timeout(
                f"timed out after {timeout:g}s waiting for CustomResourceDefinitions to be "
                f"Established: {', '.join(pending)}"
            )
        sleep(pause)
        pause = min(pause * 2, interval)


def _prepared(obj: Mapping[str, Any], kube: Kube, default_namespace: str) -> dict[str, Any]:
    """The object as sent: namespace defaulted for namespaced kinds, dropped for the others."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    ref = ObjectRef.of(out)
    res = kube.resource_for(ref)
    if res.namespaced:
        meta.setdefault("namespace", default_namespace)
    else:
        meta.pop("namespace", None)
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
        meta.pop(key, None)
    out["metadata"] = meta
    out.pop("status", None)
    return out


def apply_manifests(
    kube: Kube,
    objs: Iterable[Mapping[str, Any]],
    *,
    field_manager: str = FIELD_MANAGER,
    default_namespace: str = "default",
    crd_timeout: float = 60.0,
    on_applied: Callable[[Applied], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Applied]:
    """Apply every object in a sensible order; returns what happened to each, in apply order.

    ``unchanged`` means the API server kept the object's ``resourceVersion`` (a no-op apply);
    it is known because the object is read once before its first apply in this call.
    """
    ordered = order_for_apply(objs)
    crds = [o for o in ordered if o.get("kind") == "CustomResourceDefinition"]
    results: list[Applied] = []

    def apply_one(obj: Mapping[str, Any]) -> None:
        body = _prepared(obj, kube, default_namespace)
        ref = ObjectRef.of(body)
        before = kube.get(ref)
        status, out = kube.server_side_apply(body, field_manager=field_manager)
        rv = str((out.get("metadata") or {}).get("resourceVersion", ""))
        action: Literal["created", "configured", "unchanged"]
        if status == 201 or before is None:
            action = "created"
        elif (before.get("metadata") or {}).get("resourceVersion") == rv:
            action = "unchanged"
        else:
            action = "configured"
        applied = Applied(ref, action, rv)
        results.append(applied)
        if on_applied is not None:
            on_applied(applied)

    for obj in ordered:
        if obj.get("kind") == "Namespace":
            apply_one(obj)
    for obj in crds:
        apply_one(obj)
    if crds:
        wait_crds_established(
            kube,
            [str((c.get("metadata") or {}).get("name")) for c in crds],
            timeout=crd_timeout,
            clock=clock,
            sleep=sleep,
        )
        kube.refresh_discovery()
    for obj in ordered:
        if obj.get("kind") not in ("Namespace", "CustomResourceDefinition"):
            apply_one(obj)
    return results
