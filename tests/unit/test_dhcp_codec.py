"""DHCP codec: real captured requests round-trip byte for byte through both codecs (the lean
struct codec of the hot path and scapy's reference codec), which agree; accessors read them."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from cloudctl.boot.dhcp import codec
from cloudctl.boot.dhcp.codec import (
    DhcpDecodeError,
    DhcpMessage,
    decode,
    encode,
    scapy_decode,
    scapy_encode,
)
from cloudctl.boot.dhcp.config import DhcpConfig, Reservation
from cloudctl.boot.dhcp.policy import LeaseState, boot_choice, decide
from cloudctl.boot.malformed import MalformedDhcp, MalformedPacket

DATA = Path(__file__).resolve().parent.parent / "data" / "dhcp"
CAPTURES = sorted(DATA.glob("*.bin"))
IP = ipaddress.IPv4Address


def test_captures_are_present():
    names = {p.stem for p in CAPTURES}
    for client in ("udhcpc", "dhclient", "ipxe-rom-bios", "ovmf", "ipxe-snponly"):
        assert {f"{client}-discover", f"{client}-request"} <= names


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_captured_request_round_trips(path):
    raw = path.read_bytes()
    msg = decode(raw, source=path.name)
    assert encode(msg) == raw
    # scapy's reference codec reads the same message and writes the same bytes
    assert scapy_decode(raw, source=path.name) == msg
    assert scapy_encode(msg) == raw
    assert msg.op == codec.BOOTREQUEST and msg.mac is not None
    assert msg.type_name == path.stem.rsplit("-", 1)[1].upper()
    assert msg.tail.startswith(b"\xff")


def load(name: str) -> DhcpMessage:
    return decode((DATA / f"{name}.bin").read_bytes())


def test_ipxe_rom_request_fields():
    msg = load("ipxe-rom-bios-request")
    assert msg.mac == "52:54:00:10:00:31"
    assert msg.client_arch == (0,)
    assert msg.vendor_class == b"PXEClient:Arch:00000:UNDI:002001"
    assert msg.user_class == b"iPXE"  # plain string, not RFC 3004 length-prefixed
    assert msg.option(codec.OPT_IPXE_ENCAP) is not None and msg.is_ipxe
    assert msg.server_id is not None and msg.requested_ip is not None
    assert len(msg.option(codec.OPT_CLIENT_UUID) or b"") == 17


def test_ovmf_request_fields():
    msg = load("ovmf-discover")
    assert msg.client_arch == (7,) and msg.is_pxe and not msg.is_ipxe
    assert msg.vendor_class.startswith(b"PXEClient:Arch:00007")


def test_plain_clients_are_not_pxe():
    for name in ("udhcpc-discover", "dhclient-discover"):
        msg = load(name)
        assert not msg.is_pxe and not msg.is_ipxe and msg.client_arch == ()


CFG = DhcpConfig(
    mode="full",
    interface="eth0",
    server_ip=IP("10.20.0.2"),
    subnet=ipaddress.IPv4Network("10.20.0.0/24"),
    router=IP("10.20.0.1"),
    reservations={
        m: Reservation(m, IP(f"10.20.0.{i}"), f"n{i}")
        for i, m in (
            (11, "52:54:00:10:00:11"),
            (21, "52:54:00:10:00:21"),
            (31, "52:54:00:10:00:31"),
            (32, "52:54:00:10:00:32"),
        )
    },
)


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("udhcpc-discover", None),
        ("dhclient-discover", None),
        ("ipxe-rom-bios-discover", "http://10.20.0.2:8080/ipxe/52-54-00-10-00-31.ipxe"),
        ("ovmf-discover", "snponly.efi"),
        ("ipxe-snponly-discover", "http://10.20.0.2:8080/ipxe/52-54-00-10-00-32.ipxe"),
    ],
)
def test_captured_clients_get_the_right_boot_file(name, file):
    msg = load(name)
    choice = boot_choice(msg, CFG)
    assert (choice.file if choice else None) == file
    d = decide(msg, CFG, LeaseState(), 0.0)
    assert d.event == "dhcp-offer" and d.reply is not None
    wire = encode(d.reply, pad_to=300)
    assert len(wire) >= 300
    back = decode(wire)
    assert back.op == codec.BOOTREPLY and back.xid == msg.xid and back.chaddr == msg.chaddr
    assert back.message_type == codec.OFFER and back.server_id == IP("10.20.0.2")
    assert back.bootfile == (file or "")


def test_reply_encoding_carries_header_fields():
    msg = DhcpMessage(
        op=codec.BOOTREPLY,
        xid=0xDEADBEEF,
        flags=codec.BROADCAST_FLAG,
        yiaddr=IP("10.0.0.5"),
        siaddr=IP("10.0.0.2"),
        giaddr=IP("10.0.0.1"),
        chaddr=bytes.fromhex("525400aabbcc").ljust(16, b"\0"),
        file=b"undionly.kpxe",
        options=((53, b"\x02"), (54, IP("10.0.0.2").packed), (43, b"\x06\x01\x08\xff")),
    )
    wire = encode(msg, pad_to=300)
    assert len(wire) == 300
    assert wire[4:8] == bytes.fromhex("deadbeef")
    assert wire[10:12] == b"\x80\x00"
    assert wire[16:20] == IP("10.0.0.5").packed and wire[20:24] == IP("10.0.0.2").packed
    assert wire[24:28] == IP("10.0.0.1").packed
    assert wire[108:121] == b"undionly.kpxe"
    assert wire[236:240] == codec.MAGIC
    assert wire[240:243] == b"\x35\x01\x02"
    back = decode(wire)
    assert back.options == msg.options and back.file.rstrip(b"\0") == b"undionly.kpxe"


def test_accessors():
    m = DhcpMessage(
        op=1,
        xid=1,
        options=(
            (93, b"\x00\x10\x00\x07"),
            (77, b"\x04iPXE"),
            (55, b"\x01\x03"),
            (51, b"\x00\x00\x0e\x10"),
        ),
    )
    assert m.client_arch == (16, 7)
    assert m.is_ipxe  # RFC 3004 form is recognised too
    assert m.param_request == (1, 3) and m.lease_time == 3600
    assert DhcpMessage(op=1, xid=1).type_name == "BOOTP"
    assert DhcpMessage(op=1, xid=1, htype=6).mac is None


@pytest.mark.parametrize("impl", [decode, scapy_decode], ids=["lean", "scapy"])
@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "shorter than a DHCP message"),
        (b"\x01" * 239, "shorter than a DHCP message"),
        (b"\x01" + b"\0" * 239, "no DHCP magic cookie"),
        (b"\x03" + b"\0" * 235 + codec.MAGIC + b"\xff", "neither request nor reply"),
    ],
)
def test_malformed_datagrams_raise_naming_the_packet(impl, data, problem):
    with pytest.raises(DhcpDecodeError, match=problem) as err:
        impl(data, source="datagram from 10.0.0.9:68")
    assert "10.0.0.9:68" in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("impl", [decode, scapy_decode], ids=["lean", "scapy"])
@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\x01" + b"\0" * 239, "magic cookie"),
        (b"\x03" + b"\0" * 235 + codec.MAGIC + b"\xff", "op"),
        (b"\x01" * 10, None),
    ],
)
def test_decode_errors_are_the_dhcp_branch_of_the_malformed_tree(impl, data, field):
    with pytest.raises(MalformedPacket) as err:
        impl(data, source="datagram from 10.0.0.9:68")
    assert type(err.value) is MalformedDhcp and DhcpDecodeError is MalformedDhcp
    assert isinstance(err.value, ValueError)
    assert err.value.packet == "datagram from 10.0.0.9:68" and err.value.field == field
    where = f"datagram from 10.0.0.9:68 {field}" if field else "datagram from 10.0.0.9:68"
    assert str(err.value) == f"dhcp: invalid: {where}: {err.value.problem}"


def test_truncated_option_is_kept_verbatim():
    raw = encode(DhcpMessage(op=1, xid=7, options=((53, b"\x01"),), tail=b""))
    raw += b"\x3d\x10\x01"  # client-id claiming 16 bytes, 1 present
    msg = decode(raw)
    assert msg.message_type == codec.DISCOVER
    assert encode(msg) == raw
    assert scapy_decode(raw) == msg and scapy_encode(msg) == raw


def test_replies_agree_between_codecs():
    """Every reply the policy builds for the captures encodes identically with both codecs."""
    for path in CAPTURES:
        d = decide(decode(path.read_bytes()), CFG, LeaseState(), 0.0)
        assert d.reply is not None
        assert encode(d.reply, pad_to=300) == scapy_encode(d.reply, pad_to=300)
        assert scapy_decode(encode(d.reply)) == d.reply


def test_lean_codec_is_the_fast_one():
    """The reason the hot path does not use scapy (numbers in codec.py's docstring)."""
    import time

    raw = (DATA / "ovmf-discover.bin").read_bytes()
    msg = decode(raw)

    def per_call(fn, arg, n=300):
        t = time.perf_counter()
        for _ in range(n):
            fn(arg)
        return (time.perf_counter() - t) / n

    lean = per_call(decode, raw) + per_call(encode, msg)
    ref = per_call(scapy_decode, raw) + per_call(scapy_encode, msg)
    print(f"\ncodec per message: lean {lean * 1e6:.0f} us, scapy {ref * 1e6:.0f} us")
    assert lean * 5 < ref


def _rebuilt(msg: DhcpMessage) -> DhcpMessage:
    """``msg`` through the dataclass constructor (__post_init__), field by field."""
    names = [f.name for f in dataclasses.fields(DhcpMessage) if f.name != "_index"]
    return DhcpMessage(**{name: getattr(msg, name) for name in names})


def test_fast_constructors_build_what_the_dataclass_builds():
    """decode and the policy's replies skip __post_init__: same fields, same option index, same
    accessors and bytes as a message built the ordinary way."""
    replies = [decide(decode(p.read_bytes()), CFG, LeaseState(), 0.0).reply for p in CAPTURES]
    msgs = [decode(p.read_bytes()) for p in CAPTURES] + [r for r in replies if r is not None]
    assert len(msgs) == 2 * len(CAPTURES)
    for msg in msgs:
        slow = _rebuilt(msg)
        assert msg == slow and msg._index == slow._index
        for name in ("mac", "message_type", "requested_ip", "server_id", "bootfile", "is_pxe"):
            assert getattr(msg, name) == getattr(slow, name), name
        assert encode(msg, pad_to=300) == encode(slow, pad_to=300)
    # a repeated option: the first value is the one read, as in __post_init__
    twice = encode(DhcpMessage(op=1, xid=3, options=((53, b"\x01"), (53, b"\x03"))))
    assert decode(twice).message_type == codec.DISCOVER == _rebuilt(decode(twice)).message_type


def test_encode_option_cache_is_by_value():
    """Encoded option lists are reused by value: equal lists encode alike, different values
    never share bytes, and unhashable values (bytearray) still encode."""
    a = DhcpMessage(op=2, xid=1, options=((53, b"\x02"), (12, b"node-a")))
    b = DhcpMessage(op=2, xid=1, options=((53, b"\x02"), (12, b"node-b")))
    assert encode(a) != encode(b)
    assert encode(a) == encode(DhcpMessage(op=2, xid=1, options=((53, b"\x02"), (12, b"node-a"))))
    assert encode(a) == scapy_encode(a) and encode(b) == scapy_encode(b)
    c = DhcpMessage(op=2, xid=1, options=((53, b"\x02"), (12, bytearray(b"node-a"))))  # type: ignore[arg-type]
    assert encode(c) == encode(a)
    with pytest.raises(ValueError, match="option 12"):
        encode(DhcpMessage(op=2, xid=1, options=((12, b"x" * 256),)))
