"""Talos operations on a rack: discover, preflight, apply, bootstrap once, kubeconfig, version,
reboot, upgrade. Used by the pipeline and by ``cloudctl talos ...``.

Addresses are dialled through a ``dial`` function (``Endpoint.of`` on a real network, the
emulator's ``Rack.endpoint`` in CI). Fan-out operations run concurrently with a bound and
return one :class:`NodeResult` per node instead of stopping at the first failure; the caller
decides (``raise_failures``). Pure decisions (matching, preflight, split-brain detection) are
separate functions so they are tested without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import fcntl
import functools
import ipaddress
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from grpclib.const import Status

from ..atomic import write_atomic
from ..errors import (
    CloudctlError,
    InputError,
    Problem,
    RemoteError,
    StateError,
    Timeout,
    node_failures,
)
from ..inventory.models import Inventory, Node
from ..util.images import tag_of
from .client import (
    NO_RETRY,
    Credentials,
    DiskInfo,
    Endpoint,
    EtcdMember,
    TalosApiError,
    TalosClient,
    VersionInfo,
)
from .disks import resolve_install_disk

T = TypeVar("T")
Dial = Callable[[str], Endpoint]
Events = Callable[[str, str], None]
"""``on_event(node, message)`` progress callback."""

DEFAULT_CONCURRENCY = 32
"""Nodes talked to at once where each talk is one exchange (probe, send a config, query)."""
WAIT_CONCURRENCY = 512
"""Nodes watched at once while they install (each watch holds one connection): a config is
sent to every node without waiting for the ones before it to finish installing."""
MAX_POLL = 2.0
"""Polls of an installing node start at ``poll`` and back off to this."""


class ApplySlots:
    """How many nodes get their config sent, and are then watched, at the same time."""

    def __init__(self, send: int = DEFAULT_CONCURRENCY, wait: int = WAIT_CONCURRENCY) -> None:
        self.send = asyncio.Semaphore(send)
        self.wait = asyncio.Semaphore(wait)


def _noop(node: str, message: str) -> None:
    return None


def _ep(dial: Dial, node: Node) -> Endpoint:
    """The endpoint of an inventory node at its configured address, named for messages."""
    return dial(str(node.ip)).named(node.name)


# --------------------------------------------------------------------------- fan-out


@dataclass(frozen=True)
class NodeResult(Generic[T]):
    node: str
    value: T | None = None
    error: CloudctlError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def fan_out(
    items: Iterable[tuple[str, Callable[[], Awaitable[T]]]],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[NodeResult[T]]:
    """Run ``(name, thunk)`` pairs concurrently (at most ``concurrency`` at once)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(name: str, thunk: Callable[[], Awaitable[T]]) -> NodeResult[T]:
        async with sem:
            try:
                return NodeResult(name, await thunk())
            except CloudctlError as exc:
                return NodeResult(name, error=exc)

    return list(await asyncio.gather(*(one(n, t) for n, t in items)))


def raise_failures(results: list[NodeResult[T]], what: str) -> dict[str, T]:
    """Values by node, or one error listing every failed node."""
    failed = [r for r in results if not r.ok]
    if failed:
        raise node_failures(what, [(r.node, r.error) for r in failed if r.error is not None],
                            len(results))
    return {r.node: r.value for r in results}  # type: ignore[misc]


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class DiscoveredNode:
    """A machine answering on :50000 and what it reports about itself."""

    address: str
    stage: str
    links: tuple[tuple[str, str], ...] = ()
    """(link name, hardware address) of its Ethernet links."""
    disks: tuple[DiskInfo, ...] = ()
    node: str | None = None
    """Inventory node this machine is (matched by MAC)."""
    spki: str | None = None
    """SPKI SHA-256 of its maintenance certificate, pinned when the config is sent."""

    @property
    def macs(self) -> tuple[str, ...]:
        return tuple(m for _, m in self.links)


