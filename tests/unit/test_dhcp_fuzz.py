"""Fuzz: mutated DHCP datagrams through decode + policy (+ encode of any reply).

``test_mutated_datagrams`` pushes FUZZ_N (default 100,000; ``CLOUDCTL_FUZZ_N`` overrides)
deterministically mutated packets, seeded from the real captures in tests/data/dhcp/, through
the server path (lean codec + policy, all three modes). Nothing may raise except
``MalformedDhcp`` (alias ``DhcpDecodeError``; the DHCP branch of ``cloudctl.boot.malformed``);
every decodable datagram re-encodes to the same bytes; replies re-encode and decode; an address
is only ever given to an inventory MAC (or from the range), never in proxy mode. One datagram in
SCAPY_EVERY is also decoded by scapy's reference codec, which must accept and reject the same
datagrams and, where scapy reproduces the input, read the same message.
A hypothesis test covers structured option lists.
"""

from __future__ import annotations

import ipaddress
import os
import random
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudctl.boot.dhcp import codec
from cloudctl.boot.dhcp.codec import (
    DhcpMessage,
    decode,
    encode,
    scapy_decode,
    scapy_encode,
)
from cloudctl.boot.dhcp.config import DhcpConfig, Reservation
from cloudctl.boot.dhcp.policy import PXE_PORT, LeaseState, decide
from cloudctl.boot.malformed import MalformedDhcp

DATA = Path(__file__).resolve().parent.parent / "data" / "dhcp"
FUZZ_N = int(os.environ.get("CLOUDCTL_FUZZ_N", "100000"))
SCAPY_EVERY = 50
IP = ipaddress.IPv4Address

KNOWN = {
    m: Reservation(m, IP(f"10.20.0.{i}"), f"n{i}")
    for i, m in (
        (11, "52:54:00:10:00:11"),
        (21, "52:54:00:10:00:21"),
        (31, "52:54:00:10:00:31"),
        (32, "52:54:00:10:00:32"),
    )
}
BASE = dict(
    interface="eth0",
    server_ip=IP("10.20.0.2"),
    subnet=ipaddress.IPv4Network("10.20.0.0/24"),
    router=IP("10.20.0.1"),
    dns=(IP("10.20.0.1"),),
    reservations=KNOWN,
)
CONFIGS = [
    DhcpConfig(mode="full", **BASE),
    DhcpConfig(mode="full", dynamic_range=(IP("10.20.0.200"), IP("10.20.0.210")), **BASE),
    DhcpConfig(mode="proxy", **BASE),
]


def seeds() -> list[bytes]:
    out = [p.read_bytes() for p in sorted(DATA.glob("*.bin"))]
    assert out, "captures missing"
    # replies and odd-but-valid shapes too
    out.append(encode(DhcpMessage(op=2, xid=1, options=((53, b"\x02"), (54, b"\x0a\x14\x00\x02")))))
    out.append(encode(DhcpMessage(op=1, xid=2, options=((53, b"\x03"),), tail=b"")))
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.randrange(8)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # random byte, biased to the options area
            i = (
                rng.randrange(min(236, len(buf)), len(buf))
                if len(buf) > 240
                else rng.randrange(len(buf))
            )
            buf[i] = rng.randrange(256)
        elif op == 2:  # truncate
            del buf[rng.randrange(len(buf) + 1) :]
        elif op == 3:  # append garbage
            buf += rng.randbytes(rng.randrange(1, 64))
        elif op == 4 and len(buf) > 240:  # corrupt an option length
            i = rng.randrange(240, len(buf))
            buf[i] = rng.choice((0, 1, 2, 4, 16, 255))
        elif op == 5 and len(buf) >= 240:  # insert a random option after the cookie
            code = rng.choice((43, 50, 51, 53, 54, 55, 60, 61, 77, 93, 97, 175, rng.randrange(256)))
            val = rng.randbytes(rng.randrange(0, 20))
            buf[240:240] = bytes([code, len(val)]) + val
        elif op == 6:  # interesting header values
            field = rng.choice(((0, 1), (1, 1), (2, 1), (3, 1), (10, 2), (12, 4), (24, 4)))
            off, size = field
            if len(buf) >= off + size:
                buf[off : off + size] = rng.choice((b"\x00", b"\xff", b"\x01", b"\x02")) * size
        elif op == 7 and len(buf) > 241:  # message type byte (53 is usually first)
            buf[242 % len(buf)] = rng.randrange(0, 12)
    return bytes(buf)


