"""The boot service's IPv6 router-advertisement responder on a real segment (root): a client
namespace solicits with a raw ICMPv6 socket and gets the quiet advertisement (hop limit 255,
link-local source, lifetime 0, no prefixes); once another router advertises, it stays quiet."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from netns import Lab, LoopInNetns, entered_netns, require_root

from cloudctl.boot.ndp import RouterAdvertiser
from cloudctl.boot.ndp_proto import ALL_NODES, ALL_ROUTERS, Advertisement, decode

pytestmark = pytest.mark.root
RS = bytes([133, 0, 0, 0, 0, 0, 0, 0])


def _quiet(host) -> None:
    """The namespace's own kernel solicits routers after DAD (and again every few seconds on
    current kernels); those solicitations would be answered too and counted as the test's."""
    host.run(["sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/eth0/router_solicitations"])


def _ready(host) -> None:
    """Wait for the link-local address to leave DAD (tentative addresses cannot send)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = host.run(["ip", "-6", "addr", "show", "dev", "eth0"], check=False)
        if "fe80::" in out and "tentative" not in out:
            return
        time.sleep(0.1)
    pytest.skip(f"no usable IPv6 link-local address in {host.ns} (IPv6 disabled here?)")


def _icmp6(ns: str) -> socket.socket:
    with entered_netns(ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    s.settimeout(0.2)
    return s


def _advertisements(s: socket.socket, wait: float) -> list[tuple[Advertisement, str, int]]:
    out = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            data, anc, _flags, addr = s.recvmsg(2048, socket.CMSG_SPACE(4))
        except TimeoutError:
            continue
        msg = decode(data)
        if isinstance(msg, Advertisement):
            hops = next((struct.unpack("@i", d)[0] for lvl, kind, d in anc
                         if lvl == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT), -1)
            out.append((msg, str(addr[0]), hops))
    return out


def test_solicitations_get_a_quiet_advertisement_until_a_router_speaks() -> None:
    require_root("network namespaces, raw ICMPv6 sockets")
    with Lab("ra") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cli", mac="52:54:00:10:00:11")
        rtr = lab.add_host("rtr", mac="52:54:00:99:00:01")
        for h in (srv, cli, rtr):
            _quiet(h)
        for h in (srv, cli, rtr):
            _ready(h)
        events = []
        with LoopInNetns(srv.ns) as loop:
            ra = RouterAdvertiser("eth0", on_event=events.append)
            loop.call(ra.start())
            try:
                assert ra.sock is not None, "the responder did not start"
                ifindex = int(cli.run(["cat", "/sys/class/net/eth0/ifindex"]).strip())
                client = _icmp6(cli.ns)
                client.sendto(RS, (ALL_ROUTERS, 0, 0, ifindex))
                got = _advertisements(client, 2.0)
                assert got, "no advertisement answered the solicitation"
                msg, source, hops = got[0]
                assert msg == Advertisement(0, False, False, srv.mac)
                assert source.startswith("fe80::") and hops == 255
                assert [e.kind for e in events] == ["ra-sent"]
                # a real router advertises (lifetime 1800): the responder falls silent
                router = _icmp6(rtr.ns)
                rtr_if = int(rtr.run(["cat", "/sys/class/net/eth0/ifindex"]).strip())
                real = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + \
                    bytes([1, 1]) + bytes.fromhex(rtr.mac.replace(":", ""))
                router.sendto(real, (ALL_NODES, 0, 0, rtr_if))
                time.sleep(0.5)
                client.sendto(RS, (ALL_ROUTERS, 0, 0, ifindex))
                later = _advertisements(client, 1.5)
                assert all(m.router_lifetime == 1800 for m, _, _ in later), later
                assert ra.policy is not None and ra.policy.other_router == rtr.mac
                assert ra.sent == 1
            finally:
                loop.call(ra.stop())
