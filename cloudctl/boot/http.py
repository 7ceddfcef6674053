"""HTTP/1.1 boot server on asyncio: iPXE scripts, kernel/initramfs and the TFTP root.

The protocol logic is pure and unit-tested without sockets: ``parse_head`` (request line and
headers), ``parse_range`` (single byte range, RFC 9110 §14), ``decode_path`` (percent-decoding
with traversal refused) and ``route`` (URL scheme of the boot contract). ``HttpServer`` is the
thin asyncio edge: keep-alive, HEAD, Range, Content-Length, zero-copy file bodies with
os.sendfile (from a worker thread for large bodies), and never a redirect (UEFI firmware does
not follow them).

Routes (see notes/boot-contract):
    GET|HEAD /ipxe/<mac>.ipxe              per-MAC iPXE script (unknown MAC: a script that exits)
    GET|HEAD /boot/<mac>/kernel            kernel      (inventory MACs only)
    GET|HEAD /boot/<mac>/initramfs.xz      initramfs   (inventory MACs only)
    GET|HEAD /config/<mac>/<token>.yaml    opt-in one-shot machine config (if ``configs`` given)
    GET|HEAD /tftp/<file>                  the TFTP root, read-only (UEFI HTTP boot)
``<mac>`` is twelve hex digits separated by '-' (iPXE ``${mac:hexhyp}``) or ':'.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import re
import select
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote_to_bytes

from ..errors import EnvironmentNotReady
from .events import BootEvent, OnEvent
from .ipxe import unknown_script
from .tftp_proto import TftpProtocolError, resolve_path

MAX_HEAD = 8192
"""Largest accepted request head (request line + headers), bytes."""
MAX_HEADERS = 64
HEAD_TIMEOUT = 10.0
"""Seconds a client has to send a complete request head once it started one."""
IDLE_TIMEOUT = 30.0
"""Seconds an idle keep-alive connection is kept open."""
MAX_REQUESTS_PER_CONNECTION = 1000
THREADED_SENDFILE_MIN = 1 << 20
"""Bodies at least this large are sent from a worker thread (see HttpServer._send_file)."""
SENDFILE_THREADS = 64
SEND_STALL_TIMEOUT = 60.0

ASSET_NAMES = ("kernel", "initramfs.xz")

_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_MAC_PATH = re.compile(r"^[0-9a-fA-F]{2}([-:])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")
_CONFIG_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


class HttpError(Exception):
    """A request we answer with an error status (and then usually close)."""

    def __init__(self, status: int, reason: str, *, close: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.close = close


# --------------------------------------------------------------------------- parsing (pure)


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-cased names; repeated headers joined with ', '."""

    @property
    def keep_alive(self) -> bool:
        conn = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in conn
        return "keep-alive" in conn


def parse_head(data: bytes) -> Request:
    """Parse a request head (up to and including the blank line)."""
    if len(data) > MAX_HEAD:
        raise HttpError(431, "request head too large")
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "undecodable request") from None
    lines = text.split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise HttpError(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method.encode("latin-1")):
        raise HttpError(400, "malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if re.match(r"^HTTP/\d\.\d$", version):
            raise HttpError(505, f"{version} not supported")
        raise HttpError(400, "malformed HTTP version")
    if not target or any(c in target for c in "\0\r\n\t "):
        raise HttpError(400, "malformed request target")
    headers: dict[str, str] = {}
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many headers")
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            raise HttpError(400, "obsolete header folding")
        name, sep, value = line.partition(":")
        if not sep or not name or not _TOKEN.match(name.encode("latin-1")):
            raise HttpError(400, f"malformed header line {line[:40]!r}")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "HTTP/1.1 request without Host")
    if "transfer-encoding" in headers:
        raise HttpError(400, "request bodies are not accepted")
    cl = headers.get("content-length")
    if cl is not None and cl.strip() != "0":
        if not cl.strip().isdigit():
            raise HttpError(400, "malformed Content-Length")
        raise HttpError(413, "request bodies are not accepted")
    return Request(method, target, version, headers)