def check_one(
    data: bytes, cfg: DhcpConfig, state: LeaseState, now: float, via: int, *, scapy: bool = False
) -> bool:
    try:
        msg = decode(data, source="fuzz")
    except MalformedDhcp as exc:
        assert exc.packet == "fuzz"
        if scapy:
            try:
                scapy_decode(data)
            except MalformedDhcp:
                return False
            raise AssertionError(
                f"scapy accepts what the lean codec rejects: {data.hex()}"
            ) from None
        return False
    assert encode(msg) == data
    if scapy:
        ref = scapy_decode(data)
        assert scapy_encode(ref) == data
        # scapy gives up on a known option with an impossible length (e.g. a 6-byte option 50)
        # and keeps the rest as raw bytes; the lean codec keeps reading TLVs. Otherwise equal.
        n = len(ref.options)
        assert ref.options == msg.options[:n], data.hex()
        if n == len(msg.options):
            assert ref == msg, data.hex()
    d = decide(msg, cfg, state, now, via=via, source=("10.20.0.99", 68))
    state.apply(d.update)
    if d.reply is not None:
        r = d.reply
        assert d.dest is not None
        if cfg.mode == "proxy":
            assert r.yiaddr == codec.ZERO
        elif r.yiaddr != codec.ZERO:
            mac = msg.mac
            assert mac is not None
            if mac in KNOWN:
                assert r.yiaddr == KNOWN[mac].ip
            else:
                assert cfg.in_range(r.yiaddr), (mac, r.yiaddr)
        back = decode(encode(r, pad_to=300))
        assert back.xid == msg.xid and back.chaddr == r.chaddr
    return True


def test_mutated_datagrams():
    rng = random.Random(20260126)
    pool = seeds()
    states = [LeaseState() for _ in CONFIGS]
    decoded = 0
    t0 = time.perf_counter()
    for i in range(FUZZ_N):
        data = mutate(rng, rng.choice(pool))
        k = i % len(CONFIGS)
        via = PXE_PORT if (k == 2 and i % 7 == 0) else 67
        scapy = i % SCAPY_EVERY == 0
        decoded += check_one(data, CONFIGS[k], states[k], float(i), via, scapy=scapy)
    elapsed = time.perf_counter() - t0
    print(
        f"\nfuzz: {FUZZ_N} datagrams, {decoded} decoded, {elapsed:.1f}s ({FUZZ_N / elapsed:.0f}/s)"
    )
    assert decoded > FUZZ_N // 10  # the mutations must mostly stay parseable to reach policy


options_st = st.lists(st.tuples(st.integers(1, 254), st.binary(max_size=40)), max_size=12)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    options=options_st,
    mac=st.sampled_from([*KNOWN, "02:00:00:00:00:01"]),
    mtype=st.integers(0, 10),
    ciaddr=st.sampled_from(["0.0.0.0", "10.20.0.11", "10.20.0.205", "192.168.0.1"]),
    giaddr=st.sampled_from(["0.0.0.0", "10.20.0.1", "172.16.0.1"]),
    cfg=st.sampled_from(CONFIGS),
)
def test_structured_requests(options, mac, mtype, ciaddr, giaddr, cfg):
    msg = DhcpMessage(
        op=1,
        xid=9,
        chaddr=codec.mac_bytes(mac).ljust(16, b"\0"),
        ciaddr=IP(ciaddr),
        giaddr=IP(giaddr),
        options=((53, bytes([mtype])), *options),
    )
    wire = encode(msg)
    assert decode(wire) == msg
    assert encode(decode(wire)) == wire
    check_one(wire, cfg, LeaseState(), 0.0, 67, scapy=True)
