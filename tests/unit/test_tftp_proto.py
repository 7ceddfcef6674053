"""TFTP protocol core (sans-IO): codec, option negotiation, lexical path policy, request
policy, read-transfer state machine. No sockets, no files (the file lookup under the root is
tested with the server, test_tftp_server.py)."""

from __future__ import annotations

import contextlib
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.boot import tftp_proto as tp
from cloudctl.boot.malformed import MalformedPacket, MalformedTftp
from cloudctl.boot.tftp_proto import (
    Ack,
    BytesSource,
    Data,
    Error,
    ErrorCode,
    Negotiated,
    OptionAck,
    ReadRequest,
    ReadTransfer,
    Request,
    State,
    TftpProtocolError,
    decode,
    encode_ack,
    encode_data,
    encode_error,
    encode_oack,
    encode_request,
    file_refused,
    handle_request,
    negotiate,
    safe_parts,
)

# --------------------------------------------------------------------------- codec


def test_request_round_trip_with_options() -> None:
    req = Request(tp.OP_RRQ, "undionly.kpxe", "octet", {"blksize": "1428", "tsize": "0"})
    wire = encode_request(req)
    assert wire == b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001428\x00tsize\x000\x00"
    assert decode(wire) == req


def test_decode_lowercases_mode_and_option_names() -> None:
    pkt = decode(b"\x00\x01f\x00OCTET\x00BlkSize\x00512\x00")
    assert isinstance(pkt, Request)
    assert pkt.mode == "octet" and pkt.options == {"blksize": "512"}


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (encode_data(7, b"abc"), Data(7, b"abc")),
        (encode_data(0x1_0000, b""), Data(0, b"")),  # wire number wraps
        (encode_ack(65535), Ack(65535)),
        (encode_error(1, "nope"), Error(1, "nope")),
        (encode_oack({"blksize": "1024"}), OptionAck({"blksize": "1024"})),
    ],
)
def test_packet_round_trips(packet: bytes, expected: object) -> None:
    assert decode(packet) == expected


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x00",
        b"\x00\x09xx",  # unknown opcode
        b"\x00\x01file\x00octet",  # not NUL terminated
        b"\x00\x01file\x00",  # no mode
        b"\x00\x01\x00octet\x00",  # empty name
        b"\x00\x01f\x00binary\x00",  # unknown mode
        b"\x00\x01f\x00octet\x00blksize\x00",  # option without value (odd count)
        b"\x00\x01f\x00octet\x00a\x001\x00A\x002\x00",  # duplicate option
        b"\x00\x01f\xff\x00octet\x00",  # non-ASCII
        b"\x00\x04\x00",  # short ACK
        b"\x00\x04\x00\x01\x00",  # long ACK
        b"\x00\x03\x00",  # short DATA
    ],
)
def test_malformed_packets_raise_malformed_tftp(wire: bytes) -> None:
    with pytest.raises(MalformedTftp) as exc:
        decode(wire)
    assert exc.value.code == ErrorCode.ILLEGAL_OPERATION
    assert isinstance(exc.value, MalformedPacket) and isinstance(exc.value, ValueError)
    assert str(exc.value) == f"tftp: invalid: {exc.value.detail}"


@pytest.mark.parametrize(
    ("wire", "detail"),
    [
        (b"\x00\x01f\x00binary\x00", "RRQ mode: unknown mode 'binary'"),
        (b"\x00\x02\x00octet\x00", "WRQ filename: empty"),
        (b"\x00\x01f\x00octet\x00a\x001\x00A\x002\x00", "RRQ option 'A': given twice"),
        (b"\x00\x01f\x00octet\x00blksize\x00", "RRQ option 'blksize': option without a value"),
        (b"\x00\x04\x00", "ACK: 3 bytes; an ACK is 4"),
        (b"\x00\x09xx", "datagram opcode: unknown opcode 9"),
    ],
)
def test_malformed_packet_errors_name_packet_and_field(wire: bytes, detail: str) -> None:
    with pytest.raises(MalformedTftp) as exc:
        decode(wire)
    assert exc.value.detail == detail


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=600))
def test_decode_never_crashes(data: bytes) -> None:
    with contextlib.suppress(MalformedTftp):
        decode(data)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=100))
def test_handle_request_never_crashes(data: bytes) -> None:
    d = handle_request(data)
    if isinstance(d, tp.Refused):
        assert decode(d.packet()) == Error(d.code, d.message)


# --------------------------------------------------------------------------- negotiation


def _neg(options: dict[str, str], size: int = 10_000) -> Negotiated:
    return negotiate(options, file_size=size, max_blksize=1468, default_timeout=1.0)


