"""IPv6 router solicitations and the advertisement that ends a PXE client's wait. Sans-IO.

iPXE's default autoboot configures IPv6 and IPv4 together and waits for a router
advertisement (about 13 s on a segment without an IPv6 router) before it goes on. An RA that
announces nothing — router lifetime 0 ("not a default router", RFC 4861 §4.2), no prefixes,
neither Managed nor Other flag — ends that wait at once and configures nothing: the client keeps
its link-local address only, exactly what it has without any RA. Hosts on a segment that has a
real router are not affected by it (a zero lifetime never becomes a default route), and the
responder stays silent once it has seen another router's advertisement (``NdpPolicy``).

Only the ICMPv6 message body is built and parsed here (the kernel adds the IPv6 header and
the checksum for raw ICMPv6 sockets).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
OPT_SOURCE_LINK_ADDRESS = 1
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
HOP_LIMIT = 255
"""RFC 4861 §6.1: receivers drop NDP messages whose hop limit is not 255."""


@dataclass(frozen=True)
class Solicitation:
    source_mac: str | None
    """The source link-layer address option, lower-case colon form (absent from ::)."""


@dataclass(frozen=True)
class Advertisement:
    router_lifetime: int
    managed: bool
    other: bool
    source_mac: str | None


class NdpDecodeError(ValueError):
    pass


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _options(data: bytes, start: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = start
    while i + 2 <= len(data):
        kind, units = data[i], data[i + 1]
        if units == 0:
            raise NdpDecodeError("option with length 0 (RFC 4861 §4.6: drop the message)")
        end = i + 8 * units
        if end > len(data):
            raise NdpDecodeError(f"option type {kind} runs past the end of the message")
        out.setdefault(kind, data[i + 2:end])
        i = end
    return out


def decode(data: bytes) -> Solicitation | Advertisement | None:
    """A router solicitation or advertisement, None for other ICMPv6 types; NdpDecodeError
    for a malformed one."""
    if len(data) < 4:
        raise NdpDecodeError(f"ICMPv6 message of {len(data)} bytes")
    kind, code = data[0], data[1]
    if kind == ROUTER_SOLICITATION:
        if code != 0 or len(data) < 8:
            raise NdpDecodeError("router solicitation with code != 0 or shorter than 8 bytes")
        lladdr = _options(data, 8).get(OPT_SOURCE_LINK_ADDRESS)
        return Solicitation(_mac(lladdr[:6]) if lladdr and len(lladdr) >= 6 else None)
    if kind == ROUTER_ADVERTISEMENT:
        if code != 0 or len(data) < 16:
            raise NdpDecodeError("router advertisement with code != 0 or shorter than 16 bytes")
        _hops, flags, lifetime = struct.unpack_from("!BBH", data, 4)
        lladdr = _options(data, 16).get(OPT_SOURCE_LINK_ADDRESS)
        return Advertisement(lifetime, bool(flags & 0x80), bool(flags & 0x40),
                             _mac(lladdr[:6]) if lladdr and len(lladdr) >= 6 else None)
    return None


def encode_quiet_advertisement(mac: str) -> bytes:
    """An RA with router lifetime 0, no prefixes, M=O=0, and our link-layer address."""
    raw_mac = bytes(int(b, 16) for b in mac.split(":"))
    if len(raw_mac) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    header = struct.pack("!BBHBBHII", ROUTER_ADVERTISEMENT, 0, 0, 0, 0, 0, 0, 0)
    option = struct.pack("!BB", OPT_SOURCE_LINK_ADDRESS, 1) + raw_mac
    return header + option


@dataclass
class NdpPolicy:
    """Answer solicitations unless another router advertises on the segment."""

    own_mac: str
    other_router: str | None = None
    """The link-layer address (or the IPv6 source) of another router seen advertising."""

    def on_message(self, msg: Solicitation | Advertisement | None, source: str) -> bool:
        """Whether to send our advertisement in answer to ``msg`` from ``source``."""
        if isinstance(msg, Advertisement):
            if (msg.source_mac or "").lower() != self.own_mac.lower() and \
                    msg.router_lifetime > 0 and self.other_router is None:
                self.other_router = msg.source_mac or source
            return False
        return isinstance(msg, Solicitation) and self.other_router is None