def decode_path(target: str) -> list[str]:
    """Path segments of a request target, percent-decoded. Refuses traversal in any encoding.

    Accepts origin-form (``/a/b``) and absolute-form (``http://host/a/b``); the query is
    dropped. Refused with 400: '..' or '.' segments (also as %2e%2e), encoded '/' or '\\'
    inside a segment, NUL and control bytes, non-UTF-8 names.
    """
    path = target
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*(/.*)?$", path)
    if m:
        path = m.group(1) or "/"
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise HttpError(400, "request target must be an absolute path")
    segments: list[str] = []
    for raw in path.split("/")[1:]:
        if re.search(r"%(?![0-9A-Fa-f]{2})", raw):
            raise HttpError(400, "malformed percent-encoding")
        try:
            seg = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "path is not UTF-8") from None
        if seg in (".", "..") or "/" in seg or "\\" in seg:
            raise HttpError(400, "path traversal refused")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in seg):
            raise HttpError(400, "control character in path")
        segments.append(seg)
    if any(s == "" for s in segments[:-1]):
        raise HttpError(400, "empty path segment")
    return segments


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range a Range header asks for, as (first, last) inclusive.

    None means "send the whole representation" (no header, a syntactically invalid one, a unit
    other than bytes, or several ranges: RFC 9110 lets a server ignore Range). Raises
    HttpError(416) when the one range is unsatisfiable.
    """
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec.split(",")]
    if len(specs) != 1:
        return None
    first_s, dash, last_s = specs[0].partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not dash or (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
        return None
    if not first_s:
        if not last_s:
            return None
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise HttpError(416, "unsatisfiable suffix range", close=False)
        return max(0, size - suffix), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None  # invalid range-spec: ignore the header
    last = int(last_s) if last_s else size - 1
    if first >= size:
        raise HttpError(416, "range starts beyond the end", close=False)
    return first, min(last, size - 1)


def normalize_mac(text: str) -> str | None:
    """'52-54-00-AA-BB-CC' or '52:54:00:aa:bb:cc' -> '52:54:00:aa:bb:cc'; None if not a MAC."""
    if not _MAC_PATH.match(text):
        return None
    return text.lower().replace("-", ":")


# --------------------------------------------------------------------------- routing (pure)


@dataclass(frozen=True)
class Body:
    """A response body in memory (scripts, configs, errors)."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class FileBody:
    path: Path
    content_type: str


@dataclass(frozen=True)
class Routed:
    body: Body | FileBody
    mac: str | None
    event_path: str
    """Path as reported in events (one-shot config tokens are redacted)."""


ScriptSource = Callable[[str], bytes | None]
ConfigSource = Callable[[str, str], bytes | None]


def _content_type(name: str) -> str:
    if name.endswith(".efi"):
        return "application/efi"
    if name.endswith(".ipxe"):
        return "text/plain; charset=utf-8"
    if name.endswith(".yaml"):
        return "application/yaml"
    return "application/octet-stream"


