"""Ready-made emulated clusters for tests, benchmarks and ``--emulate`` rehearsals.

:func:`scaled_inventory` turns an inventory (e.g. ``inventory.example.yaml``) into one with N
nodes (its control planes, then workers cloned from its first plain worker) with fresh MACs and
addresses in the same subnet; :func:`cluster_material` renders the real machine configs and
talosconfig credentials for an inventory.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..inventory import parse_inventory
from ..inventory.models import Inventory
from ..secrets import SecretsBundle, generate_bundle, talosconfig
from ..talos.client import Credentials


def scaled_inventory(source: str | Path, nodes: int) -> Inventory:
    """The source inventory with ``nodes`` nodes (loaded and checked like a user's file)."""
    doc: dict[str, Any] = yaml.safe_load(Path(source).read_text())
    cps = [n for n in doc["nodes"] if n["role"] == "controlplane"]
    template = next(n for n in doc["nodes"] if n["role"] == "worker" and not n.get("bonds"))
    subnet = ipaddress.IPv4Network(doc["network"]["subnet"])
    taken = {str(n["ip"]) for n in cps} | {str(doc["cluster"].get("vip", ""))}
    taken |= {str(doc["network"].get("gateway")), str(doc["network"].get("bootServer"))}
    for pool in ((doc.get("platform") or {}).get("metallb") or {}).get("pools") or []:
        for rng in pool.get("addresses") or []:
            lo, _, hi = str(rng).partition("-")
            if hi:
                a, b = ipaddress.IPv4Address(lo.strip()), ipaddress.IPv4Address(hi.strip())
                taken |= {str(ipaddress.IPv4Address(x)) for x in range(int(a), int(b) + 1)}
            else:
                taken |= {str(h) for h in ipaddress.IPv4Network(lo.strip())}
    free = (str(h) for h in subnet.hosts() if str(h) not in taken)
    out = list(cps)
    for i in range(nodes - len(cps)):
        w = {k: v for k, v in template.items() if k not in ("macs", "mac", "ip", "name", "bmc")}
        w.update(name=f"worker{i + 1}", ip=next(free),
                 macs=[f"52:54:00:30:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}"])
        out.append(w)
    doc["nodes"] = out
    return parse_inventory(yaml.safe_dump(doc, sort_keys=False), f"{source} x{nodes}").inventory


@dataclass(frozen=True)
class ClusterMaterial:
    inventory: Inventory
    bundle: SecretsBundle
    configs: dict[str, bytes]
    """Node name -> rendered machine config (secret)."""
    credentials: Credentials
    """talosconfig admin credentials (O=os:admin)."""


def cluster_material(inv: Inventory, bundle: SecretsBundle | None = None) -> ClusterMaterial:
    from ..render.machineconfig import render_node_config

    bundle = bundle or generate_bundle()
    configs = {n.name: render_node_config(inv, bundle, n).encode() for n in inv.nodes}
    endpoints = [str(inv.cluster.vip)] if inv.cluster.vip else [str(inv.nodes[0].ip)]
    creds = Credentials.from_talosconfig(talosconfig(bundle, inv.cluster.name, endpoints))
    return ClusterMaterial(inv, bundle, configs, creds)