def test_no_options_means_no_oack() -> None:
    n = _neg({})
    assert n.oack == {} and n.blksize == 512 and n.windowsize == 1


def test_blksize_is_clamped_to_server_max() -> None:
    n = _neg({"blksize": "65464"})
    assert n.blksize == 1468 and n.oack == {"blksize": "1468"}


def test_invalid_and_unknown_options_are_left_out() -> None:
    n = _neg({"blksize": "7", "timeout": "0", "windowsize": "x", "multicast": "", "foo": "1"})
    assert n.oack == {} and n.blksize == 512 and n.windowsize == 1


def test_tsize_timeout_windowsize() -> None:
    n = _neg({"tsize": "0", "timeout": "3", "windowsize": "1000", "blksize": "1024"}, 123456)
    assert n.oack == {"tsize": "123456", "timeout": "3", "windowsize": "64", "blksize": "1024"}
    assert list(n.oack) == ["tsize", "timeout", "windowsize", "blksize"]  # client's order
    assert (n.blksize, n.timeout, n.windowsize) == (1024, 3.0, 64)


# --------------------------------------------------------------------------- path policy


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("undionly.kpxe", ("undionly.kpxe",)),
        ("/undionly.kpxe", ("undionly.kpxe",)),
        ("./undionly.kpxe", ("undionly.kpxe",)),
        ("sub/f.bin", ("sub", "f.bin")),
        ("sub\\f.bin", ("sub", "f.bin")),
        ("sub//./f.bin", ("sub", "f.bin")),
    ],
)
def test_allowed_names(name: str, parts: tuple[str, ...]) -> None:
    assert safe_parts(name) == parts


@pytest.mark.parametrize(
    "name",
    [
        "../secret",
        "sub/../../secret",
        "..\\secret",
        "//etc/passwd",
        "undionly.kpxe\0.txt",
        "..",
        "/",
        ".",
    ],
)
def test_escapes_are_access_violations(name: str) -> None:
    with pytest.raises(TftpProtocolError) as exc:
        safe_parts(name)
    assert exc.value.code == ErrorCode.ACCESS_VIOLATION


@settings(max_examples=800, deadline=None)
@given(st.text(alphabet="./\\ae%\0sctrub", min_size=1, max_size=24))
def test_safe_parts_never_climb(name: str) -> None:
    try:
        parts = safe_parts(name)
    except TftpProtocolError:
        return
    assert parts and all(p not in ("", ".", "..") and "/" not in p and "\\" not in p for p in parts)
    assert all("\0" not in p for p in parts)


# --------------------------------------------------------------------------- request policy


def test_write_request_is_refused() -> None:
    d = handle_request(b"\x00\x02x\x00octet\x00")
    assert isinstance(d, tp.Refused) and d.code == ErrorCode.ACCESS_VIOLATION
    assert decode(d.packet()) == Error(2, d.message)


def test_read_request_is_passed_on_with_checked_parts() -> None:
    d = handle_request(b"\x00\x01/efi/snponly.efi\x00octet\x00tsize\x000\x00")
    assert isinstance(d, ReadRequest)
    assert d.parts == ("efi", "snponly.efi") and d.filename == "/efi/snponly.efi"
    assert d.request.options == {"tsize": "0"} and not d.netascii


def test_escaping_name_is_refused_without_looking() -> None:
    d = handle_request(b"\x00\x01../etc/passwd\x00octet\x00")
    assert isinstance(d, tp.Refused) and d.code == ErrorCode.ACCESS_VIOLATION
    assert d.filename == "../etc/passwd"


def test_file_refused_maps_to_tftp_codes() -> None:
    read = handle_request(b"\x00\x01nope\x00octet\x00")
    assert isinstance(read, ReadRequest)
    assert file_refused(read, "'nope' not found", missing=True).code == ErrorCode.FILE_NOT_FOUND
    refused = file_refused(read, "'nope' leaves the root", missing=False)
    assert refused.code == ErrorCode.ACCESS_VIOLATION and refused.filename == "nope"


def test_non_request_on_listening_port_is_ignored() -> None:
    d = handle_request(encode_ack(1))
    assert isinstance(d, tp.Ignored)
    d = handle_request(b"\x00\x09")
    assert isinstance(d, tp.Refused) and d.code == ErrorCode.ILLEGAL_OPERATION
    assert d.message == "datagram opcode: unknown opcode 9"


