"""The gates a rolling upgrade passes before and after each node.

- **etcd**: every member healthy (its node answers ``EtcdStatus`` with no errors) and, with the
  node about to go down, quorum kept (healthy members left >= members // 2 + 1). Asked over the
  Talos API of each control plane (:func:`etcd_health`); judged by the pure
  :func:`etcd_problems`.
- **storage**: no LINSTOR resource may lose its last UpToDate replica. The check is pluggable
  (:class:`StorageCheck`); :class:`LinstorCheck` reads the LINSTOR controller's REST view of
  resources (``GET /v1/view/resources``) through the Kubernetes API server's service proxy,
  so it needs nothing but the kubeconfig; :func:`last_replica_problems` is the pure rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import CloudctlError
from ..inventory.models import Node
from ..kube.client import Kube
from ..talos.client import Credentials, Endpoint, TalosClient

UP_TO_DATE = "UpToDate"
LINSTOR_SERVICE = "linstor-controller"
LINSTOR_PORT = 3370


# --------------------------------------------------------------------------- etcd


@dataclass(frozen=True)
class MemberHealth:
    node: str
    member_id: int | None
    errors: tuple[str, ...]
    """etcd's errors for the member, or why its node did not answer."""

    @property
    def healthy(self) -> bool:
        return self.member_id is not None and not self.errors


@dataclass(frozen=True)
class EtcdHealth:
    members: dict[int, str]
    """member id -> member hostname, as the cluster lists them."""
    status: dict[str, MemberHealth] = field(default_factory=dict)
    """control-plane node -> its member's health."""
    error: str = ""
    """Why the member list could not be read at all."""


def etcd_problems(health: EtcdHealth, *, leaving: str | None = None) -> list[str]:
    """What keeps the etcd gate shut: unhealthy members, members no control plane answers
    for, and (with ``leaving`` about to go down) a quorum that would be lost."""
    if health.error:
        return [f"etcd member list unreadable: {health.error}"]
    problems = []
    by_id = {h.member_id: h for h in health.status.values() if h.member_id is not None}
    for mid, host in sorted(health.members.items()):
        h = by_id.get(mid)
        if h is None:
            problems.append(f"etcd member {host} ({mid:x}) has no control plane answering for it")
        elif h.errors:
            problems.append(f"etcd member {host} ({mid:x}) on node {h.node} is unhealthy: "
                            + "; ".join(h.errors))
    for h in health.status.values():
        if h.member_id is None and h.errors:
            problems.append(f"control plane {h.node}: {'; '.join(h.errors)}")
    total = len(health.members)
    quorum = total // 2 + 1
    healthy = [h for h in by_id.values() if h.healthy and h.member_id in health.members]
    if leaving is not None:
        after = [h for h in healthy if h.node != leaving]
        if total and len(after) < quorum:
            problems.append(f"taking {leaving} down would leave {len(after)} healthy etcd "
                            f"member(s) of {total}: quorum needs {quorum}")
    return problems


async def etcd_health(
    controlplanes: Sequence[Node],
    dial: Callable[[Node], Endpoint],
    creds: Credentials,
    *,
    timeout: float = 5.0,
) -> EtcdHealth:
    """Member list (from the first control plane that answers) and each control plane's own
    ``EtcdStatus``."""

    async def status(node: Node) -> MemberHealth:
        try:
            async with TalosClient(dial(node), creds, timeout=timeout) as c:
                st = await c.etcd_status()
        except CloudctlError as exc:
            return MemberHealth(node.name, None, (str(exc),))
        return MemberHealth(node.name, st.member_id, st.errors)

    results = await asyncio.gather(*(status(n) for n in controlplanes))
    members: dict[int, str] | None = None
    last = "no control plane answered"
    for node in controlplanes:
        try:
            async with TalosClient(dial(node), creds, timeout=timeout) as c:
                members = {m.id: m.hostname for m in await c.etcd_members()}
            break
        except CloudctlError as exc:
            last = str(exc)
    if members is None:
        return EtcdHealth({}, {r.node: r for r in results}, error=last)
    return EtcdHealth(members, {r.node: r for r in results})


# --------------------------------------------------------------------------- storage


class StorageCheck(Protocol):
    """A storage gate: what would be lost if ``node`` went down now (empty: safe)."""

    name: str

    def problems(self, node: str) -> list[str]: ...


@dataclass(frozen=True)
class Replica:
    resource: str
    node: str
    disk_states: tuple[str, ...]
    diskless: bool = False

    @property
    def up_to_date(self) -> bool:
        return (not self.diskless and bool(self.disk_states)
                and all(s == UP_TO_DATE for s in self.disk_states))


def replicas_from_view(view: Iterable[Mapping[str, Any]]) -> list[Replica]:
    """LINSTOR's ``/v1/view/resources`` items (name, node_name, flags, volumes[].state
    .disk_state) as replicas."""
    out = []
    for item in view:
        flags = [str(f).upper() for f in item.get("flags") or []]
        states = tuple(str((v.get("state") or {}).get("disk_state") or "Unknown")
                       for v in item.get("volumes") or [])
        diskless = "DISKLESS" in flags or "TIE_BREAKER" in flags or \
            (all(s == "Diskless" for s in states) and bool(states))
        out.append(Replica(str(item.get("name")), str(item.get("node_name")), states, diskless))
    return out


def last_replica_problems(replicas: Iterable[Replica], node: str) -> list[str]:
    """Resources whose only UpToDate replicas are on ``node``."""
    by_resource: dict[str, list[Replica]] = {}
    for r in replicas:
        by_resource.setdefault(r.resource, []).append(r)
    problems = []
    for name, reps in sorted(by_resource.items()):
        good = [r.node for r in reps if r.up_to_date]
        if good and set(good) == {node}:
            others = ", ".join(f"{r.node}: {'/'.join(r.disk_states) or 'no volumes'}"
                               for r in reps if r.node != node) or "no other replica"
            problems.append(f"LINSTOR resource {name}: node {node} holds its last UpToDate "
                            f"replica ({others})")
    return problems


@dataclass
class LinstorCheck:
    """The LINSTOR gate through the API server's service proxy to the controller."""

    kube: Kube
    namespace: str
    service: str = LINSTOR_SERVICE
    port: int = LINSTOR_PORT
    name: str = "linstor"

    @property
    def path(self) -> str:
        return (f"/api/v1/namespaces/{self.namespace}/services/{self.service}:{self.port}"
                "/proxy/v1/view/resources")

    def replicas(self) -> list[Replica]:
        _, doc = self.kube.request(
            "GET", self.path,
            what=f"LINSTOR resources (service {self.namespace}/{self.service}:{self.port})")
        if not isinstance(doc, list):
            raise StorageUnreadable(f"LINSTOR resources at {self.path}: expected a JSON list, "
                                    f"got {type(doc).__name__}")
        return replicas_from_view(doc)

    def problems(self, node: str) -> list[str]:
        return last_replica_problems(self.replicas(), node)


class StorageUnreadable(CloudctlError):
    exit_code = 6