@dataclass
class Discovery:
    nodes: dict[str, DiscoveredNode] = field(default_factory=dict)
    """Inventory node name -> the machine found for it (in maintenance mode)."""
    unknown: list[DiscoveredNode] = field(default_factory=list)
    """Maintenance-mode machines whose MACs are not in the inventory."""
    configured: list[DiscoveredNode] = field(default_factory=list)
    """Machines that answer but are not in maintenance mode (already configured)."""
    problems: list[Problem] = field(default_factory=list)
    unresponsive: list[str] = field(default_factory=list)
    """Addresses whose TLS/gRPC answer did not come within the last round's timeout."""

    def missing(self, inv: Inventory) -> list[str]:
        return [n.name for n in inv.nodes if n.name not in self.nodes]


async def probe(endpoint: Endpoint, *, timeout: float = 3.0) -> DiscoveredNode | None:
    """Read a maintenance-mode machine (None: nothing answers with a Talos API there).

    A machine that accepts the connection but does not answer in time raises ``Timeout``
    (the caller may try again with a longer deadline).
    """
    async with TalosClient(endpoint, timeout=timeout, read_retry=NO_RETRY) as c:
        try:
            stage = await c.machine_stage()
        except TalosApiError:
            return None
        if stage != "maintenance":
            return DiscoveredNode(endpoint.node, stage)
        spki = c.peer_spki()
        links = await c.list("network", "LinkStatuses.net.talos.dev")
        disks = await c.disks()
    eth = tuple(
        (r.id, str(r.spec.get("permanentAddr") or r.spec.get("hardwareAddr", "")).lower())
        for r in links
        if isinstance(r.spec, dict) and r.spec.get("type") == "ether"
    )
    return DiscoveredNode(endpoint.node, stage, eth, tuple(disks), spki=spki)


async def _probe_address(dial: Dial, address: str, timeout: float) -> DiscoveredNode | None:
    return await probe(dial(address), timeout=timeout)


def match_inventory(inv: Inventory, found: list[DiscoveredNode]) -> Discovery:
    """Assign found machines to inventory nodes by MAC (pure)."""
    by_mac = {mac: n for n in inv.nodes for mac in n.macs}
    out = Discovery()
    for d in sorted(found, key=lambda d: ipaddress.ip_address(d.address)):
        if d.stage != "maintenance":
            out.configured.append(d)
            continue
        names = sorted({by_mac[m].name for m in d.macs if m in by_mac})
        if not names:
            out.unknown.append(d)
            continue
        if len(names) > 1:
            out.problems.append(Problem(
                "nodes", f"machine at {d.address} has MACs of several nodes: {', '.join(names)}"))
            continue
        name = names[0]
        if name in out.nodes:
            out.problems.append(Problem(
                f"nodes.{name}.macs", f"two machines answer for node {name}: "
                f"{out.nodes[name].address} and {d.address}"))
            continue
        out.nodes[name] = DiscoveredNode(d.address, d.stage, d.links, d.disks, name, d.spki)
    return out


async def discover(
    inv: Inventory,
    candidates: Iterable[str],
    *,
    dial: Dial = Endpoint.of,
    concurrency: int = 64,
    timeout: float = 3.0,
    rounds: int = 3,
) -> Discovery:
    """Probe every candidate address (subnet hosts, DHCP leases) concurrently; match by MAC.

    Addresses that time out (slow or busy machines, a loaded network) are probed again with
    three times the deadline, up to ``rounds`` rounds; what still times out is listed in
    ``Discovery.unresponsive``. A machine that answered but then failed is a problem.
    """
    pending = list(dict.fromkeys(str(a) for a in candidates))
    found: list[DiscoveredNode] = []
    failures: list[Problem] = []
    deadline = timeout
    for _ in range(max(1, rounds)):
        results = await fan_out(
            ((a, functools.partial(_probe_address, dial, a, deadline)) for a in pending),
            concurrency=concurrency,
        )
        found += [r.value for r in results if r.ok and r.value is not None]
        failures += [Problem("network", f"machine at {r.node}: {r.error}")
                     for r in results if r.error is not None and not isinstance(r.error, Timeout)]
        pending = [r.node for r in results if isinstance(r.error, Timeout)]
        if not pending:
            break
        deadline *= 3
    out = match_inventory(inv, found)
    out.problems += failures
    out.unresponsive = pending
    return out