def test_mail_mode_is_refused_and_netascii_flagged() -> None:
    d = handle_request(b"\x00\x01t.txt\x00mail\x00")
    assert isinstance(d, tp.Refused) and d.code == ErrorCode.ILLEGAL_OPERATION
    d = handle_request(b"\x00\x01t.txt\x00NetASCII\x00")
    assert isinstance(d, ReadRequest) and d.netascii
    assert tp.to_netascii(b"a\nb\rc") == b"a\r\nb\r\0c"


def test_malformed_ack_during_transfer_fails_naming_it() -> None:
    t = ReadTransfer(BytesSource(b"x" * 1000), Negotiated())
    t.start(0.0)
    out = t.receive(b"\x00\x04\x00", 0.1)
    assert out.finished and out.error == "ACK: 3 bytes; an ACK is 4"
    assert decode(out.send[0]) == Error(4, "ACK: 3 bytes; an ACK is 4")


# --------------------------------------------------------------------------- transfer


def _blocks(packets: list[bytes]) -> list[tuple[int, bytes]]:
    out = []
    for p in packets:
        pkt = decode(p)
        assert isinstance(pkt, Data), pkt
        out.append((pkt.block, pkt.payload))
    return out


def test_plain_transfer_with_short_last_block() -> None:
    t = ReadTransfer(BytesSource(b"x" * 1000), Negotiated())
    out = t.start(0.0)
    assert _blocks(out.send) == [(1, b"x" * 512)]
    out = t.receive(encode_ack(1), 0.1)
    assert _blocks(out.send) == [(2, b"x" * 488)]
    out = t.receive(encode_ack(2), 0.2)
    assert out.finished and out.error is None and out.send == [] and t.state is State.DONE


def test_exact_multiple_ends_with_empty_block() -> None:
    t = ReadTransfer(BytesSource(b"y" * 1024), Negotiated())
    t.start(0.0)
    t.receive(encode_ack(1), 0.0)
    out = t.receive(encode_ack(2), 0.0)
    assert _blocks(out.send) == [(3, b"")]
    assert t.receive(encode_ack(3), 0.0).finished


def test_empty_file_is_one_empty_block() -> None:
    t = ReadTransfer(BytesSource(b""), Negotiated())
    assert _blocks(t.start(0.0).send) == [(1, b"")]
    assert t.receive(encode_ack(1), 0.0).finished


def test_oack_then_ack0_starts_data() -> None:
    neg = _neg({"blksize": "1024", "tsize": "0"}, 3000)
    t = ReadTransfer(BytesSource(b"z" * 3000), neg)
    out = t.start(0.0)
    assert decode(out.send[0]) == OptionAck({"blksize": "1024", "tsize": "3000"})
    assert t.receive(encode_ack(5), 0.1).send == []  # stray ACK ignored while waiting
    out = t.receive(encode_ack(0), 0.2)
    assert _blocks(out.send) == [(1, b"z" * 1024)]


def test_oack_is_retransmitted_on_timeout() -> None:
    t = ReadTransfer(BytesSource(b"z"), _neg({"tsize": "0"}, 1))
    t.start(0.0)
    assert t.on_timer(0.5).send == []  # before the deadline
    assert decode(t.on_timer(1.0).send[0]) == OptionAck({"tsize": "1"})


def test_client_refusing_options_ends_transfer() -> None:
    t = ReadTransfer(BytesSource(b"z"), _neg({"tsize": "0"}, 1))
    t.start(0.0)
    out = t.receive(encode_error(8, "no thanks"), 0.1)
    assert out.finished and out.error and "8" in out.error and out.send == []


def test_duplicate_ack_does_not_trigger_resend_sorcerers_apprentice() -> None:
    t = ReadTransfer(BytesSource(b"a" * 2000), Negotiated())
    t.start(0.0)
    assert len(t.receive(encode_ack(1), 0.1).send) == 1  # block 2
    assert t.receive(encode_ack(1), 0.2).send == []  # duplicate ACK 1: nothing
    assert t.receive(encode_ack(1), 0.3).send == []
    assert _blocks(t.receive(encode_ack(2), 0.4).send) == [(3, b"a" * 512)]


def test_timeout_retransmits_then_gives_up() -> None:
    t = ReadTransfer(BytesSource(b"a" * 600), Negotiated(timeout=1.0), retries=2)
    t.start(0.0)
    assert t.deadline == 1.0
    assert _blocks(t.on_timer(1.0).send) == [(1, b"a" * 512)]
    assert _blocks(t.on_timer(2.0).send) == [(1, b"a" * 512)]
    out = t.on_timer(3.0)
    assert out.finished and out.error and "timed out" in out.error
    assert decode(out.send[0]) == Error(0, out.error)
    assert t.state is State.FAILED


