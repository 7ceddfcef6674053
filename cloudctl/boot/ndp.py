"""The router-advertisement responder of the boot service (I/O; the protocol is ndp_proto).

A raw ICMPv6 socket on the provisioning interface joins ff02::2 (all routers), reads router
solicitations and advertisements, and answers solicitations with ``ndp_proto``'s quiet
advertisement to ff02::1, sent from the interface's link-local address with hop limit 255 (the
kernel adds the IPv6 header and checksum). Solicitations arriving together (a rack powering
on) are answered by one advertisement per ``MIN_INTERVAL``. When the interface has no IPv6
(disabled), the responder logs why and does nothing: network boot works without it, only
iPXE's IPv6 wait is not shortened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time

from ..errors import EnvironmentNotReady
from .dhcp.probe import interface_mac
from .events import BootEvent, EventSink
from .ndp_proto import (
    ALL_NODES,
    ALL_ROUTERS,
    HOP_LIMIT,
    NdpDecodeError,
    NdpPolicy,
    Solicitation,
    decode,
    encode_quiet_advertisement,
)

log = logging.getLogger("cloudctl.boot.ndp")
MIN_INTERVAL = 0.2
"""Seconds between two advertisements (solicitations in between share the next one)."""


class RouterAdvertiser:
    """Answers router solicitations on ``interface`` while the boot service runs."""

    def __init__(self, interface: str, *, on_event: EventSink | None = None) -> None:
        self.interface = interface
        self.on_event = on_event
        self.sock: socket.socket | None = None
        self.policy: NdpPolicy | None = None
        self.sent = 0
        self._last = 0.0
        self._pending: asyncio.TimerHandle | None = None
        self._solicitors: list[str] = []

    async def start(self) -> None:
        try:
            ifindex = socket.if_nametoindex(self.interface)
            self.policy = NdpPolicy(interface_mac(self.interface))
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        except (OSError, EnvironmentNotReady) as exc:
            log.warning("no IPv6 router advertisements on %s (%s): iPXE may wait for IPv6 "
                        "autoconfiguration", self.interface, exc)
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            self.interface.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            mreq = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) + struct.pack("@I", ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            log.warning("no IPv6 router advertisements on %s (%s): iPXE may wait for IPv6 "
                        "autoconfiguration", self.interface, exc)
            return
        self._ifindex = ifindex
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    async def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self.sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _readable(self) -> None:
        assert self.sock is not None and self.policy is not None
        for _ in range(64):
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("ICMPv6 receive failed: %s", exc)
                return
            source = str(addr[0])
            try:
                msg = decode(data)
            except NdpDecodeError as exc:
                log.debug("malformed NDP message from %s: %s", source, exc)
                continue
            had_router = self.policy.other_router
            if self.policy.on_message(msg, source):
                assert isinstance(msg, Solicitation)
                self._solicitors.append(msg.source_mac or source)
                self._schedule()
            elif had_router is None and self.policy.other_router is not None:
                log.info("another IPv6 router advertises on %s (%s): not answering router "
                         "solicitations", self.interface, self.policy.other_router)

    def _schedule(self) -> None:
        if self._pending is not None:
            return
        delay = max(0.0, self._last + MIN_INTERVAL - time.monotonic())
        self._pending = asyncio.get_running_loop().call_later(delay, self._send)

    def _send(self) -> None:
        self._pending = None
        if self.sock is None or self.policy is None:
            return
        solicitors, self._solicitors = self._solicitors, []
        try:
            self.sock.sendto(encode_quiet_advertisement(self.policy.own_mac),
                             (ALL_NODES, 0, 0, self._ifindex))
        except OSError as exc:
            log.warning("router advertisement on %s failed: %s", self.interface, exc)
            return
        self._last = time.monotonic()
        self.sent += 1
        if self.on_event is not None:
            for who in dict.fromkeys(solicitors):
                mac = who if ":" in who and len(who) == 17 else None
                self.on_event(BootEvent("ra-sent", mac, f"[{who}]" if mac is None else who,
                                        at=time.time(),
                                        detail="IPv6 router advertisement: nothing to "
                                               "configure (lifetime 0, no prefixes)"))