def preflight(inv: Inventory, discovery: Discovery) -> list[Problem]:
    """Inventory vs hardware: every node found, install disk and interfaces resolve (pure)."""
    problems = list(discovery.problems)
    for i, node in enumerate(inv.nodes):
        found = discovery.nodes.get(node.name)
        if found is None:
            hint = ""
            if discovery.unresponsive:
                hint = (f"; {len(discovery.unresponsive)} address(es) did not answer in time: "
                        f"{', '.join(discovery.unresponsive[:5])}")
            problems.append(Problem(f"nodes[{i}]", f"node {node.name} (MACs "
                                    f"{', '.join(node.macs)}) not found in maintenance mode"
                                    + hint))
            continue
        choice = resolve_install_disk(node, list(found.disks))
        if choice.problem:
            field_ = "installDisk" if node.install_disk else "installDiskSelector"
            problems.append(Problem(f"nodes[{i}].{field_}", choice.problem))
        macs = set(found.macs)
        for mac in node.macs:
            if mac not in macs:
                problems.append(Problem(f"nodes[{i}].macs", f"node {node.name}: NIC {mac} not "
                                        f"present (links: {', '.join(found.macs)})"))
    return problems


def check_preflight(inv: Inventory, discovery: Discovery) -> None:
    problems = preflight(inv, discovery)
    if problems:
        raise InputError(problems, source="preflight")


# --------------------------------------------------------------------------- apply

_MAC_RE = re.compile(r"(?<![0-9A-Fa-f:])((?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})(?![0-9A-Fa-f:])")
_SECRET_LINE = re.compile(
    r"^([-+ ]?\s*(?:- )?(?:key|token|secret|secretboxEncryptionSecret|aescbcEncryptionSecret|"
    r"password|bootstraptoken):\s*)\S.*$",
    re.MULTILINE,
)


def redact_text(text: str) -> str:
    """Blank the values of secret keys in YAML-ish text (config diffs the node sends back)."""
    return _SECRET_LINE.sub(lambda m: m.group(1) + "'**REDACTED**'", text)


def foreign_macs(config: bytes, node_macs: Iterable[str]) -> list[str]:
    """MACs a config's network section names that the node does not have (pure)."""
    mine = {m.lower() for m in node_macs}
    out = []
    for m in _MAC_RE.findall(config.decode("utf-8", "replace")):
        if m.lower() not in mine and m.lower() not in out:
            out.append(m.lower())
    return out


@dataclass(frozen=True)
class ApplyOutcome:
    address: str
    """Where the node answers now (its configured IP)."""
    dry_run: str
    """What the node said the dry run would do (secrets redacted)."""
    mode_details: str
    version: str


