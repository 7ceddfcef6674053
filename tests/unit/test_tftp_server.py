"""The asyncio TFTP server on loopback, driven by a raw UDP client (real sockets, no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from pathlib import Path

import pytest

from cloudctl.boot.events import BootEvent
from cloudctl.boot.files import FileSource
from cloudctl.boot.tftp import TftpServer
from cloudctl.boot.tftp_proto import (
    OP_RRQ,
    OP_WRQ,
    BytesSource,
    Data,
    Error,
    ErrorCode,
    OptionAck,
    ReadRequest,
    Refused,
    Request,
    decode,
    encode_ack,
    encode_request,
    handle_request,
)


class Client:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)

    async def recv(self, timeout: float = 2.0) -> tuple[object, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 70000), timeout)
        return decode(data), addr

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    async def get(self, port: int, name: str, options: dict[str, str] | None = None) -> bytes:
        self.send(
            encode_request(Request(OP_RRQ, name, "octet", options or {})), (self.host, port)
        )
        out = bytearray()
        expected = 1
        blksize = 512
        while True:
            pkt, tid = await self.recv()
            if isinstance(pkt, OptionAck):
                blksize = int(pkt.options.get("blksize", "512"))
                self.send(encode_ack(0), tid)
                continue
            if isinstance(pkt, Error):
                raise RuntimeError(pkt.message)
            assert isinstance(pkt, Data)
            if pkt.block == expected & 0xFFFF:
                out += pkt.payload
                expected += 1
            self.send(encode_ack(pkt.block), tid)
            if pkt.block == (expected - 1) & 0xFFFF and len(pkt.payload) < blksize:
                return bytes(out)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    (r / "a.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "outside").write_text("secret")
    return r


async def _server(root: Path, events: list[BootEvent], **kw: float) -> TftpServer:
    s = TftpServer(root, "127.0.0.1", 0, on_event=events.append, **kw)  # type: ignore[arg-type]
    await s.start()
    return s


def test_concurrent_transfers_each_on_own_port(root: Path) -> None:
    async def main() -> None:
        events: list[BootEvent] = []
        s = await _server(root, events)
        clients = [Client() for _ in range(20)]
        try:
            results = await asyncio.gather(
                *(c.get(s.port, "a.bin", {"blksize": "1400", "tsize": "0"}) for c in clients)
            )
        finally:
            for c in clients:
                c.close()
            await s.stop()
        want = (root / "a.bin").read_bytes()
        assert all(r == want for r in results)
        sent = [e for e in events if e.kind == "tftp-sent"]
        assert len(sent) == 20 and {e.size for e in sent} == {len(want)}
        assert {e.detail for e in sent} == {"blksize=1400 tsize=300000"}
        assert len({e.client for e in sent}) == 20

    asyncio.run(main())


def test_write_request_and_traversal_get_error_packets(root: Path) -> None:
    async def main() -> None:
        events: list[BootEvent] = []
        s = await _server(root, events)
        c = Client()
        try:
            c.send(encode_request(Request(OP_WRQ, "x", "octet")), ("127.0.0.1", s.port))
            pkt, _ = await c.recv()
            assert isinstance(pkt, Error) and pkt.code == 2
            c.send(encode_request(Request(OP_RRQ, "../outside", "octet")), ("127.0.0.1", s.port))
            pkt, _ = await c.recv()
            assert isinstance(pkt, Error) and pkt.code == 2
            c.send(encode_request(Request(OP_RRQ, "nope", "octet")), ("127.0.0.1", s.port))
            pkt, _ = await c.recv()
            assert isinstance(pkt, Error) and pkt.code == 1
        finally:
            c.close()
            await s.stop()
        assert [e.kind for e in events] == ["tftp-error"] * 3

    asyncio.run(main())


def test_retransmits_unacked_block_and_ignores_strangers(root: Path) -> None:
    async def main() -> None:
        events: list[BootEvent] = []
        s = await _server(root, events, timeout=0.2, retries=2)
        c, stranger = Client(), Client()
        try:
            c.send(encode_request(Request(OP_RRQ, "a.bin", "octet")), ("127.0.0.1", s.port))
            first, tid = await c.recv()
            assert isinstance(first, Data) and first.block == 1
            assert tid[1] != s.port and tid[1] == s.transfer_port  # transfers have their TID
            again, tid2 = await c.recv(timeout=1.0)  # no ACK sent: block 1 comes again
            assert again == first and tid2 == tid
            # a datagram from another port gets ERROR 5 (RFC 1350) and disturbs nothing
            stranger.send(encode_ack(1), tid)
            pkt, _ = await stranger.recv(timeout=1.0)
            assert isinstance(pkt, Error) and pkt.code == ErrorCode.UNKNOWN_TID
            # stay silent: after `retries` retransmissions the server gives up with an ERROR
            while True:
                pkt, _ = await c.recv(timeout=2.0)
                if isinstance(pkt, Error):
                    break
            await asyncio.sleep(0.05)
            assert s.active_transfers == 0
        finally:
            c.close()
            stranger.close()
            await s.stop()
        assert events[-1].kind == "tftp-error" and "timed out" in (events[-1].detail or "")

    asyncio.run(main())


def test_a_retransmitted_request_is_answered_by_its_transfer(root: Path) -> None:
    """All transfers share one port, told apart by the client's: the same RRQ again from the
    same port before any block was acknowledged (the client's retransmission) starts nothing
    new, and the transfer completes once."""

    async def main() -> None:
        events: list[BootEvent] = []
        s = await _server(root, events)
        c = Client()
        try:
            rrq = encode_request(Request(OP_RRQ, "a.bin", "octet", {"blksize": "1400"}))
            c.send(rrq, ("127.0.0.1", s.port))
            first, tid = await c.recv()
            c.send(rrq, ("127.0.0.1", s.port))
            await asyncio.sleep(0.05)
            assert s.active_transfers == 1
            assert first == OptionAck({"blksize": "1400"})
            out = bytearray()
            c.send(encode_ack(0), tid)
            block = 0
            while True:
                pkt, _ = await c.recv()
                if isinstance(pkt, OptionAck):  # the duplicate was not answered anew
                    raise AssertionError("a second OACK: the retransmitted RRQ started again")
                assert isinstance(pkt, Data)
                if pkt.block == block + 1:
                    out += pkt.payload
                    block += 1
                c.send(encode_ack(pkt.block), tid)
                if len(pkt.payload) < 1400:
                    break
            await asyncio.sleep(0.05)
        finally:
            c.close()
            await s.stop()
        assert bytes(out) == (root / "a.bin").read_bytes()
        assert [e.kind for e in events] == ["tftp-sent"]

    asyncio.run(main())


def test_a_new_request_from_the_same_port_supersedes_the_old_transfer(root: Path) -> None:
    (root / "b.bin").write_bytes(b"b" * 700)

    async def main() -> None:
        events: list[BootEvent] = []
        s = await _server(root, events)
        c = Client()
        try:
            c.send(encode_request(Request(OP_RRQ, "a.bin", "octet")), ("127.0.0.1", s.port))
            first, tid = await c.recv()
            assert isinstance(first, Data) and first.block == 1
            c.send(encode_ack(1), tid)
            second, _ = await c.recv()
            assert isinstance(second, Data) and second.block == 2
            # the client gives a.bin up and asks for b.bin from the same port
            assert await c.get(s.port, "b.bin") == b"b" * 700
            await asyncio.sleep(0.05)
            assert s.active_transfers == 0
        finally:
            c.close()
            await s.stop()
        kinds = [(e.kind, e.path, e.detail) for e in events]
        assert kinds == [("tftp-error", "a.bin", "superseded by a new request"),
                         ("tftp-sent", "b.bin", None)]

    asyncio.run(main())


def test_more_transfers_than_a_batch_with_windows(root: Path) -> None:
    """80 concurrent transfers with windowsize 8: more ACKs than one receive batch and more
    DATA than one send batch per wake-up; every client still gets its exact file."""
    (root / "w.bin").write_bytes(os.urandom(60_000))

    async def main() -> list[bytes]:
        events: list[BootEvent] = []
        s = await _server(root, events)
        clients = [Client() for _ in range(80)]
        try:
            return await asyncio.gather(
                *(c.get(s.port, "w.bin", {"blksize": "512", "windowsize": "8"}) for c in clients)
            )
        finally:
            for c in clients:
                c.close()
            await s.stop()

    want = (root / "w.bin").read_bytes()
    assert all(r == want for r in asyncio.run(main()))


def test_garbage_on_the_transfer_port_leaves_transfers_alone(root: Path) -> None:
    """Random datagrams (empty, short, longer than a receive slot) from a stranger while a
    transfer runs: each gets ERROR 5, the transfer completes, the server keeps serving."""

    async def main() -> None:
        events: list[BootEvent] = []
        s = await _server(root, events)
        c, stranger = Client(), Client()
        try:
            task = asyncio.ensure_future(c.get(s.port, "a.bin", {"blksize": "512"}))
            while s.transfer_port is None or not s.active_transfers:
                await asyncio.sleep(0.01)
            rng = random.Random(14)
            for _ in range(200):
                junk = rng.randbytes(rng.choice([0, 1, 4, 5, 100, 1499, 1500, 1501, 3000]))
                stranger.send(junk, ("127.0.0.1", s.transfer_port))
            assert await asyncio.wait_for(task, 20) == (root / "a.bin").read_bytes()
            answers = 0
            with contextlib.suppress(TimeoutError):
                while True:
                    pkt, _ = await stranger.recv(timeout=0.5)
                    assert isinstance(pkt, Error) and pkt.code == ErrorCode.UNKNOWN_TID
                    answers += 1
            assert answers > 150  # loopback may drop a few under the burst
            again = Client()
            assert await again.get(s.port, "a.bin") == (root / "a.bin").read_bytes()
            again.close()
            await asyncio.sleep(0.05)  # the server records a transfer on its last ACK
        finally:
            c.close()
            stranger.close()
            await s.stop()
        assert [e.kind for e in events] == ["tftp-sent", "tftp-sent"]

    asyncio.run(main())


def test_a_vanished_client_ends_its_transfer_at_the_first_retransmission(root: Path) -> None:
    """The client closes its port mid-transfer: the retransmission that follows draws an ICMP
    port unreachable, and the transfer ends then ("client unreachable"), not after all its
    retries; transfers of other clients on the shared socket go on."""

    async def main() -> None:
        events: list[BootEvent] = []
        s = await _server(root, events, timeout=0.3, retries=5)
        gone, other = Client(), Client()
        try:
            gone.send(encode_request(Request(OP_RRQ, "a.bin", "octet")), ("127.0.0.1", s.port))
            first, _ = await gone.recv()
            assert isinstance(first, Data) and first.block == 1
            t0 = time.monotonic()
            gone.close()
            task = asyncio.ensure_future(other.get(s.port, "a.bin"))
            while not any(e.kind == "tftp-error" for e in events):
                assert time.monotonic() - t0 < 1.2, "no ICMP-driven end: waited for retries"
                await asyncio.sleep(0.02)
            assert await asyncio.wait_for(task, 20) == (root / "a.bin").read_bytes()
        finally:
            other.close()
            await s.stop()
        error = next(e for e in events if e.kind == "tftp-error")
        assert error.detail == "receive failed: client unreachable"

    asyncio.run(main())


def test_ipv6_transfers_and_strangers(root: Path) -> None:
    probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    finally:
        probe.close()

    async def main() -> None:
        events: list[BootEvent] = []
        s = TftpServer(root, "::1", 0, on_event=events.append)
        await s.start()
        clients = [Client("::1") for _ in range(3)]
        stranger = Client("::1")
        try:
            got = await asyncio.gather(*(c.get(s.port, "a.bin", {"blksize": "1200"})
                                         for c in clients))
            assert all(g == (root / "a.bin").read_bytes() for g in got)
            stranger.send(encode_ack(1), ("::1", s.transfer_port))
            pkt, _ = await stranger.recv()
            assert isinstance(pkt, Error) and pkt.code == ErrorCode.UNKNOWN_TID
            await asyncio.sleep(0.05)
        finally:
            for c in (*clients, stranger):
                c.close()
            await s.stop()
        assert [e.kind for e in events] == ["tftp-sent"] * 3

    asyncio.run(main())


# --------------------------------------------------------------------------- file lookup


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    r = tmp_path / "tree"
    (r / "sub").mkdir(parents=True)
    (r / "undionly.kpxe").write_bytes(b"ipxe")
    (r / "sub" / "f.bin").write_bytes(b"x")
    (r / "t.txt").write_bytes(b"a\nb\rc")
    (tmp_path / "secret").write_text("outside")
    os.symlink(tmp_path / "secret", r / "escape")
    os.symlink(r / "sub" / "f.bin", r / "inside-link")
    os.symlink("/etc", r / "etc-link")
    return r


def _open(root: Path, name: str, mode: str = "octet") -> FileSource | BytesSource | Refused:
    read = handle_request(encode_request(Request(OP_RRQ, name, mode)))
    assert isinstance(read, ReadRequest), read
    return TftpServer(root, "127.0.0.1", 0).open(read)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("undionly.kpxe", b"ipxe"),
        ("/undionly.kpxe", b"ipxe"),
        ("sub/f.bin", b"x"),
        ("sub\\f.bin", b"x"),
        ("inside-link", b"x"),  # a symlink that stays inside the root is fine
    ],
)
def test_open_serves_files_under_the_root(tree: Path, name: str, content: bytes) -> None:
    src = _open(tree, name)
    assert not isinstance(src, Refused)
    assert src.size == len(content) and src.read(0, 100) == content


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("escape", ErrorCode.ACCESS_VIOLATION),  # symlink out of the root
        ("etc-link/passwd", ErrorCode.ACCESS_VIOLATION),
        ("missing", ErrorCode.FILE_NOT_FOUND),
        ("sub", ErrorCode.FILE_NOT_FOUND),  # a directory
        ("sub/f.bin/x", ErrorCode.FILE_NOT_FOUND),
    ],
)
def test_open_refuses_escapes_and_non_files(tree: Path, name: str, code: ErrorCode) -> None:
    src = _open(tree, name)
    assert isinstance(src, Refused) and src.code == code and src.filename == name


def test_open_converts_netascii(tree: Path) -> None:
    src = _open(tree, "t.txt", "netascii")
    assert isinstance(src, BytesSource) and src.data == b"a\r\nb\r\0c"


def test_large_files_are_read_with_pread(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"0123456789" * 2_000_000)  # 20 MB, above the cache limit
    src = _open(tmp_path, "big")
    assert isinstance(src, FileSource)
    try:
        assert src.size == 20_000_000 and src.read(19_999_995, 100) == b"56789"
    finally:
        src.close()


def test_netascii_transfer_and_tsize_over_the_wire(tree: Path) -> None:
    async def main() -> None:
        events: list[BootEvent] = []
        s = await _server(tree, events)
        c = Client()
        try:
            c.send(
                encode_request(Request(OP_RRQ, "t.txt", "netascii", {"tsize": "0"})),
                ("127.0.0.1", s.port),
            )
            oack, tid = await c.recv()
            assert oack == OptionAck({"tsize": "7"})
            c.send(encode_ack(0), tid)
            data, _ = await c.recv()
            assert data == Data(1, b"a\r\nb\r\0c")
            c.send(encode_ack(1), tid)
            await asyncio.sleep(0.05)
        finally:
            c.close()
            await s.stop()
        assert [(e.kind, e.size) for e in events] == [("tftp-sent", 7)]

    asyncio.run(main())
