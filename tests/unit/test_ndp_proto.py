"""The router-advertisement core: what a PXE client's solicitation looks like, what we answer."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet6 import (
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
)

from cloudctl.boot.ndp_proto import (
    Advertisement,
    NdpDecodeError,
    NdpPolicy,
    Solicitation,
    decode,
    encode_quiet_advertisement,
)

MAC = "52:54:00:aa:bb:cc"


def test_solicitation_from_scapy_with_and_without_lladdr() -> None:
    rs = bytes(ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr="52:54:00:10:00:11"))
    assert decode(rs) == Solicitation("52:54:00:10:00:11")
    assert decode(bytes(ICMPv6ND_RS())) == Solicitation(None)


def test_our_advertisement_announces_nothing_and_scapy_agrees() -> None:
    data = encode_quiet_advertisement(MAC)
    ra = ICMPv6ND_RA(data)
    assert ra.type == 134 and ra.code == 0
    assert ra.routerlifetime == 0 and ra.M == 0 and ra.O == 0
    assert ra[ICMPv6NDOptSrcLLAddr].lladdr == MAC
    assert not ra.haslayer(ICMPv6NDOptPrefixInfo)
    assert decode(data) == Advertisement(0, False, False, MAC)


def test_malformed_messages_are_errors() -> None:
    with pytest.raises(NdpDecodeError):
        decode(b"\x85")
    with pytest.raises(NdpDecodeError, match="length 0"):
        decode(bytes([133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(NdpDecodeError, match="past the end"):
        decode(bytes([133, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0]))
    assert decode(struct.pack("!BBH", 128, 0, 0) + b"ping") is None  # echo request


def test_policy_stays_silent_once_a_real_router_advertises() -> None:
    policy = NdpPolicy(MAC)
    assert policy.on_message(Solicitation(None), "fe80::1") is True
    # our own RA (looped back) and a zero-lifetime one do not count as a router
    assert policy.on_message(Advertisement(0, False, False, MAC), "fe80::2") is False
    assert policy.on_message(Advertisement(0, False, False, "52:54:00:00:00:09"),
                             "fe80::9") is False
    assert policy.on_message(Solicitation(None), "fe80::1") is True
    real = ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptSrcLLAddr(lladdr="00:11:22:33:44:55")
    assert policy.on_message(decode(bytes(real)), "fe80::a") is False
    assert policy.other_router == "00:11:22:33:44:55"
    assert policy.on_message(Solicitation(None), "fe80::1") is False
