"""Rogue-DHCP probe: is another DHCP server answering on the provisioning interface?

Before serving in full mode the boot service broadcasts a DHCPDISCOVER from the interface (an
Ethernet frame on an AF_PACKET socket, so no UDP port is taken from a local client) and collects
OFFERs for a few seconds on the same socket, behind a kernel BPF filter for UDP port 68. Scapy
only builds the frame and parses the replies.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import socket
import struct
import time
from dataclasses import dataclass

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from ...errors import EnvironmentNotReady
from . import codec
from .codec import DhcpDecodeError, DhcpMessage

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
SIOCGIFHWADDR = 0x8927

# classic BPF: IPv4, UDP, not a fragment, destination port 68 -> accept
_BPF_UDP_DPORT_68 = [
    (0x28, 0, 0, 12),
    (0x15, 0, 8, 0x0800),
    (0x30, 0, 0, 23),
    (0x15, 0, 6, 17),
    (0x28, 0, 0, 20),
    (0x45, 4, 0, 0x1FFF),
    (0xB1, 0, 0, 14),
    (0x48, 0, 0, 16),
    (0x15, 0, 1, 68),
    (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0),
]


@dataclass(frozen=True)
class DhcpServerSeen:
    """One other DHCP server that offered an address to the probe."""

    server_id: str | None
    ip: str
    mac: str
    offered: str

    def __str__(self) -> str:
        sid = ""
        if self.server_id and self.server_id != self.ip:
            sid = f" (server id {self.server_id})"
        return f"{self.ip}{sid} at {self.mac} offered {self.offered}"


def interface_mac(interface: str) -> str:
    """MAC of ``interface`` in the caller's network namespace (SIOCGIFHWADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            res = fcntl.ioctl(
                sock.fileno(), SIOCGIFHWADDR, struct.pack("256s", interface.encode()[:15])
            )
        except OSError:
            raise EnvironmentNotReady(f"interface {interface!r} does not exist") from None
    return ":".join(f"{b:02x}" for b in res[18:24])


def discover_message(mac: str, xid: int) -> DhcpMessage:
    """The probe's DISCOVER: broadcast flag set so servers answer by broadcast."""
    return DhcpMessage(
        op=codec.BOOTREQUEST,
        xid=xid,
        flags=codec.BROADCAST_FLAG,
        chaddr=codec.mac_bytes(mac).ljust(16, b"\x00"),
        options=(
            (codec.OPT_MESSAGE_TYPE, bytes([codec.DISCOVER])),
            (codec.OPT_CLIENT_ID, b"\x01" + codec.mac_bytes(mac)),
            (codec.OPT_PARAM_REQUEST, bytes([1, 3, 6, 54])),
            (codec.OPT_VENDOR_CLASS, b"cloudctl-probe"),
        ),
    )


def discover_frame(mac: str, xid: int) -> bytes:
    payload = codec.encode(discover_message(mac, xid), pad_to=300)
    frame = (
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255", ttl=64)
        / UDP(sport=68, dport=67)
        / payload
    )
    return bytes(frame)


def parse_offer(frame: bytes, xid: int) -> DhcpServerSeen | None:
    """An OFFER answering the probe ``xid``, or None for any other frame."""
    try:
        eth = Ether(frame)
        udp = eth.getlayer(UDP)
        ip = eth.getlayer(IP)
        if udp is None or ip is None or udp.dport != 68:
            return None
        msg = codec.decode(bytes(udp.payload), source=f"frame from {eth.src}")
    except DhcpDecodeError:
        return None
    except Exception:
        return None
    if msg.op != codec.BOOTREPLY or msg.xid != xid or msg.message_type != codec.OFFER:
        return None
    sid = msg.server_id
    return DhcpServerSeen(
        server_id=str(sid) if sid else None,
        ip=str(ip.src),
        mac=str(eth.src),
        offered=str(msg.yiaddr),
    )


def _attach_filter(sock: socket.socket) -> None:
    code = b"".join(struct.pack("HBBI", *ins) for ins in _BPF_UDP_DPORT_68)
    buf = ctypes.create_string_buffer(code)
    prog = struct.pack("HL", len(_BPF_UDP_DPORT_68), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


def _open(interface: str) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    except PermissionError:
        raise EnvironmentNotReady("the rogue-DHCP probe needs root or CAP_NET_RAW") from None
    try:
        _attach_filter(sock)
        sock.bind((interface, ETH_P_IP))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise EnvironmentNotReady(f"rogue-DHCP probe on {interface!r}: {exc.strerror}") from None
    return sock


async def probe(interface: str, *, wait: float = 3.0, attempts: int = 2) -> list[DhcpServerSeen]:
    """Broadcast DISCOVERs from ``interface`` for ``wait`` s; return the servers that offered."""
    mac = interface_mac(interface)
    xid = int.from_bytes(os.urandom(4), "big")
    loop = asyncio.get_running_loop()
    sock = _open(interface)
    seen: dict[tuple[str, str], DhcpServerSeen] = {}
    try:
        frame = discover_frame(mac, xid)
        deadline = time.monotonic() + wait
        resend_every = wait / max(attempts, 1)
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_send:
                await loop.sock_sendall(sock, frame)
                next_send = now + resend_every
            try:
                data = await asyncio.wait_for(
                    loop.sock_recv(sock, 65535), timeout=min(deadline, next_send) - now
                )
            except TimeoutError:
                continue
            offer = parse_offer(data, xid)
            if offer is not None:
                seen.setdefault((offer.ip, offer.mac), offer)
    finally:
        sock.close()
    return list(seen.values())


async def ensure_no_other_server(
    interface: str, *, wait: float = 3.0, force: bool = False
) -> list[DhcpServerSeen]:
    """Refuse (EnvironmentNotReady) if another DHCP server answers, unless ``force``."""
    servers = await probe(interface, wait=wait)
    if servers and not force:
        names = "; ".join(str(s) for s in servers)
        raise EnvironmentNotReady(
            f"another DHCP server answers on {interface}: {names}. Two servers on one segment "
            "hand out conflicting addresses: stop it, use network.dhcp.mode: proxy, or --force"
        )
    return servers
