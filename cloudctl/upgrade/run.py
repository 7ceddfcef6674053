"""Run an upgrade plan: the platform, then nodes added and removed, then Talos node by node,
then Kubernetes node by node.

Every node change is one at a time, control planes first, and goes through the same steps:

- gates before: etcd (a control plane: every member healthy, quorum kept without it) and
  storage (the node holds no last UpToDate replica);
- Talos OS only: cordon, drain through the Eviction API (PodDisruptionBudgets honoured by the
  API server), ``Upgrade`` to the target installer image, wait for the reboot (a new boot ID)
  and normal mode, verify the running version (the old one back is a silent A/B rollback: a
  failure naming the node), pin the new installer image in the node's config;
- Kubernetes: the node's config with the new control-plane images (kubelet kept) or the new
  kubelet, applied without reboot, then the Node's kubelet version checked;
- after: the Node Ready, uncordon, etcd healthy again.

The first failed gate stops the run (exit 10 for a gate or a rollback) with the record saved;
``--resume`` continues with the change in flight or the next one; a node whose Upgrade call was
sent is never sent it again (its reboot is waited for instead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import yaml

from ..errors import CloudctlError, GateRefused, Timeout
from ..inventory.models import Inventory, Node
from ..kube.client import Kube
from ..kube.drain import drain, set_unschedulable
from ..kube.errors import KubeApiError
from ..talos.client import Credentials, Endpoint, TalosClient
from ..talos.ops import wait_rebooted
from ..util.images import retag
from .facts import config_images
from .gates import EtcdHealth, MemberHealth, StorageCheck, etcd_health, etcd_problems
from .plan import KUBERNETES, NODES, PLATFORM, TALOS, Change, ExtraNode, UpgradePlan
from .record import DONE, InFlight, RecordFile, UpgradeRecord

Say = Callable[..., None]


def pin_kubernetes(config: str, *, kubelet: str | None, control_plane: str | None) -> str:
    """The config with the kubelet image (and on control planes the kube-apiserver,
    controller-manager, scheduler and kube-proxy images) re-tagged to the given versions; None
    keeps what the config says. Other documents are kept as they are."""
    docs = list(yaml.safe_load_all(config))
    for doc in docs:
        if not (isinstance(doc, dict) and doc.get("version") == "v1alpha1"):
            continue
        machine, cluster = doc.get("machine") or {}, doc.get("cluster") or {}
        if kubelet and isinstance(machine.get("kubelet"), dict):
            machine["kubelet"]["image"] = retag(str(machine["kubelet"].get("image")), kubelet)
        if control_plane:
            for part in ("apiServer", "controllerManager", "scheduler", "proxy"):
                if isinstance(cluster.get(part), dict) and cluster[part].get("image"):
                    cluster[part]["image"] = retag(str(cluster[part]["image"]), control_plane)
    return yaml.safe_dump_all(docs, sort_keys=False)


def set_install_image(config: str, image: str) -> str:
    """The config with ``machine.install.image`` set to ``image`` (a rollback target)."""
    docs = list(yaml.safe_load_all(config))
    for doc in docs:
        if isinstance(doc, dict) and doc.get("version") == "v1alpha1":
            doc.setdefault("machine", {}).setdefault("install", {})["image"] = image
    return yaml.safe_dump_all(docs, sort_keys=False)


class Upgrader:
    """Executes one plan against one cluster (I/O: Talos API, Kubernetes API, the record)."""

    def __init__(
        self,
        inv: Inventory,
        plan: UpgradePlan,
        record: UpgradeRecord,
        records: RecordFile,
        *,
        dial: Callable[[Node], Endpoint],
        dial_address: Callable[[str], Endpoint],
        creds: Credentials,
        kube: Kube,
        configs: dict[str, str],
        storage: list[StorageCheck],
        say: Say,
        timeout: float,
        drain_timeout: float,
        poll: float,
        platform: Callable[[], None],
        add_nodes: Callable[[], None],
        extra: dict[str, ExtraNode],
    ) -> None:
        self.inv = inv
        self.plan = plan
        self.record = record
        self.records = records
        self.dial = dial
        self.dial_address = dial_address
        self.creds = creds
        self.kube = kube
        self.configs = configs
        self.storage = storage
        self.say = say
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self.poll = poll
        self.platform = platform
        self.add_nodes = add_nodes
        self.extra = extra
        self.nodes = {n.name: n for n in inv.nodes}

    # ------------------------------------------------------------------ bookkeeping

    def _save(self) -> None:
        self.records.save(self.record)

    def _done(self, change: Change) -> None:
        if change.key not in self.record.done:
            self.record.done.append(change.key)
        self.record.current = None
        self._save()

    # ------------------------------------------------------------------ gates

    async def _etcd(self) -> EtcdHealth:
        cps = [n for n in self.inv.nodes if n.role == "controlplane"]
        return await etcd_health(cps, self.dial, self.creds, timeout=min(5.0, self.timeout))

    async def gate_before(self, node: Node) -> None:
        if node.role == "controlplane":
            problems = etcd_problems(await self._etcd(), leaving=node.name)
            if problems:
                raise GateRefused(f"etcd gate refused before {node.name}:\n  - "
                                  + "\n  - ".join(problems))
            self.say("gate", f"etcd healthy; quorum kept without {node.name}", node=node.name)
        for check in self.storage:
            problems = check.problems(node.name)
            if problems:
                raise GateRefused(f"storage gate ({check.name}) refused {node.name}:\n  - "
                                  + "\n  - ".join(problems))
            self.say("gate", f"storage ({check.name}): no last UpToDate replica on the node",
                     node=node.name)

    async def wait_etcd_healthy(self, name: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            problems = etcd_problems(await self._etcd())
            if not problems:
                self.say("gate", "etcd healthy again, every member answers", node=name)
                return
            if time.monotonic() >= deadline:
                raise GateRefused(f"etcd not healthy after the change on {name} "
                                  f"({self.timeout:g}s):\n  - " + "\n  - ".join(problems))
            await asyncio.sleep(self.poll)

    def wait_node_ready(self, node: Node, *, kubelet: str | None = None) -> None:
        """The Kubernetes Node Ready (and on ``kubelet``, if given)."""
        deadline = time.monotonic() + self.timeout
        self.say("wait", f"waiting up to {self.timeout:g}s for Node {node.name} Ready"
                 f"{' on kubelet ' + kubelet if kubelet else ''}", node=node.name)
        while True:
            try:
                obj = self.kube.request("GET", f"/api/v1/nodes/{node.name}",
                                        what=f"Node {node.name}")[1]
            except KubeApiError as err:
                if err.code != 404:
                    raise
                obj = None  # a new node's kubelet has not registered it yet
            if obj is None:
                last = "not registered yet (no Node object)"
            else:
                status = obj.get("status") or {}
                ready: dict[str, Any] = next((c for c in status.get("conditions") or []
                                              if c.get("type") == "Ready"), {})
                have = (status.get("nodeInfo") or {}).get("kubeletVersion")
                if ready.get("status") == "True" and (kubelet is None or have == kubelet):
                    return
                last = (f"Ready={ready.get('status', 'Unknown')} ({ready.get('reason', '')}), "
                        f"kubelet {have}")
            if time.monotonic() >= deadline:
                raise Timeout(f"Node {node.name} not Ready"
                              f"{' on kubelet ' + kubelet if kubelet else ''} after "
                              f"{self.timeout:g}s (last: {last})")
            time.sleep(self.poll)

    # ------------------------------------------------------------------ Talos

    async def _apply(self, node: Node, config: str) -> str:
        async with TalosClient(self.dial(node), self.creds, timeout=self.timeout) as c:
            res = await c.apply_configuration(config.encode())
        return f"{res.mode}: {res.mode_details}"

    async def talos(self, change: Change) -> None:
        node = self.nodes[change.target]
        config = self.configs[node.name]
        image, _, _ = config_images(config)
        live = self.kubernetes_before(node.name)
        current = self.record.current if self.record.current and \
            self.record.current.key == change.key else None
        ep = self.dial(node)
        if current is None or not current.sent:
            await self.gate_before(node)
            set_unschedulable(self.kube, node.name, True)
            self.say("cordon", "cordoned", node=node.name)
            evicted = drain(self.kube, node.name, timeout=self.drain_timeout, interval=self.poll,
                            on_event=lambda m: self.say("drain", m, node=node.name))
            self.say("drain", f"drained ({len(evicted)} pod(s) evicted)", node=node.name)
            async with TalosClient(ep, self.creds, timeout=self.timeout) as c:
                boot_id = await c.boot_id()
                self.record.current = InFlight(change.key, boot_id, sent=False)
                self._save()
                await c.upgrade(image)
            self.record.current = InFlight(change.key, boot_id, sent=True)
            self._save()
            self.say("upgrade", f"Upgrade to {image} accepted; waiting for the reboot",
                     node=node.name)
        else:
            boot_id = current.boot_id
            self.say("upgrade", "resuming: the Upgrade call was sent by an earlier run; "
                     "waiting for its reboot (not sent again)", node=node.name)
        info = await wait_rebooted(ep, self.creds, boot_id, timeout=self.timeout,
                                   poll=self.poll)
        if info.tag != change.after:
            set_unschedulable(self.kube, node.name, False)
            self.record.current = None
            self._save()
            raise GateRefused(
                f"node {node.name} came back on Talos {info.tag}, not {change.after}: the "
                f"upgrade to {image} did not take (A/B rollback to the previous system); the "
                "node was uncordoned on its old version and the upgrade stops here")
        pinned = pin_kubernetes(config, kubelet=live.get("kubelet"),
                                control_plane=live.get("api_server"))
        detail = await self._apply(node, pinned)
        self.say("config", f"installer image {image} pinned in the node's config ({detail})",
                 node=node.name)
        self.wait_node_ready(node)
        set_unschedulable(self.kube, node.name, False)
        self.say("uncordon", "Ready and uncordoned", node=node.name)
        if node.role == "controlplane":
            await self.wait_etcd_healthy(node.name)

    def kubernetes_before(self, name: str) -> dict[str, str | None]:
        """The kubelet and API server versions the node ran when this upgrade started (kept in
        its config until the Kubernetes layer changes them)."""
        prev = (self.record.previous.get("nodes") or {}).get(name) or {}
        return {"kubelet": prev.get("kubelet"), "api_server": prev.get("api_server")}

    # ------------------------------------------------------------------ node lifecycle

    async def add(self, changes: list[Change]) -> None:
        """Boot and configure the new nodes (the bootstrap pipeline's boot, discover and apply
        stages, which skip every node already running), then wait for them Ready."""
        for c in changes:
            self.say("node-start", c.describe(), node=c.target, phase=c.key)
        await asyncio.to_thread(self.add_nodes)
        for c in changes:
            self.wait_node_ready(self.nodes[c.target])
            self._done(c)
            self.say("node-done", f"{c.describe()}: Ready", node=c.target, phase=c.key)

    async def remove(self, change: Change) -> None:
        """Drain, leave etcd (a control plane, quorum checked first), reset, delete the Node.
        A node whose Talos API no longer answers is not reset; its etcd member is removed
        through a remaining control plane."""
        extra = self.extra[change.target]
        name = change.target
        ep = self.dial_address(extra.address).named(name)
        cps = [n for n in self.inv.nodes if n.role == "controlplane"]
        health = await etcd_health(cps, self.dial, self.creds, timeout=min(5.0, self.timeout))
        member = next((mid for mid, host in health.members.items() if host == name), None)
        if member is not None:
            # the leaving member is healthy until it goes: quorum must survive its departure
            leaving = EtcdHealth(health.members, {**health.status,
                                                  name: MemberHealth(name, member, ())})
            problems = etcd_problems(leaving, leaving=name)
            if problems:
                raise GateRefused(f"etcd gate refused removing {name}:\n  - "
                                  + "\n  - ".join(problems))
        for check in self.storage:
            problems = check.problems(name)
            if problems:
                raise GateRefused(f"storage gate ({check.name}) refused removing {name}:\n"
                                  "  - " + "\n  - ".join(problems))
        set_unschedulable(self.kube, name, True)
        evicted = drain(self.kube, name, timeout=self.drain_timeout, interval=self.poll,
                        on_event=lambda m: self.say("drain", m, node=name))
        self.say("drain", f"drained ({len(evicted)} pod(s) evicted)", node=name)
        left = False
        try:
            async with TalosClient(ep, self.creds, timeout=min(5.0, self.timeout)) as c:
                if member is not None:
                    await c.etcd_leave_cluster()
                    left = True
                    self.say("etcd", f"left etcd (member {member:x})", node=name)
                await c.reset(graceful=True, reboot=False)
            self.say("reset", "Reset accepted: the node wipes itself and powers off", node=name)
        except CloudctlError as exc:
            self.say("warn", f"Talos API of {name} did not take the call ({exc})", node=name)
            if member is not None and not left:
                await self._remove_member(name, member, cps)
        self.kube.request("DELETE", f"/api/v1/nodes/{name}", what=f"Node {name}")
        self.say("delete", "Node deleted from Kubernetes", node=name)
        if member is not None:
            await self.wait_etcd_healthy(name)

    async def _remove_member(self, name: str, member: int, cps: list[Node]) -> None:
        last = "no control plane answered"
        for cp in cps:
            try:
                async with TalosClient(self.dial(cp), self.creds,
                                       timeout=min(5.0, self.timeout)) as c:
                    await c.etcd_remove_member(member)
                self.say("etcd", f"member {member:x} removed through {cp.name}", node=name)
                return
            except CloudctlError as exc:
                last = str(exc)
        raise GateRefused(f"etcd member {name} ({member:x}) could not be removed: {last}")

    # ------------------------------------------------------------------ Kubernetes

    async def kubernetes(self, change: Change) -> None:
        node = self.nodes[change.target]
        await self.gate_before(node)
        config = self.configs[node.name]
        if change.part == "control-plane":
            live = self.kubernetes_before(node.name)
            config = pin_kubernetes(config, kubelet=live.get("kubelet"), control_plane=None)
        detail = await self._apply(node, config)
        self.say("config", f"{change.describe()} applied ({detail})", node=node.name)
        if change.part == "kubelet":
            self.wait_node_ready(node, kubelet=change.after)
        else:
            self.wait_node_ready(node)
        if node.role == "controlplane":
            await self.wait_etcd_healthy(node.name)

    # ------------------------------------------------------------------ the run

    async def run(self) -> None:
        changes = [c for c in self.plan.changes if c.key not in self.record.done]
        if any(c.layer == PLATFORM for c in changes):
            self.say("platform", "platform: " + "; ".join(
                c.describe() for c in changes if c.layer == PLATFORM))
            await asyncio.to_thread(self.platform)
            for c in changes:
                if c.layer == PLATFORM:
                    self._done(c)
        adds = [c for c in changes if c.layer == NODES and c.part == "add"]
        if adds:
            await self.add(adds)
        for layer in (NODES, TALOS, KUBERNETES):
            for change in (c for c in changes if c.layer == layer and c.part != "add"):
                self.say("node-start", change.describe(), node=change.target,
                         phase=change.key)
                started = time.monotonic()
                if layer == NODES:
                    await self.remove(change)
                elif layer == TALOS:
                    await self.talos(change)
                else:
                    await self.kubernetes(change)
                self._done(change)
                self.say("node-done", f"{change.describe()} done in "
                         f"{time.monotonic() - started:.1f}s", node=change.target,
                         phase=change.key)
        self.record.status = DONE
        self._save()


def plan_record(plan: UpgradePlan) -> list[dict[str, Any]]:
    return [asdict(c) | {"key": c.key} for c in plan.changes]


