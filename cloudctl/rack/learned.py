"""Addresses nodes were seen using while they network-booted (pure).

In proxy-DHCP mode another server hands out the addresses, so the inventory IPs may not be
where the booted nodes are. The boot service's HTTP and TFTP requests come from the address
the node got; those whose MAC is known (per-MAC iPXE script and boot-file URLs) tell which node
has which address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..boot.events import BootEvent
from ..inventory.models import Inventory

LEARNING_KINDS = ("http-sent", "tftp-sent")


def _client_ip(client: str) -> str | None:
    host = client.rsplit(":", 1)[0].strip("[]")
    if not host or host in ("0.0.0.0", "255.255.255.255"):
        return None
    return host


def learn_addresses(
    inv: Inventory, events: Iterable[BootEvent], known: Mapping[str, str] | None = None
) -> dict[str, str]:
    """node name -> the address its latest boot request came from (starting from ``known``)."""
    by_mac = {mac.lower(): n.name for n in inv.nodes for mac in n.macs}
    out = dict(known or {})
    for event in events:
        if event.kind not in LEARNING_KINDS or event.mac is None:
            continue
        name = by_mac.get(event.mac.lower())
        ip = _client_ip(event.client)
        if name is not None and ip is not None:
            out[name] = ip
    return out