def test_ack_resets_retry_budget() -> None:
    t = ReadTransfer(BytesSource(b"a" * 2000), Negotiated(timeout=1.0), retries=1)
    t.start(0.0)
    t.on_timer(1.0)  # one retransmission used
    t.receive(encode_ack(1), 1.5)
    assert not t.on_timer(2.6).finished  # budget restored by progress


def test_windowsize_sends_window_and_restarts_after_partial_ack() -> None:
    neg = Negotiated(blksize=8, windowsize=4, oack={"windowsize": "4"})
    t = ReadTransfer(BytesSource(bytes(range(80))), neg)  # 10 full blocks + empty 11th
    t.start(0.0)
    out = t.receive(encode_ack(0), 0.0)
    assert [b for b, _ in _blocks(out.send)] == [1, 2, 3, 4]
    out = t.receive(encode_ack(2), 0.1)  # client missed 3: window restarts at 3
    assert [b for b, _ in _blocks(out.send)] == [3, 4, 5, 6]
    out = t.receive(encode_ack(6), 0.2)
    assert [b for b, _ in _blocks(out.send)] == [7, 8, 9, 10]
    out = t.receive(encode_ack(10), 0.3)
    assert _blocks(out.send) == [(11, b"")]
    assert t.receive(encode_ack(11), 0.4).finished


def test_windowsize_duplicate_ack_resends_once_per_window() -> None:
    neg = Negotiated(blksize=8, windowsize=4)
    t = ReadTransfer(BytesSource(bytes(64)), neg)
    t.start(0.0)
    t.receive(encode_ack(4), 0.0)  # window 5..8 in flight
    assert [b for b, _ in _blocks(t.receive(encode_ack(4), 0.1).send)] == [5, 6, 7, 8]
    assert t.receive(encode_ack(4), 0.2).send == []  # not again: no apprentice cascade


def test_ack_older_than_window_is_ignored() -> None:
    t = ReadTransfer(BytesSource(bytes(100)), Negotiated(blksize=8, windowsize=2))
    t.start(0.0)
    t.receive(encode_ack(2), 0.0)
    t.receive(encode_ack(4), 0.0)
    assert t.receive(encode_ack(1), 0.0).send == []
    assert t.acked == 4


def test_non_ack_packet_is_an_illegal_operation() -> None:
    t = ReadTransfer(BytesSource(bytes(100)), Negotiated())
    t.start(0.0)
    out = t.receive(encode_data(1, b"x"), 0.0)
    assert out.finished and decode(out.send[0]) == Error(4, "only ACK expected on a read transfer")


def _run_client(
    t: ReadTransfer, *, loss: float, seed: int, window: int, oack: bool
) -> tuple[bytes, int]:
    """A simulated RFC 7440 client over a lossy link; returns (data, rounds)."""
    rng = random.Random(seed)
    now = 0.0
    got: list[bytes] = []
    expected = 1  # absolute block expected next
    inflight = t.start(now).send
    rounds = 0
    while True:
        rounds += 1
        assert rounds < 200_000, "transfer does not converge"
        delivered = [p for p in inflight if rng.random() >= loss]
        acks: list[int] = []
        if oack and any(decode(p).__class__ is OptionAck for p in delivered):
            acks.append(0)
        finished_client = False
        for p in delivered:
            pkt = decode(p)
            if isinstance(pkt, Data):
                if pkt.block == expected & 0xFFFF:
                    got.append(pkt.payload)
                    expected += 1
                    if len(pkt.payload) < t.blksize:
                        finished_client = True
                    if (expected - 1) % window == 0 or finished_client:
                        acks.append(expected - 1)
                else:
                    acks.append(expected - 1)  # out of order: ack last in-order block
        inflight = []
        for a in acks:
            if rng.random() >= loss:
                out = t.receive(encode_ack(a), now)
                inflight += out.send
                if out.finished:
                    return b"".join(got), rounds
        if not inflight:
            now = (t.deadline or now) + 0.001
            out = t.on_timer(now)
            assert not out.finished or out.error is None, out.error
            inflight = out.send


@pytest.mark.parametrize(("window", "loss"), [(1, 0.0), (1, 0.1), (8, 0.0), (8, 0.1)])
def test_lossy_transfer_reassembles(window: int, loss: float) -> None:
    data = os.urandom(8 * 400 + 5)
    neg = Negotiated(blksize=8, windowsize=window, oack={"windowsize": str(window)})
    t = ReadTransfer(BytesSource(data), neg, retries=1000)
    got, _ = _run_client(t, loss=loss, seed=window * 100 + int(loss * 10), window=window, oack=True)
    assert got == data


