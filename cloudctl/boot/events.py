"""Progress events of the network-boot servers (DHCP, TFTP, HTTP).

Every server reports what it did through a callback ``on_event(BootEvent)``. The boot service
turns them into the per-node phase table and into JSON lines (``to_json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

EVENT_KINDS: frozenset[str] = frozenset(
    {
        "dhcp-offer",
        "dhcp-ack",
        "dhcp-nak",
        "dhcp-release",
        "dhcp-decline",
        "tftp-sent",
        "tftp-error",
        "http-sent",
        "http-error",
        "ra-sent",
    }
)


@dataclass(frozen=True)
class BootEvent:
    """One thing a boot server did for a client.

    ``kind`` is one of ``EVENT_KINDS``; ``mac`` is lower-case colon form when the server knows
    it; ``client`` is ``ip:port`` of the peer; ``path`` the file or URL path served; ``size`` the
    bytes sent; ``at`` is ``time.time()``; ``detail`` a short human-readable note.
    """

    kind: str
    mac: str | None
    client: str
    path: str | None = None
    size: int | None = None
    at: float = 0.0
    detail: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


EventSink = Callable[[BootEvent], None]
OnEvent = EventSink
"""Alias used by the TFTP/HTTP servers."""
