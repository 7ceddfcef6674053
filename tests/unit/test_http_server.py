"""The asyncio HTTP boot server on loopback, spoken to over a raw socket (exact bytes)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cloudctl.boot.events import BootEvent
from cloudctl.boot.http import HttpServer

KNOWN = "52:54:00:10:00:11"


async def _read_response(
    reader: asyncio.StreamReader, *, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.lower()] = v.strip()
    body = b""
    if not head_only:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return status, headers, body


class Fixture:
    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "tftp"
        self.root.mkdir()
        (self.root / "snponly.efi").write_bytes(b"MZ" + os.urandom(1000))
        self.kernel = tmp / "kernel"
        self.kernel.write_bytes(os.urandom(3_000_000))  # > 1 MiB: threaded sendfile
        self.initrd = tmp / "initramfs.xz"
        self.initrd.write_bytes(os.urandom(50_000))
        self.events: list[BootEvent] = []

    def server(self) -> HttpServer:
        return HttpServer(
            "127.0.0.1",
            0,
            tftp_root=self.root,
            assets={"kernel": self.kernel, "initramfs.xz": self.initrd},
            scripts=lambda mac: b"#!ipxe\necho hi\n" if mac == KNOWN else None,
            on_event=self.events.append,
        )


@pytest.fixture()
def fx(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


def test_keep_alive_head_range_and_events(fx: Fixture) -> None:
    async def main() -> None:
        s = fx.server()
        await s.start()
        r, w = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            host = f"Host: 127.0.0.1:{s.port}\r\n"
            # 1. script
            w.write(f"GET /ipxe/52-54-00-10-00-11.ipxe HTTP/1.1\r\n{host}\r\n".encode())
            st, h, body = await _read_response(r)
            assert (st, body) == (200, b"#!ipxe\necho hi\n")
            assert h["connection"] == "keep-alive" and h["content-length"] == "15"
            # 2. HEAD on the kernel: same headers, no body
            w.write(f"HEAD /boot/52-54-00-10-00-11/kernel HTTP/1.1\r\n{host}\r\n".encode())
            st, h, _ = await _read_response(r, head_only=True)
            assert st == 200 and h["content-length"] == "3000000" and h["accept-ranges"] == "bytes"
            # 3. Range on the same connection (so HEAD really sent no body)
            kernel = "/boot/52-54-00-10-00-11/kernel"
            w.write(f"GET {kernel} HTTP/1.1\r\n{host}Range: bytes=100-199\r\n\r\n".encode())
            st, h, body = await _read_response(r)
            assert st == 206 and h["content-range"] == "bytes 100-199/3000000"
            assert body == fx.kernel.read_bytes()[100:200]
            # 4. whole kernel (zero-copy path) then initramfs
            w.write(f"GET /boot/52-54-00-10-00-11/kernel HTTP/1.1\r\n{host}\r\n".encode())
            st, _, body = await _read_response(r)
            assert st == 200 and body == fx.kernel.read_bytes()
            initrd = "/boot/52-54-00-10-00-11/initramfs.xz"
            w.write(f"GET {initrd} HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode())
            st, h, body = await _read_response(r)
            assert st == 200 and body == fx.initrd.read_bytes() and h["connection"] == "close"
            assert await r.read() == b""  # server closed as asked
        finally:
            w.close()
            await s.stop()
        kinds = [(e.kind, e.mac, e.size) for e in fx.events]
        assert kinds == [
            ("http-sent", KNOWN, 15),
            ("http-sent", KNOWN, 0),
            ("http-sent", KNOWN, 100),
            ("http-sent", KNOWN, 3_000_000),
            ("http-sent", KNOWN, 50_000),
        ]
        assert fx.events[-1].path == "/boot/52-54-00-10-00-11/initramfs.xz"
        assert len({e.client for e in fx.events}) == 1

    asyncio.run(main())


@pytest.mark.parametrize(
    ("request_bytes", "status", "extra"),
    [
        (b"POST /ipxe/x.ipxe HTTP/1.1\r\nHost: a\r\n\r\n", 405, ("allow", "GET, HEAD")),
        (b"GET /tftp/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
        (b"GET /tftp/../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
        (b"GET /boot/52-54-00-99-99-99/kernel HTTP/1.1\r\nHost: a\r\n\r\n", 404, None),
        (
            b"GET /boot/52-54-00-10-00-11/kernel HTTP/1.1\r\nHost: a\r\n"
            b"Range: bytes=9999999-\r\n\r\n",
            416,
            ("content-range", "bytes */3000000"),
        ),
        (b"GET / HTTP/1.1\r\n\r\n", 400, None),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 9000 + b"\r\n\r\n", 431, None),
    ],
)
def test_error_statuses(
    fx: Fixture, request_bytes: bytes, status: int, extra: tuple[str, str] | None
) -> None:
    async def main() -> None:
        s = fx.server()
        await s.start()
        r, w = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            w.write(request_bytes)
            st, h, body = await _read_response(r)
            assert st == status, body
            assert "location" not in h  # never a redirect
            if extra:
                assert h[extra[0]] == extra[1]
        finally:
            w.close()
            await s.stop()
        assert fx.events[-1].kind == "http-error"
        assert fx.events[-1].detail is not None and fx.events[-1].detail.startswith(str(status))

    asyncio.run(main())


def test_404_keeps_connection_alive(fx: Fixture) -> None:
    async def main() -> None:
        s = fx.server()
        await s.start()
        r, w = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            w.write(
                b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
                b"GET /tftp/snponly.efi HTTP/1.1\r\nHost: a\r\n\r\n"
            )
            st1, _, _ = await _read_response(r)
            st2, h2, body = await _read_response(r)  # pipelined second request still answered
            assert (st1, st2) == (404, 200)
            assert h2["content-type"] == "application/efi"
            assert body == (fx.root / "snponly.efi").read_bytes()
        finally:
            w.close()
            await s.stop()

    asyncio.run(main())


def test_many_parallel_downloads(fx: Fixture) -> None:
    async def fetch(port: int) -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(
            b"GET /boot/52-54-00-10-00-11/kernel HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        _, _, body = await _read_response(r)
        w.close()
        return body

    async def main() -> None:
        s = fx.server()
        await s.start()
        try:
            bodies = await asyncio.gather(*(fetch(s.port) for _ in range(32)))
        finally:
            await s.stop()
        assert all(b == fx.kernel.read_bytes() for b in bodies)

    asyncio.run(main())


def test_start_refuses_missing_asset(tmp_path: Path) -> None:
    from cloudctl.errors import EnvironmentNotReady

    s = HttpServer(
        "127.0.0.1",
        0,
        tftp_root=tmp_path,
        assets={"kernel": tmp_path / "nope"},
        scripts=lambda m: None,
    )
    with pytest.raises(EnvironmentNotReady, match="kernel"):
        asyncio.run(s.start())


def test_large_range_and_client_disconnect_mid_body(fx: Fixture) -> None:
    big = fx.kernel.parent / "big"
    big.write_bytes(os.urandom(64 << 20))
    fx.kernel.unlink()
    big.rename(fx.kernel)

    async def main() -> None:
        s = fx.server()
        await s.start()
        try:
            # a 2 MiB range from the middle (threaded sendfile with an offset)
            r, w = await asyncio.open_connection("127.0.0.1", s.port)
            w.write(
                b"GET /boot/52-54-00-10-00-11/kernel HTTP/1.1\r\nHost: a\r\n"
                b"Range: bytes=1000000-3097151\r\n\r\n"
            )
            st, _, body = await _read_response(r)
            with fx.kernel.open("rb") as f:
                f.seek(1_000_000)
                assert st == 206 and body == f.read(2_097_152)
            # then hang up after a few bytes of the whole 64 MiB body
            w.write(b"GET /boot/52-54-00-10-00-11/kernel HTTP/1.1\r\nHost: a\r\n\r\n")
            await r.readexactly(1000)
            w.transport.abort()
            for _ in range(100):
                if fx.events[-1].kind == "http-error":
                    break
                await asyncio.sleep(0.05)
            assert fx.events[-1].kind == "http-error"
            assert "aborted" in (fx.events[-1].detail or "")
            # the server still serves others
            r2, w2 = await asyncio.open_connection("127.0.0.1", s.port)
            w2.write(b"GET /ipxe/52-54-00-10-00-11.ipxe HTTP/1.1\r\nHost: a\r\n\r\n")
            st, _, _ = await _read_response(r2)
            assert st == 200
            w2.close()
        finally:
            await s.stop()

    asyncio.run(main())


def test_tftp_root_is_confined_and_bad_requests_close(fx: Fixture) -> None:
    os.symlink("/etc/passwd", fx.root / "passwd")

    async def main() -> None:
        s = fx.server()
        await s.start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", s.port)
            w.write(b"GET /tftp/passwd HTTP/1.1\r\nHost: a\r\n\r\n")
            st, h, body = await _read_response(r)
            assert st == 404 and h["connection"] == "keep-alive" and b"root:" not in body
            # a malformed head dribbled in byte by byte: 400, then the server closes
            for byte in b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n":
                w.write(bytes([byte]))
                await w.drain()
            st, h, body = await _read_response(r)
            assert st == 400 and h["connection"] == "close" and b"folding" in body
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()
            # HTTP/1.0 is answered, then closed (h11 keeps no HTTP/1.0 connection)
            r, w = await asyncio.open_connection("127.0.0.1", s.port)
            w.write(b"GET /ipxe/52-54-00-10-00-11.ipxe HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            st, h, body = await _read_response(r)
            assert st == 200 and h["connection"] == "close" and body.startswith(b"#!ipxe")
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()
        finally:
            await s.stop()
        errors = [e for e in fx.events if e.kind == "http-error"]
        assert [e.detail.split(" ")[0] for e in errors if e.detail] == ["404", "400"]
        assert errors[0].path == "/tftp/passwd" and errors[1].path is None

    asyncio.run(main())


def test_idle_and_slow_head_connections_are_closed(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudctl.boot import http_proto

    monkeypatch.setattr(http_proto, "IDLE_TIMEOUT", 0.3)
    monkeypatch.setattr(http_proto, "HEAD_TIMEOUT", 0.3)

    async def main() -> None:
        s = fx.server()
        await s.start()
        try:
            loop = asyncio.get_running_loop()
            r, w = await asyncio.open_connection("127.0.0.1", s.port)
            t0 = loop.time()
            assert await asyncio.wait_for(r.read(), 5) == b""  # idle: closed, no response
            assert loop.time() - t0 < 3
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", s.port)
            w.write(b"GET / HTTP/1.1\r\n")  # a head that never ends
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()
        finally:
            await s.stop()
        assert fx.events == []

    asyncio.run(main())
