"""The asyncio TFTP server on loopback, driven by a raw UDP client (real sockets, no mocks)."""

from __future__ import annotations

import asyncio
import os
import socket
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
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    async def recv(self, timeout: float = 2.0) -> tuple[object, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 70000), timeout)
        return decode(data), addr

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    async def get(self, port: int, name: str, options: dict[str, str] | None = None) -> bytes:
        self.send(
            encode_request(Request(OP_RRQ, name, "octet", options or {})), ("127.0.0.1", port)
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
            assert tid[1] != s.port  # transfer runs on its own ephemeral port
            again, tid2 = await c.recv(timeout=1.0)  # no ACK sent: block 1 comes again
            assert again == first and tid2 == tid
            # a datagram from another port is dropped (connected socket) without disturbing
            stranger.send(encode_ack(1), tid)
            with pytest.raises(TimeoutError):
                await stranger.recv(timeout=0.1)
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