def route(
    segments: list[str],
    *,
    tftp_root: Path,
    assets: dict[str, Path],
    scripts: ScriptSource,
    configs: ConfigSource | None = None,
) -> Routed:
    """Map decoded path segments to a body. Raises HttpError(404) for anything unknown."""
    joined = "/" + "/".join(segments)
    if len(segments) == 2 and segments[0] == "ipxe" and segments[1].endswith(".ipxe"):
        mac = normalize_mac(segments[1][: -len(".ipxe")])
        if mac is None:
            raise HttpError(404, "not a MAC address", close=False)
        script = scripts(mac)
        data = script if script is not None else unknown_script(mac).encode("utf-8")
        return Routed(Body(data, "text/plain; charset=utf-8"), mac, joined)
    if len(segments) == 3 and segments[0] == "boot" and segments[2] in ASSET_NAMES:
        mac = normalize_mac(segments[1])
        if mac is None or scripts(mac) is None:
            raise HttpError(404, "unknown machine", close=False)
        asset = assets.get(segments[2])
        if asset is None:
            raise HttpError(404, f"asset {segments[2]} not configured", close=False)
        return Routed(FileBody(asset, "application/octet-stream"), mac, joined)
    if (
        configs is not None
        and len(segments) == 3
        and segments[0] == "config"
        and segments[2].endswith(".yaml")
    ):
        mac = normalize_mac(segments[1])
        token = segments[2][: -len(".yaml")]
        redacted = f"/config/{segments[1]}/<token>.yaml"
        if mac is None or not _CONFIG_TOKEN.match(token):
            raise HttpError(404, "not found", close=False)
        config = configs(mac, token)
        if config is None:
            raise HttpError(404, "no such one-shot config", close=False)
        return Routed(Body(config, "application/yaml"), mac, redacted)
    if len(segments) >= 2 and segments[0] == "tftp":
        try:
            path = resolve_path(tftp_root, "/".join(segments[1:]))
        except TftpProtocolError as exc:
            raise HttpError(404, exc.message, close=False) from None
        return Routed(FileBody(path, _content_type(segments[-1])), None, joined)
    raise HttpError(404, "not found", close=False)


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """IMF-fixdate of now (RFC 9110 §6.6.1), formatted at most once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


def response_head(
    status: int,
    headers: list[tuple[str, str]],
    *,
    keep_alive: bool,
) -> bytes:
    reason = HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {reason}", f"Date: {_http_date()}", "Server: cloudctl"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --------------------------------------------------------------------------- asyncio edge


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
                self._serve, self.host, self.port, limit=MAX_HEAD, reuse_address=True
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
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                if not await self._one_request(reader, writer, client):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # server stopping: close below, without a traceback per connection
        finally:
            self._conns.discard(task)
            writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await writer.wait_closed()

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next request head, or None on a clean close between requests."""
        try:
            first = await asyncio.wait_for(reader.read(1), IDLE_TIMEOUT)
        except TimeoutError:
            return None
        if not first:
            return None
        try:
            rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            raise HttpError(431, "request head too large") from None
        except asyncio.IncompleteReadError:
            return None
        return first + rest

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> bool:
        """Serve one request; True to keep the connection for another."""
        try:
            head = await self._read_head(reader)
        except HttpError as exc:
            await self._send_error(writer, client, None, None, exc, keep_alive=False)
            return False
        if head is None:
            return False
        request: Request | None = None
        routed: Routed | None = None
        try:
            request = parse_head(head)
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405, f"method {request.method} not allowed", close=False)
            routed = route(
                decode_path(request.target),
                tftp_root=self.tftp_root,
                assets=self.assets,
                scripts=self.scripts,
                configs=self.configs,
            )
            return await self._send(writer, client, request, routed)
        except HttpError as exc:
            keep = request is not None and request.keep_alive and not exc.close
            path = routed.event_path if routed else (request.target if request else None)
            mac = routed.mac if routed else None
            await self._send_error(
                writer,
                client,
                path,
                mac,
                exc,
                keep_alive=keep,
                head_only=request is not None and request.method == "HEAD",
            )
            return keep

    async def _send_error(
        self,
        writer: asyncio.StreamWriter,
        client: str,
        path: str | None,
        mac: str | None,
        exc: HttpError,
        *,
        keep_alive: bool,
        head_only: bool = False,
    ) -> None:
        body = f"{exc.status} {HTTPStatus(exc.status).phrase}: {exc.reason}\n".encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        if exc.status == 405:
            headers.append(("Allow", "GET, HEAD"))
        if exc.status == 416 and isinstance(exc, _RangeError):
            headers.append(("Content-Range", f"bytes */{exc.size}"))
        writer.write(response_head(exc.status, headers, keep_alive=keep_alive))
        if not head_only:
            writer.write(body)
        await writer.drain()
        self._emit("http-error", mac, client, path, 0, f"{exc.status} {exc.reason}")

    async def _send_file(
        self, writer: asyncio.StreamWriter, path: Path, offset: int, count: int
    ) -> int:
        """Send a file range with os.sendfile (zero-copy).

        Small bodies go through ``loop.sendfile`` on the event loop. Large ones are sent by a
        worker thread that blocks in poll()/sendfile() while the transport's reading is paused
        (so the loop does not touch the socket meanwhile): the kernel copy work then runs
        outside the event-loop thread and on several CPUs at once, which is what keeps pace
        with nginx (bench/http.py).
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
        writer: asyncio.StreamWriter,
        client: str,
        request: Request,
        routed: Routed,
    ) -> bool:
        keep = request.keep_alive
        head_only = request.method == "HEAD"
        body = routed.body
        if isinstance(body, Body):
            size = len(body.data)
        else:
            try:
                size = os.stat(body.path).st_size
            except OSError:
                raise HttpError(404, "file vanished", close=False) from None
        try:
            rng = parse_range(request.headers.get("range"), size)
        except HttpError as exc:
            raise _RangeError(exc.reason, size) from None
        headers = [("Content-Type", body.content_type), ("Accept-Ranges", "bytes")]
        if rng is None:
            status, offset, count = 200, 0, size
        else:
            status, offset, count = 206, rng[0], rng[1] - rng[0] + 1
            headers.append(("Content-Range", f"bytes {rng[0]}-{rng[1]}/{size}"))
        headers.append(("Content-Length", str(count)))
        if isinstance(body, Body):
            headers.append(("Cache-Control", "no-store"))
        writer.write(response_head(status, headers, keep_alive=keep))
        sent = 0
        if head_only or count == 0:
            await writer.drain()
        elif isinstance(body, Body):
            writer.write(body.data[offset : offset + count])
            await writer.drain()
            sent = count
        else:
            await writer.drain()
            try:
                sent = await self._send_file(writer, body.path, offset, count)
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
        detail = f"{request.method} {status}"
        if rng is not None:
            detail += f" bytes {rng[0]}-{rng[1]}/{size}"
        self._emit("http-sent", routed.mac, client, routed.event_path, sent, detail)
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


class _RangeError(HttpError):
    def __init__(self, reason: str, size: int) -> None:
        super().__init__(416, reason, close=False)
        self.size = size