def test_block_number_rollover_past_65535() -> None:
    # 70,000 blocks of 8 bytes: wire numbers go ...65534, 65535, 0, 1, ...
    data = struct.pack("!I", 7) * (2 * 70_000) + b"end"
    t = ReadTransfer(BytesSource(data), Negotiated(blksize=8, windowsize=16))
    wire_numbers: list[int] = []
    got = bytearray()
    expected = 1
    out = t.start(0.0)
    while True:
        last = None
        for p in out.send:
            pkt = decode(p)
            assert isinstance(pkt, Data)
            wire_numbers.append(pkt.block)
            assert pkt.block == expected & 0xFFFF
            got += pkt.payload
            expected += 1
            last = pkt.block
        assert last is not None
        out = t.receive(encode_ack(last), 0.0)
        if out.finished:
            break
    assert bytes(got) == data
    i = wire_numbers.index(65535)
    assert wire_numbers[i + 1] == 0 and wire_numbers[i + 2] == 1
    assert t.state is State.DONE and t.acked == len(data) // 8 + 1


def test_error_on_listening_port_is_not_answered() -> None:
    d = handle_request(encode_error(0, "bye"))
    assert isinstance(d, tp.Ignored)


def test_tsize_with_non_numeric_value_still_reports_size() -> None:
    assert _neg({"tsize": "enable"}, 42).oack == {"tsize": "42"}


def test_in_memory_files_share_one_set_of_packets_across_transfers() -> None:
    """Every transfer of the same cached content sends the very same packet objects; block
    numbers wrap at 65536 and the file's last block is short (or empty)."""
    data = bytes(range(256)) * 300  # 76,800 bytes
    source = BytesSource(data)
    a = ReadTransfer(source, Negotiated(blksize=8))
    b = ReadTransfer(source, Negotiated(blksize=8))
    first_a = a.start(0.0).send[0]
    assert first_a is b.start(0.0).send[0]
    got = bytearray(first_a[4:])
    for n in range(1, a.last):
        (packet,) = a.on_ack(n & 0xFFFF, 0.0)
        assert struct.unpack("!HH", packet[:4]) == (3, (n + 1) & 0xFFFF)
        got += packet[4:]
    assert bytes(got) == data and len(packet) == 4  # 76,800 = 9,600 x 8: an empty last block
    assert a.last == 9601
    wrap = ReadTransfer(BytesSource(b"z" * (70000 * 4)), Negotiated(blksize=4))
    assert struct.unpack("!HH", wrap._block(65536)[:4]) == (3, 0)
    assert struct.unpack("!HH", wrap._block(65537)[:4]) == (3, 1)


class _PreadLike:
    """A BlockSource that is not in memory (as FileSource: read block by block)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, offset: int, n: int) -> bytes:
        return self.data[offset:offset + n]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=0xFFFF) | st.sampled_from([-1, 0, 1]),
             max_size=400),
    st.booleans(),
)
def test_ack_lockstep_is_on_ack_for_windowsize_1(acks: list[int], in_memory: bool) -> None:
    """The transport's lockstep shortcut does exactly what on_ack does, state included, for
    any sequence of ACK numbers: the next block, duplicates and stale ones ignored, DONE
    after the last block (-1, 0 and 1 stand for the ACK before, of and after the block
    outstanding), from memory or from a file read block by block."""
    data = os.urandom(300 * 4 + 3)
    sources = [BytesSource(data) if in_memory else _PreadLike(data) for _ in range(2)]
    full, lean = (ReadTransfer(src, Negotiated(blksize=4)) for src in sources)
    assert full.start(0.0).send == lean.start(0.0).send
    for i, raw in enumerate(acks):
        wire = (full.acked + 1 + raw) & 0xFFFF if raw in (-1, 0, 1) else raw
        expected = full.on_ack(wire, float(i))
        got = lean.ack_lockstep(wire, float(i))
        assert expected == ([] if got is None else [got])
        assert (lean.acked, lean.sent_upto, lean.deadline, lean.state, lean.attempts) == (
            full.acked, full.sent_upto, full.deadline, full.state, full.attempts)
        if full.state is State.DONE:
            break
    # and a whole transfer through the shortcut ends DONE with every byte sent once
    t = ReadTransfer(BytesSource(b"x" * 9), Negotiated(blksize=4))
    blocks = [t.start(0.0).send[0]]
    while t.state is not State.DONE:
        nxt = t.ack_lockstep(len(blocks), 0.0)
        if nxt is not None:
            blocks.append(nxt)
    assert b"".join(b[4:] for b in blocks) == b"x" * 9 and len(blocks) == 3
