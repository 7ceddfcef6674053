"""Synthetic inventories of any size, for benchmarks, emulated racks and scale tests.

``synthetic_inventory(nodes=100)`` returns a plain dict (the YAML document) for a rack on a /16
provisioning network: ``controlplanes`` control planes, the rest workers, MACs and IPs derived
from the node index. Pure and deterministic.
"""

from __future__ import annotations

import ipaddress
from typing import Any


def synthetic_inventory(
    nodes: int,
    *,
    controlplanes: int = 3,
    name: str = "synth",
    talos_version: str = "v1.13.6",
    kubernetes_version: str = "v1.35.4",
    subnet: str = "10.40.0.0/16",
) -> dict[str, Any]:
    if nodes < 1 or controlplanes < 1 or controlplanes > nodes:
        raise ValueError("need 1 <= controlplanes <= nodes")
    net = ipaddress.IPv4Network(subnet)
    if nodes + 20 > net.num_addresses - 256:
        raise ValueError(f"{subnet} is too small for {nodes} nodes")
    base = net.network_address
    out_nodes = []
    for i in range(nodes):
        cp = i < controlplanes
        out_nodes.append(
            {
                "name": f"cp{i + 1}" if cp else f"worker{i - controlplanes + 1}",
                "role": "controlplane" if cp else "worker",
                "macs": [f"52:54:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"],
                "ip": str(base + 256 + i),
                "installDisk": "/dev/sda",
            }
        )
    return {
        "cluster": {
            "name": name,
            "talosVersion": talos_version,
            "kubernetesVersion": kubernetes_version,
            "vip": str(base + 10),
        },
        "network": {
            "interface": "eth0",
            "bootServer": str(base + 2),
            "subnet": str(net),
            "gateway": str(base + 1),
            "dns": [str(base + 1)],
            "ntp": [str(base + 1)],
        },
        "nodes": out_nodes,
        "platform": {
            "metallb": {
                "pools": [{"name": "lb", "addresses": [f"{base + 100}-{base + 150}"]}],
            }
        },
    }
