"""HTTP/1.1 boot server on asyncio: the thin transport around ``http_proto``.

``http_proto`` does everything HTTP (h11 parsing, keep-alive, HEAD, Range, routing, response
heads, error responses) without I/O. This module reads and writes the sockets, looks up files
(assets, and names under the TFTP root confined to it by ``files.resolve_under``), sends file
bodies zero-copy with os.sendfile (from a worker thread for large bodies), applies the
connection's deadlines and emits events. It never redirects (UEFI firmware does not follow
redirects). Routes: see ``http_proto``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import EnvironmentNotReady
from .events import BootEvent, OnEvent
from .files import FileRefused, resolve_under
from .http_proto import (
    ASSET_NAMES,
    Body,
    ConfigSource,
    FileBody,
    HttpConnection,
    HttpError,
    Request,
    Routed,
    ScriptSource,
    Wait,
    check_method,
    decode_path,
    plan_response,
    route,
)
from .malformed import MalformedHttp

READ_SIZE = 65536
THREADED_SENDFILE_MIN = 1 << 20
"""Bodies at least this large are sent from a worker thread (see HttpServer._send_file)."""
SENDFILE_THREADS = 64
SEND_STALL_TIMEOUT = 60.0


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class HttpServer:
    """The boot HTTP server. ``scripts`` maps a MAC ('aa:bb:..' form) to its iPXE script, or None
    for a machine not in the inventory."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tftp_root: Path,
        assets: dict[str, Path],
        scripts: ScriptSource,
        on_event: OnEvent | None = None,
        configs: ConfigSource | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tftp_root = Path(tftp_root)
        self.assets = {k: Path(v) for k, v in assets.items()}
        self.scripts = scripts
        self.configs = configs
        self.on_event = on_event
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        unknown = sorted(set(self.assets) - set(ASSET_NAMES))
        if unknown:
            raise EnvironmentNotReady(f"HTTP assets: unknown names {unknown}")
        for name, path in self.assets.items():
            if not path.is_file():
                raise EnvironmentNotReady(f"HTTP asset {name}: {path} is not a file")
        self._pool = ThreadPoolExecutor(SENDFILE_THREADS, thread_name_prefix="cloudctl-http")
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, reuse_address=True
            )
        except OSError as exc:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise EnvironmentNotReady(
                f"HTTP cannot bind {self.host}:{self.port}: {exc.strerror}"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _emit(
        self,
        kind: str,
        mac: str | None,
        client: str,
        path: str | None,
        size: int | None,
        detail: str | None,
    ) -> None:
        if self.on_event is not None:
            self.on_event(BootEvent(kind, mac, client, path, size, time.time(), detail))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        client = _peer(writer)
        conn = HttpConnection()
        conn.start(time.monotonic())
        try:
            while await self._one_request(conn, reader, writer, client):
                pass
        except (ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # server stopping: close below, without a traceback per connection
        finally:
            self._conns.discard(task)
            writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await writer.wait_closed()

    async def _next_request(
        self, conn: HttpConnection, reader: asyncio.StreamReader
    ) -> Request | None:
        """The next request, or None when the connection is over (closed, idle, or too slow
        to send a head). Raises MalformedHttp."""
        while True:
            got = conn.next_request()
            if isinstance(got, Request):
                return got
            if got is Wait.CLOSED:
                return None
            deadline = conn.deadline
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
            except TimeoutError:
                return None
            conn.receive(data, time.monotonic())

    async def _one_request(
        self,
        conn: HttpConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
    ) -> bool:
        """Serve one request; True to keep the connection for another."""
        try:
            request = await self._next_request(conn, reader)
        except MalformedHttp as exc:
            return await self._send_error(conn, writer, client, None, None, exc)
        if request is None:
            return False
        routed: Routed | None = None
        try:
            check_method(request)
            routed = route(
                decode_path(request.target),
                assets=self.assets,
                scripts=self.scripts,
                configs=self.configs,
            )
            return await self._send(conn, writer, client, request, routed)
        except (HttpError, MalformedHttp) as exc:
            path = routed.event_path if routed else request.target
            mac = routed.mac if routed else None
            return await self._send_error(conn, writer, client, path, mac, exc)

    async def _send_error(
        self,
        conn: HttpConnection,
        writer: asyncio.StreamWriter,
        client: str,
        path: str | None,
        mac: str | None,
        exc: HttpError | MalformedHttp,
    ) -> bool:
        data, keep = conn.error(exc, date=time.time(), now=time.monotonic())
        if data:
            writer.write(data)
            await writer.drain()
        self._emit("http-error", mac, client, path, 0, f"{exc.status} {exc.reason}")
        return keep

    def _file(self, body: FileBody) -> Path:
        """The file behind a FileBody; names under the TFTP root stay confined to it."""
        if body.path is not None:
            return Path(body.path)
        try:
            return resolve_under(self.tftp_root, body.tftp_parts)
        except FileRefused as exc:
            raise HttpError(404, exc.message, close=False) from None

    async def _send_file(
        self, writer: asyncio.StreamWriter, path: Path, offset: int, count: int
    ) -> int:
        """Send a file range with os.sendfile (zero-copy).

        Small bodies go through ``loop.sendfile`` on the event loop. Large ones are sent by a
        worker thread that blocks in poll()/sendfile() while the transport's reading is paused
        (so the loop does not touch the socket meanwhile): the kernel copy work then runs
        outside the event-loop thread and on several CPUs at once, which is what keeps pace
        with nginx (bench/http_throughput.py).
        """
        loop = asyncio.get_running_loop()
        with open(path, "rb") as f:
            if count < THREADED_SENDFILE_MIN:
                return await loop.sendfile(writer.transport, f, offset, count)
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is None or self._pool is None or not isinstance(transport, asyncio.Transport):
                return await loop.sendfile(transport, f, offset, count)
            transport.pause_reading()
            try:
                return await loop.run_in_executor(
                    self._pool, _blocking_sendfile, sock.fileno(), f.fileno(), offset, count
                )
            finally:
                if not transport.is_closing():
                    transport.resume_reading()

    async def _send(
        self,
        conn: HttpConnection,
        writer: asyncio.StreamWriter,
        client: str,
        request: Request,
        routed: Routed,
    ) -> bool:
        body = routed.body
        path: Path | None = None
        if isinstance(body, Body):
            size = len(body.data)
        else:
            path = self._file(body)
            try:
                size = os.stat(path).st_size
            except OSError:
                raise HttpError(404, "file vanished", close=False) from None
        reply = plan_response(request, body, size)
        offset, count = reply.offset, reply.count
        writer.write(conn.response_head(reply.status, reply.headers, date=time.time()))
        if count == 0:
            await writer.drain()
        elif isinstance(body, Body):
            writer.write(conn.body(body.data[offset : offset + count]))
            await writer.drain()
        else:
            assert path is not None
            await writer.drain()
            conn.file_body(count)
            try:
                count = await self._send_file(writer, path, offset, count)
            except (ConnectionError, OSError) as exc:
                self._emit(
                    "http-error",
                    routed.mac,
                    client,
                    routed.event_path,
                    None,
                    f"aborted after partial body: {exc}",
                )
                return False
        keep = conn.end(time.monotonic())
        self._emit("http-sent", routed.mac, client, routed.event_path, count, reply.detail)
        return keep


def _blocking_sendfile(sock_fd: int, file_fd: int, offset: int, count: int) -> int:
    """Worker-thread body: sendfile ``count`` bytes, waiting for POLLOUT on a full socket.
    Gives up when the peer accepts nothing for SEND_STALL_TIMEOUT seconds."""
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    sent = 0
    while sent < count:
        try:
            n = os.sendfile(sock_fd, file_fd, offset + sent, min(count - sent, 1 << 30))
        except BlockingIOError:
            if not poller.poll(SEND_STALL_TIMEOUT * 1000):
                raise TimeoutError(f"peer stalled for {SEND_STALL_TIMEOUT:.0f} s") from None
            continue
        if n == 0:
            raise ConnectionError(f"file shrank: {sent} of {count} bytes sent")
        sent += n
    return sent
