"""Tenant clusters as the management cluster's API shows them.

Public surface::

    tenant_status(cluster, control_plane, tcp, deployments, want) -> TenantStatus   # pure
    read_tenant(kube, tenant_name, want) -> TenantStatus
    list_tenants(kube) -> list[TenantStatus]            # every cloudctl tenant on the cluster
    wait_tenants(kube, wants, timeout=..., ...)         # until each is Ready (Timeout: names why)
    tenant_kubeconfig(kube, tenant_name) -> bytes       # from the <name>-kubeconfig Secret

A tenant is Ready when its ``Cluster`` is ``Provisioned`` with ``Available=True``, its
``KamajiControlPlane`` is ready with every replica ready, its ``TenantControlPlane`` reports
``Ready``, and every worker pool (``MachineDeployment``) has as many ready machines as the
inventory asks for and no more (a scale-down is done), for the current generation.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import RemoteError, Timeout
from ..inventory.models import tenant_namespace
from ..render.tenants import CAPI_VERSION, KAMAJI_VERSION, KCP_VERSION, TENANT_LABEL
from ..util.conditions import condition
from .client import Kube
from .objects import ObjectRef
from .wait import WorkloadStatus, poll_objects

__all__ = [
    "PoolStatus",
    "TenantStatus",
    "TenantWant",
    "list_tenants",
    "read_tenant",
    "tenant_kubeconfig",
    "tenant_status",
    "wait_tenants",
]

CAPI, KCP, TCP = CAPI_VERSION, KCP_VERSION, KAMAJI_VERSION

@dataclass(frozen=True)
class TenantWant:
    """What the inventory asks of one tenant: pool name -> replicas, control-plane replicas."""

    name: str
    pools: dict[str, int]
    control_plane: int


@dataclass(frozen=True)
class PoolStatus:
    name: str
    desired: int
    replicas: int
    ready: int


@dataclass(frozen=True)
class TenantStatus:
    name: str
    namespace: str
    exists: bool
    phase: str
    control_plane_ready: bool
    control_plane: str
    """ready/desired control-plane replicas (``2/2``)."""
    version: str
    endpoint: str
    pools: tuple[PoolStatus, ...] = field(default_factory=tuple)
    ready: bool = False
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "namespace": self.namespace, "exists": self.exists,
            "phase": self.phase, "ready": self.ready, "detail": self.detail,
            "controlPlane": {"ready": self.control_plane_ready,
                             "replicas": self.control_plane},
            "version": self.version, "endpoint": self.endpoint,
            "pools": [{"name": p.name, "desired": p.desired, "replicas": p.replicas,
                       "ready": p.ready} for p in self.pools],
        }


def _pool_name(tenant: str, md: Mapping[str, Any]) -> str:
    return str(md["metadata"]["name"]).removeprefix(f"{tenant}-")


def tenant_status(
    name: str,
    cluster: Mapping[str, Any] | None,
    control_plane: Mapping[str, Any] | None,
    tcp: Mapping[str, Any] | None,
    deployments: Iterable[Mapping[str, Any]],
    want: TenantWant | None = None,
) -> TenantStatus:
    """Pure: the status of one tenant from its objects (``want`` None: as deployed)."""
    ns = tenant_namespace(name)
    if cluster is None:
        return TenantStatus(name, ns, False, "Absent", False, "0/0", "", "",
                            detail=f"no Cluster {ns}/{name}")
    cst = cluster.get("status") or {}
    phase = str(cst.get("phase") or "Pending")
    kst = (control_plane or {}).get("status") or {}
    kspec = (control_plane or {}).get("spec") or {}
    cp_desired = int(kspec.get("replicas") or 0)
    cp_ready_n = int(kst.get("readyReplicas") or 0)
    cp_ready = bool(kst.get("ready")) and cp_ready_n >= cp_desired
    tst = (tcp or {}).get("status") or {}
    tcp_state = str(((tst.get("kubernetesResources") or {}).get("version") or {})
                    .get("status") or "")
    endpoint = str(tst.get("controlPlaneEndpoint") or "")
    pools: list[PoolStatus] = []
    waiting: list[str] = []
    seen: set[str] = set()
    for md in deployments:
        meta, spec, st = md["metadata"], md.get("spec") or {}, md.get("status") or {}
        pool = _pool_name(name, md)
        seen.add(pool)
        desired = int(spec.get("replicas") or 0)
        if want is not None and pool in want.pools:
            desired = want.pools[pool]
        elif want is not None:
            waiting.append(f"pool {pool} is not in the inventory (being removed)")
        replicas, ready = int(st.get("replicas") or 0), int(st.get("readyReplicas") or 0)
        pools.append(PoolStatus(pool, desired, replicas, ready))
        if int(st.get("observedGeneration") or 0) < int(meta.get("generation") or 1):
            waiting.append(f"pool {pool}: update not observed yet")
        elif int(spec.get("replicas") or 0) != desired:
            waiting.append(f"pool {pool}: {spec.get('replicas')} replicas requested, "
                           f"{desired} in the inventory")
        elif ready < desired or replicas != desired:
            waiting.append(f"pool {pool}: {ready}/{desired} machines ready"
                           + (f" ({replicas} exist)" if replicas != desired else ""))
    for pool in sorted(set(want.pools) - seen if want else ()):
        waiting.append(f"pool {pool}: no MachineDeployment yet")
        pools.append(PoolStatus(pool, want.pools[pool] if want else 0, 0, 0))
    if want is not None and cp_desired != want.control_plane and control_plane is not None:
        waiting.append(f"control plane: {cp_desired} replicas requested, "
                       f"{want.control_plane} in the inventory")
    available = condition(cluster, "Available")
    if control_plane is None:
        waiting.insert(0, "no KamajiControlPlane yet")
    elif not cp_ready:
        waiting.insert(0, f"control plane {cp_ready_n}/{cp_desired} ready")
    if tcp_state != "Ready":
        waiting.insert(0, f"TenantControlPlane {tcp_state or 'not created yet'}")
    if phase != "Provisioned":
        waiting.insert(0, f"Cluster phase {phase}")
    elif available is None or available.get("status") != "True":
        waiting.append("Cluster not Available")
    ready = not waiting
    return TenantStatus(
        name, ns, True, phase, cp_ready, f"{cp_ready_n}/{cp_desired}",
        str(kst.get("version") or kspec.get("version") or ""), endpoint,
        tuple(sorted(pools, key=lambda p: p.name)), ready,
        "Ready" if ready else "; ".join(waiting),
    )


def _served(kube: Kube, api_version: str, kind: str) -> bool:
    return kube.resource(api_version, kind) is not None


def read_tenant(kube: Kube, name: str, want: TenantWant | None = None) -> TenantStatus:
    ns = tenant_namespace(name)
    if not _served(kube, CAPI, "Cluster"):
        return TenantStatus(name, ns, False, "Absent", False, "0/0", "", "",
                            detail="the API does not serve Cluster API kinds yet "
                                   "(providers not installed)")
    cluster = kube.get(ObjectRef(CAPI, "Cluster", name, ns))
    if cluster is None:
        return tenant_status(name, None, None, None, [], want)
    cp_ref = (cluster.get("spec") or {}).get("controlPlaneRef") or {}
    cp_name = str(cp_ref.get("name") or name)
    kcp = kube.get(ObjectRef(KCP, "KamajiControlPlane", cp_name, ns)) \
        if _served(kube, KCP, "KamajiControlPlane") else None
    tcp = kube.get(ObjectRef(TCP, "TenantControlPlane", cp_name, ns)) \
        if _served(kube, TCP, "TenantControlPlane") else None
    mds = [md for md in kube.list(CAPI, "MachineDeployment", namespace=ns)
           if (md.get("spec") or {}).get("clusterName") == name]
    return tenant_status(name, cluster, kcp, tcp, mds, want)


def list_tenants(kube: Kube) -> list[TenantStatus]:
    """Every tenant cloudctl made (Clusters labelled ``cloudctl.io/tenant``)."""
    if not _served(kube, CAPI, "Cluster"):
        return []
    clusters = kube.list(CAPI, "Cluster", label_selector=TENANT_LABEL)
    names = sorted({str(c["metadata"]["labels"][TENANT_LABEL]) for c in clusters})
    return [read_tenant(kube, n) for n in names]


def wait_tenants(
    kube: Kube,
    wants: Iterable[TenantWant],
    *,
    timeout: float,
    interval: float = 1.0,
    on_status: Callable[[TenantStatus], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[TenantStatus]:
    """Until every tenant is Ready as the inventory asks; on time out, raise ``Timeout``
    naming each tenant and what it still waits for."""
    by_ref = {ObjectRef(CAPI, "Cluster", w.name, tenant_namespace(w.name)): w for w in wants}
    latest: dict[ObjectRef, TenantStatus] = {}

    def judge(kube: Kube, ref: ObjectRef) -> WorkloadStatus:
        if not _served(kube, CAPI, "Cluster"):
            kube.refresh_discovery()
        st = read_tenant(kube, ref.name, by_ref[ref])
        if on_status is not None and latest.get(ref) != st:
            on_status(st)
        latest[ref] = st
        return WorkloadStatus(ref, st.ready, st.detail)

    def expired(still: list[WorkloadStatus]) -> Exception:
        lines = "\n".join(f"  - tenant {s.ref.name}: {s.detail}" for s in still)
        return Timeout(f"timed out after {timeout:g}s waiting for {len(still)} tenant(s) to be "
                       f"Ready:\n{lines}")

    poll_objects(kube, list(by_ref), judge, expired, timeout=timeout, interval=interval,
                 clock=clock, sleep=sleep)
    return [latest[r] for r in by_ref]


def tenant_kubeconfig(kube: Kube, name: str) -> bytes:
    """The tenant's admin kubeconfig from ``<name>-kubeconfig`` (key ``value``), as Cluster
    API's control-plane provider writes it."""
    ns = tenant_namespace(name)
    secret = kube.get(ObjectRef("v1", "Secret", f"{name}-kubeconfig", ns))
    if secret is None:
        raise RemoteError(f"tenant {name}: no Secret {ns}/{name}-kubeconfig yet (its control "
                          "plane is not ready; see `cloudctl tenant status`)")
    value = (secret.get("data") or {}).get("value")
    if not value:
        raise RemoteError(f"tenant {name}: Secret {ns}/{name}-kubeconfig has no key 'value'")
    return base64.b64decode(value)
