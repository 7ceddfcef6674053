"""One power action on many nodes at once, each through its own BMC."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import CloudctlError, InputError, Problem, RemoteError, node_failures
from ..inventory.models import Inventory, Node
from .ipmi import IpmiBmc
from .redfish import RedfishBmc
from .secret import resolve_password

ACTIONS = ("status", "on", "off", "cycle", "pxe-once")
PORTS = {"redfish": 443, "ipmi": 623}


@dataclass(frozen=True)
class PowerResult:
    node: str
    bmc: str
    """type and endpoint, e.g. ``redfish https://10.30.0.11:443``"""
    state: str
    """after the action: ``on``/``off`` for status, what was done otherwise"""


def endpoint(node: Node) -> str:
    assert node.bmc is not None
    port = node.bmc.port or PORTS[node.bmc.type]
    scheme = "https" if node.bmc.type == "redfish" else "ipmi"
    return f"{scheme}://{node.bmc.address}:{port}"


def bmc_label(node: Node) -> str:
    """``<type> <endpoint>``, e.g. ``redfish https://10.30.0.11:443`` (no credentials)."""
    assert node.bmc is not None
    return f"{node.bmc.type} {endpoint(node)}"


def boot_power_plan(node: Node, power: bool) -> str:
    """How the boot stage gets ``node`` powered, for plans (pure)."""
    if node.bmc is None:
        return "no BMC: power it on by hand"
    if not power:
        return f"--no-power: power it on by hand (BMC {bmc_label(node)} not used)"
    return f"power on through BMC {bmc_label(node)}, one-time PXE"


def select(inv: Inventory, names: Sequence[str]) -> list[Node]:
    """The nodes named (all nodes with a BMC when none is), in inventory order."""
    known = {n.name: n for n in inv.nodes}
    problems = [Problem("NODE", f"no node {n!r} in the inventory") for n in names
                if n not in known]
    problems += [Problem(f"nodes[{inv.nodes.index(known[n])}].bmc",
                         f"node {n} has no bmc section") for n in names
                 if n in known and known[n].bmc is None]
    if problems:
        raise InputError(problems)
    chosen = [known[n] for n in dict.fromkeys(names)] if names else [
        n for n in inv.nodes if n.bmc is not None]
    if not chosen:
        raise InputError(Problem("nodes", "no node has a bmc section"))
    return chosen


def act(node: Node, action: str, ca_cert: Path | None, timeout: float) -> PowerResult:
    bmc = node.bmc
    assert bmc is not None
    password = resolve_password(node.name, bmc.password_ref)
    port = bmc.port or PORTS[bmc.type]
    label = bmc_label(node)
    if bmc.type == "redfish":
        verify: bool | str = False if bmc.insecure else (str(ca_cert) if ca_cert else True)
        rf = RedfishBmc(node.name, bmc.address, port, bmc.username, password, verify=verify,
                        system_id=bmc.system_id, timeout=timeout)
        if action == "status":
            return PowerResult(node.name, label, rf.power_state())
        if action == "pxe-once":
            rf.pxe_once()
            return PowerResult(node.name, label, "next boot: network (once)")
        if action == "cycle":
            kind = "restart" if rf.power_state() == "on" else "on"
            rf.reset(_reset(kind))
            return PowerResult(node.name, label, "cycled" if kind == "restart" else "on")
        rf.reset(_reset(action))
        return PowerResult(node.name, label, action)
    ip = IpmiBmc(node.name, bmc.address, port, bmc.username, password)
    if action == "status":
        return PowerResult(node.name, label, ip.power_state())
    if action == "pxe-once":
        ip.pxe_once()
        return PowerResult(node.name, label, "next boot: network (once)")
    if action == "cycle":
        ip.set_power("boot")  # IPMI "boot": power on when off, reset when on
        return PowerResult(node.name, label, "cycled")
    ip.set_power(action)
    return PowerResult(node.name, label, action)


def _reset(kind: str) -> str:
    from .redfish import RESET

    return RESET[kind]


def run_power(
    inv: Inventory, action: str, names: Sequence[str] = (), *, ca_cert: Path | None = None,
    timeout: float = 15.0,
) -> list[PowerResult]:
    """Run ``action`` on the selected nodes concurrently; one aggregated error names every
    node and BMC that failed (the exit code is the failures' own)."""
    if action not in ACTIONS:
        raise InputError(Problem("ACTION", f"{action!r} is not one of {', '.join(ACTIONS)}"))
    nodes = select(inv, names)
    results: list[PowerResult] = []
    failures: list[tuple[str, CloudctlError]] = []
    with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
        futures = [(n, pool.submit(act, n, action, ca_cert, timeout)) for n in nodes]
        for node, fut in futures:
            try:
                results.append(fut.result())
            except CloudctlError as exc:
                failures.append((node.name, exc))
            except Exception as exc:  # a library failing in an unexpected way: name the BMC
                failures.append((node.name, RemoteError(
                    f"node {node.name}: {endpoint(node)}: {type(exc).__name__}: {exc}")))
    if failures:
        raise node_failures(f"power {action}", failures, len(nodes))
    return results