async def wait_running(
    endpoint: Endpoint, creds: Credentials, *, timeout: float, poll: float = 0.1
) -> VersionInfo:
    """Poll until the node answers over mTLS with MachineStatus stage ``running``.

    Only an mTLS client is used: the maintenance API keeps answering insecure clients until
    the reboot, so an insecure probe would report ready too early.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with TalosClient(endpoint, creds, timeout=min(5.0, timeout)) as c:
        while True:
            try:
                stage = await c.machine_stage()
                if stage == "running":
                    return await c.version()
                last = f"stage {stage}"
            except (TalosApiError, Timeout) as exc:
                last = str(exc)
                c.close()
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"Talos node {endpoint.label}: not running in normal mode after "
                              f"{timeout:g}s (last: {last})")
            await asyncio.sleep(min(poll, left))
            poll = min(poll * 1.5, max(poll, MAX_POLL))  # a real install takes minutes


async def running_version(
    endpoint: Endpoint, creds: Credentials, *, timeout: float = 3.0
) -> VersionInfo | None:
    """The version of a node that answers over mTLS in stage running, else None."""
    async with TalosClient(endpoint, creds, timeout=timeout, read_retry=NO_RETRY) as c:
        try:
            if await c.machine_stage() != "running":
                return None
            return await c.version()
        except (TalosApiError, Timeout):
            return None


async def apply_node(
    node: Node,
    found: DiscoveredNode,
    config: bytes,
    creds: Credentials,
    *,
    dial: Dial,
    timeout: float = 600.0,
    on_event: Events = _noop,
    slots: ApplySlots | None = None,
) -> ApplyOutcome:
    """Dry run, apply with mode AUTO over the maintenance API, wait for normal mode.

    The maintenance connection is pinned to the certificate key seen at discovery, so the
    config (which holds secrets) goes to the machine that was matched by MAC. With ``slots``
    (shared by the nodes applied together), the send and the wait each take a slot of their
    own: the next node's config goes out while this one installs.
    """
    if slots is None:
        slots = ApplySlots()
    foreign = foreign_macs(config, found.macs)
    if foreign:
        raise InputError(Problem(f"nodes.{node.name}", f"config for node {node.name} selects "
                                 f"MAC(s) {', '.join(foreign)} that the machine at "
                                 f"{found.address} does not have ({', '.join(found.macs)})"))
    pins = (found.spki,) if found.spki else ()
    async with slots.send, TalosClient(dial(found.address).named(node.name),
                                       spki_pins=pins) as c:
        dry = await c.apply_configuration(config, dry_run=True)
        on_event(node.name, f"dry run: {redact_text(dry.mode_details)}")
        res = await c.apply_configuration(config)
        on_event(node.name, f"applied ({res.mode}): {res.mode_details}")
    async with slots.wait:
        version = await wait_running(_ep(dial, node), creds, timeout=timeout)
    on_event(node.name, f"running {version.tag} on {node.ip}")
    return ApplyOutcome(str(node.ip), redact_text(dry.mode_details), res.mode_details, version.tag)


async def apply_all(
    inv: Inventory,
    discovery: Discovery,
    configs: dict[str, bytes],
    creds: Credentials,
    *,
    dial: Dial = Endpoint.of,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = 600.0,
    on_event: Events = _noop,
) -> list[NodeResult[ApplyOutcome]]:
    """Apply every discovered node's config concurrently; one result per inventory node.

    A node not found in maintenance mode but already answering over mTLS on its configured
    address (a resumed run) counts as applied; its config is not sent again.
    """
    slots = ApplySlots(send=concurrency)

    def job(node: Node) -> Callable[[], Awaitable[ApplyOutcome]]:
        async def run() -> ApplyOutcome:
            found = discovery.nodes.get(node.name)
            if found is None:
                async with slots.send:
                    running = await running_version(_ep(dial, node), creds)
                if running is not None:
                    on_event(node.name, f"already configured, running {running.tag}")
                    return ApplyOutcome(str(node.ip), "", "already configured", running.tag)
                raise RemoteError(f"node {node.name} was not discovered in maintenance mode "
                                  f"and does not answer in normal mode on {node.ip}")
            if node.name not in configs:
                raise InputError(f"no machine config for node {node.name}")
            return await apply_node(node, found, configs[node.name], creds, dial=dial,
                                    timeout=timeout, on_event=on_event, slots=slots)
        return run

    # every node's task runs at once; the slots bound what they do
    return await fan_out(((n.name, job(n)) for n in inv.nodes),
                         concurrency=max(1, len(inv.nodes)))


# --------------------------------------------------------------------------- bootstrap


_LOCKS: dict[tuple[int, str], asyncio.Lock] = {}
"""In-process bootstrap locks per (event loop, state path); asyncio locks are loop-bound."""


class BootstrapState:
    """The persisted "etcd was bootstrapped on node X" marker (JSON file, 0600).

    ``locked()`` serialises bootstrap attempts in this process (asyncio lock per path) and
    across processes (``flock`` on ``<path>.lock``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(f"{self.path}: unreadable bootstrap marker ({exc}); move it aside "
                             "only if etcd was never bootstrapped on these nodes") from None
        if not isinstance(data, dict):
            raise StateError(f"{self.path}: not a bootstrap marker (a JSON object expected)")
        return data

    def write(self, data: dict[str, Any]) -> None:
        write_atomic(self.path, json.dumps(data, indent=2, sort_keys=True), mode=0o600)

    @property
    def bootstrapped_node(self) -> str | None:
        node = self.read().get("bootstrapped")
        return node if isinstance(node, str) else None

    @contextlib.asynccontextmanager
    async def locked(self) -> Any:
        key = (id(asyncio.get_running_loop()), str(self.path.resolve()))
        lock = _LOCKS.setdefault(key, asyncio.Lock())
        async with lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as exc:
                        if exc.errno not in (errno.EAGAIN, errno.EACCES):
                            raise
                        await asyncio.sleep(0.05)
                yield self
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


@dataclass(frozen=True)
class BootstrapOutcome:
    node: str
    called: bool
    """Whether this run sent the Bootstrap call (False: it had already been done)."""
    members: tuple[str, ...]


def bootstrap_node(inv: Inventory) -> Node:
    """The one control plane to bootstrap: the first by address, as talosctl picks it."""
    cps = inv.controlplanes
    if not cps:
        raise InputError("the inventory has no control-plane node to bootstrap")
    return min(cps, key=lambda n: n.ip)


def etcd_views_problem(views: dict[str, list[EtcdMember] | None]) -> str | None:
    """Split-brain detection over each control plane's EtcdMemberList (pure).

    ``None`` = that node has no etcd yet. Views read while a member joins may differ (one
    node already lists the new member, another not yet), so views that share a member are
    one cluster; views with no member in common mean two etcd clusters.
    """
    groups: list[tuple[set[int], list[str]]] = []
    for node, members in views.items():
        if not members:
            continue
        ids, nodes = {m.id for m in members}, [node]
        for g in [g for g in groups if g[0] & ids]:
            groups.remove(g)
            ids |= g[0]
            nodes += g[1]
        groups.append((ids, nodes))
    if len(groups) <= 1:
        return None
    desc = "; ".join(
        f"{', '.join(sorted(nodes))} see members {{{', '.join(sorted(f'{i:x}' for i in ids))}}}"
        for ids, nodes in groups
    )
    return f"etcd split brain: control planes report different clusters ({desc})"


STALE_MARKER_GRACE = 120.0
"""Seconds after a Bootstrap call during which etcd may still be starting on the same boot."""


def stale_marker_problem(
    marker_path: Path,
    marker: dict[str, Any],
    views: dict[str, list[EtcdMember] | None],
    boot_id: str | None,
    now: float,
) -> str | None:
    """Why the bootstrap marker describes a cluster these nodes no longer have, or None (pure).

    The marker says etcd was bootstrapped, yet no control plane has an etcd member: the nodes
    were reinstalled (or the rack replaced). Right after a Bootstrap call etcd may still be
    starting, so that is stale only when the bootstrapped node has rebooted since (its boot ID
    differs from the one recorded with the call) or the call is older than the grace period.
    """
    node = marker.get("bootstrapped")
    if not isinstance(node, str) or any(views.values()):
        return None
    recorded = marker.get("boot_id")
    at = marker.get("at_unix")
    rebooted = recorded is not None and boot_id is not None and boot_id != recorded
    old = not isinstance(at, int | float) or now - float(at) > STALE_MARKER_GRACE
    if not (rebooted or old):
        return None
    why = "rebooted since (new boot ID)" if rebooted else "bootstrapped long ago"
    return (f"{marker_path} records etcd bootstrapped on {node}, but no control plane has an "
            f"etcd member ({', '.join(sorted(views))}: none; {node} {why}). The nodes were "
            f"reinstalled or the rack replaced, so this is a new cluster: move {marker_path} "
            "aside (with state.json and kubeconfig beside it) and run again to bootstrap it, "
            "or restore the original nodes. Bootstrap is not called while the marker stands.")


async def node_boot_id(node: Node, creds: Credentials, *, dial: Dial) -> str | None:
    """The boot ID of a running node, or None when it cannot be read."""
    try:
        async with TalosClient(_ep(dial, node), creds, timeout=5.0) as c:
            return await c.boot_id()
    except CloudctlError:
        return None


async def etcd_views(
    inv: Inventory, creds: Credentials, *, dial: Dial, timeout: float = 10.0
) -> dict[str, list[EtcdMember] | None]:
    """EtcdMemberList of every control plane (None where etcd is not running yet).

    Unreachable control planes raise: membership cannot be judged without them.
    """
    async def one(node: Node) -> list[EtcdMember] | None:
        async with TalosClient(_ep(dial, node), creds, timeout=timeout) as c:
            await c.version()
            try:
                return await c.etcd_members()
            except TalosApiError as exc:
                if exc.code in (Status.FAILED_PRECONDITION, Status.UNAVAILABLE, Status.UNKNOWN):
                    return None
                raise

    results = await fan_out((n.name, functools.partial(one, n)) for n in inv.controlplanes)
    return raise_failures(results, "reading etcd membership")


async def bootstrap_once(
    inv: Inventory,
    creds: Credentials,
    state: BootstrapState,
    *,
    dial: Dial = Endpoint.of,
    timeout: float = 300.0,
    on_event: Events = _noop,
) -> BootstrapOutcome:
    """Bootstrap etcd exactly once per cluster, then wait until every control plane agrees.

    Guard, in order: the persisted marker; then EtcdMemberList on every control plane (any
    member list means someone bootstrapped already — recorded, not repeated); only then
    Bootstrap on :func:`bootstrap_node`, where AlreadyExists counts as done. Talos itself only
    refuses a second bootstrap per node (etcd data directory not empty), never per cluster.
    """
    chosen = bootstrap_node(inv)
    async with state.locked():
        data = state.read()
        called = False
        if data.get("bootstrapped"):
            views = await etcd_views(inv, creds, dial=dial)
            done_on = next((n for n in inv.controlplanes if n.name == data["bootstrapped"]),
                           chosen)
            boot = await node_boot_id(done_on, creds, dial=dial) if not any(views.values()) \
                else None
            stale = stale_marker_problem(state.path, data, views, boot, time.time())
            if stale:
                raise StateError(stale)
        else:
            views = await etcd_views(inv, creds, dial=dial)
            split = etcd_views_problem(views)
            if split:
                raise RemoteError(split)
            existing = sorted(n for n, v in views.items() if v)
            if existing:
                on_event(existing[0], "etcd already bootstrapped; not calling Bootstrap")
                state.write({**data, "bootstrapped": existing[0], "at": _now(),
                             "at_unix": round(time.time(), 3)})
            else:
                async with TalosClient(_ep(dial, chosen), creds) as c:
                    boot = await c.boot_id()
                    state.write({**data, "chosen": chosen.name, "at": _now(),
                                 "at_unix": round(time.time(), 3), "boot_id": boot})
                    try:
                        await c.bootstrap()
                        called = True
                        on_event(chosen.name, "Bootstrap accepted")
                    except TalosApiError as exc:
                        if exc.code != Status.ALREADY_EXISTS:
                            raise
                        on_event(chosen.name, "Bootstrap: etcd data directory is not empty")
                state.write({**state.read(), "bootstrapped": chosen.name})
        members = await wait_etcd_healthy(inv, creds, dial=dial, timeout=timeout)
        return BootstrapOutcome(state.bootstrapped_node or chosen.name, called, members)


async def wait_etcd_healthy(
    inv: Inventory, creds: Credentials, *, dial: Dial, timeout: float, poll: float = 0.1
) -> tuple[str, ...]:
    """Until every control plane is an etcd member of one and the same cluster."""
    deadline = time.monotonic() + timeout
    while True:
        views = await etcd_views(inv, creds, dial=dial)
        split = etcd_views_problem(views)
        if split:
            raise RemoteError(split)
        settled = len({frozenset(m.id for m in v or ()) for v in views.values()}) == 1
        if all(views.values()) and settled:
            first = next(iter(views.values()))
            assert first is not None
            return tuple(sorted(m.hostname for m in first))
        if time.monotonic() >= deadline:
            waiting = sorted(n for n, v in views.items() if not v)
            raise Timeout(f"etcd: control planes {', '.join(waiting)} did not join within "
                          f"{timeout:g}s")
        await asyncio.sleep(poll)


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------- kubeconfig, version


async def kubeconfig(inv: Inventory, creds: Credentials, *, dial: Dial = Endpoint.of) -> bytes:
    """The admin kubeconfig from the first control plane that answers."""
    errors = []
    for node in sorted(inv.controlplanes, key=lambda n: n.ip):
        try:
            async with TalosClient(_ep(dial, node), creds) as c:
                return await c.kubeconfig()
        except (TalosApiError, Timeout) as exc:
            errors.append(f"{node.name}: {exc}")
    raise RemoteError("no control plane gave a kubeconfig:\n  " + "\n  ".join(errors))


async def versions(
    inv: Inventory, creds: Credentials, *, dial: Dial = Endpoint.of,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[NodeResult[VersionInfo]]:
    async def one(node: Node) -> VersionInfo:
        async with TalosClient(_ep(dial, node), creds) as c:
            return await c.version()

    return await fan_out(((n.name, functools.partial(one, n)) for n in inv.nodes),
                         concurrency=concurrency)


# --------------------------------------------------------------------------- reboot, upgrade


async def wait_rebooted(
    endpoint: Endpoint, creds: Credentials, old_boot_id: str, *, timeout: float,
    poll: float = 0.1,
) -> VersionInfo:
    """Until the node runs again with a new boot ID (talosctl's reboot tracking)."""
    deadline = time.monotonic() + timeout
    while True:
        version = await wait_running(endpoint, creds, timeout=max(0.1, deadline - time.monotonic()),
                                     poll=poll)
        async with TalosClient(endpoint, creds) as c:
            with contextlib.suppress(TalosApiError, Timeout):
                if await c.boot_id() != old_boot_id:
                    return version
        if time.monotonic() >= deadline:
            raise Timeout(f"Talos node {endpoint.label}: did not reboot within {timeout:g}s")
        await asyncio.sleep(poll)


async def reboot_node(
    node: Node, creds: Credentials, *, dial: Dial = Endpoint.of, timeout: float = 600.0
) -> VersionInfo:
    ep = _ep(dial, node)
    async with TalosClient(ep, creds) as c:
        boot = await c.boot_id()
        await c.reboot()
    return await wait_rebooted(ep, creds, boot, timeout=timeout)


def image_tag(image: str) -> str:
    tag = tag_of(image)
    if not tag:
        raise InputError(f"installer image {image!r} has no tag (the Talos version)")
    return tag


async def upgrade_node(
    node: Node, creds: Credentials, image: str, *, dial: Dial = Endpoint.of,
    timeout: float = 900.0,
) -> VersionInfo:
    """Upgrade to ``image`` and verify the node runs its tag afterwards.

    A node that comes back on another version rolled back silently (the new one failed to
    boot): that is an error, never a success.
    """
    want = image_tag(image)
    ep = _ep(dial, node)
    async with TalosClient(ep, creds) as c:
        boot = await c.boot_id()
        await c.upgrade(image)
    got = await wait_rebooted(ep, creds, boot, timeout=timeout)
    if got.tag != want:
        raise RemoteError(f"Talos node {node.name}: upgrade to {want} rolled back; the node "
                          f"runs {got.tag} (installer {image})")
    return got


async def upgrade_all(
    inv: Inventory, creds: Credentials, image: str, *, dial: Dial = Endpoint.of,
    concurrency: int = 1, timeout: float = 900.0,
) -> list[NodeResult[VersionInfo]]:
    """Upgrade nodes (one at a time by default, control planes first)."""
    order = sorted(inv.nodes, key=lambda n: (not n.is_controlplane, n.ip))
    return await fan_out(
        ((n.name, functools.partial(upgrade_node, n, creds, image, dial=dial, timeout=timeout))
         for n in order),
        concurrency=concurrency,
    )
