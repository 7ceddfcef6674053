"""HTTP/1.1 boot protocol core, sans-IO: request parsing (h11), routing, Range, response heads.

No sockets, no files and no clock here. ``HttpConnection`` is one server-side connection:
bytes in (``receive(data, now)``), requests out (``next_request()``), response bytes out
(``response_head``/``body``/``end``), and the time by which the transport must wake it
(``deadline``). HTTP/1.1 framing, keep-alive, HEAD and pipelining are h11's; on top of it this
module refuses what a boot server never needs (request bodies, HTTP versions other than 1.0 and
1.1, heads over ``MAX_HEAD`` bytes or ``MAX_HEADERS`` fields, obsolete header folding).
Malformed requests raise ``MalformedHttp`` (``cloudctl.boot.malformed``) naming the field; the
transport answers them with their status and closes.

The rest is pure functions: ``decode_path`` (percent-decoding with traversal refused),
``route`` (URL scheme of the boot contract; names under the TFTP root are checked lexically
and looked up by the transport, ``cloudctl.boot.files.resolve_under``), ``parse_range``
(single byte range, RFC 9110 §14) and ``plan_response`` (status and headers of a body).

Routes (see notes/boot-contract):
    GET|HEAD /ipxe/<mac>.ipxe              per-MAC iPXE script (unknown MAC: a script that exits)
    GET|HEAD /boot/<mac>/kernel            kernel      (inventory MACs only)
    GET|HEAD /boot/<mac>/initramfs.xz      initramfs   (inventory MACs only)
    GET|HEAD /config/<mac>/<token>.yaml    opt-in one-shot machine config (if ``configs`` given)
    GET|HEAD /tftp/<file>                  the TFTP root, read-only (UEFI HTTP boot)
``<mac>`` is twelve hex digits separated by '-' (iPXE ``${mac:hexhyp}``) or ':'.
"""

from __future__ import annotations

import email.utils
import enum
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import cast

import h11

from .ipxe import unknown_script
from .malformed import MalformedHttp
from .tftp_proto import TftpProtocolError, safe_parts

__all__ = [
    "ASSET_NAMES",
    "HEAD_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_HEAD",
    "MAX_HEADERS",
    "MAX_REQUESTS_PER_CONNECTION",
    "Body",
    "FileBody",
    "HttpConnection",
    "HttpError",
    "MalformedHttp",
    "RangeNotSatisfiable",
    "Reply",
    "Request",
    "Routed",
    "Wait",
    "check_method",
    "decode_path",
    "error_body",
    "http_date",
    "normalize_mac",
    "parse_head",
    "parse_range",
    "plan_response",
    "route",
]

MAX_HEAD = 8192
"""Largest accepted request head (request line + headers), bytes."""
MAX_HEADERS = 64
HEAD_TIMEOUT = 10.0
"""Seconds a client has to send a complete request head once it started one."""
IDLE_TIMEOUT = 30.0
"""Seconds an idle keep-alive connection is kept open."""
MAX_REQUESTS_PER_CONNECTION = 1000

ASSET_NAMES = ("kernel", "initramfs.xz")

_MAC_PATH = re.compile(r"^[0-9a-fA-F]{2}([-:])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")
_CONFIG_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
_ABSOLUTE_FORM = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*(/.*)?$")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")

REASONS = {
    200: "OK",
    206: "Partial Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A well-formed request answered with an error status (404, 405, 416...)."""

    def __init__(self, status: int, reason: str, *, close: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.close = close


class RangeNotSatisfiable(HttpError):
    """416: the one range asked for lies outside the ``size`` bytes of the representation."""

    def __init__(self, reason: str, size: int) -> None:
        super().__init__(416, reason, close=False)
        self.size = size


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-cased names; repeated headers joined with ', '."""

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the response (h11's rule: HTTP/1.1 without
        ``Connection: close``; h11 never keeps an HTTP/1.0 connection)."""
        conn = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return self.version == "HTTP/1.1" and "close" not in conn


class Wait(enum.Enum):
    """``HttpConnection.next_request`` has no request to give."""

    NEED_DATA = "need-data"
    """Feed more bytes (``receive``), or close once ``deadline`` passes."""
    CLOSED = "closed"
    """The connection is finished (peer closed, or keep-alive is over): close it."""


def _request(event: h11.Request) -> Request:
    """Our checks on top of h11's, and the h11 event as a Request."""
    if event.http_version not in (b"1.0", b"1.1"):
        version = event.http_version.decode("ascii")
        raise MalformedHttp(
            f"HTTP/{version} not supported", status=505, packet="request line", field="version"
        )
    if len(event.headers) > MAX_HEADERS:
        raise MalformedHttp(
            f"{len(event.headers)} fields; at most {MAX_HEADERS}", status=431, field="headers"
        )
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("ascii")  # h11 lower-cases names and checks they are tokens
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if "transfer-encoding" in headers:
        raise MalformedHttp("request bodies are not accepted", field="Transfer-Encoding")
    length = headers.get("content-length")
    if length is not None and int(length.split(",")[0]) != 0:  # h11 checked the digits
        raise MalformedHttp("request bodies are not accepted", status=413, field="Content-Length")
    return Request(
        event.method.decode("ascii"),
        event.target.decode("latin-1"),
        "HTTP/" + event.http_version.decode("ascii"),
        headers,
    )


_BYTEARRAY = re.compile(r"bytearray\((b'[^']*'|b\"[^\"]*\")\)")


def _h11_problem(exc: h11.RemoteProtocolError) -> str:
    """h11's message (it names the line: "illegal header line: b'Host a'"), kept short."""
    text = _BYTEARRAY.sub(r"\1", str(exc))
    return text if len(text) <= 100 else text[:97] + "..."


class _Placeholder:
    """Stands for a body the transport sends itself (sendfile): h11 only needs its length."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class HttpConnection:
    """One server-side HTTP/1.1 connection, sans-IO.

    Per request: ``next_request()`` until it returns a Request (``Wait.NEED_DATA``: feed
    ``receive``, or close once ``deadline`` passes; ``Wait.CLOSED``: close), then
    ``response_head(...)``, ``body(...)`` or ``file_body(n)`` (the transport sends n bytes
    itself), and ``end(now)``; or ``error(...)`` for an HttpError/MalformedHttp.
    ``next_request`` raises MalformedHttp for a bad request; answer it with ``error`` and close.
    """

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._buffered = 0  # bytes handed to h11 and not yet consumed by an event
        self._consumed = 0  # stream offset of the first byte not consumed
        self._received = 0  # stream offset after the last byte received
        self._last_byte = b""
        self._folds: list[int] = []  # stream offsets of lines starting with SP/HT
        self._eof = False
        self._served = 0
        self._head_started: float | None = None
        self._last_activity: float | None = None
        self._close_after = False
        self._method = b""  # of the request being answered

    # -- input
    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the peer; b"" when it closed its side. ``now`` (like every ``now`` here)
        is a monotonic clock in seconds; only ``date`` arguments are wall-clock time."""
        self._last_activity = now
        if not data:
            self._eof = True
            self._h11.receive_data(b"")
            return
        scan = self._last_byte + data
        start = self._received - len(self._last_byte)
        for pattern in (b"\n ", b"\n\t"):
            i = scan.find(pattern)
            while i >= 0:
                self._folds.append(start + i + 1)
                i = scan.find(pattern, i + 1)
        self._received += len(data)
        self._last_byte = data[-1:]
        self._buffered += len(data)
        self._h11.receive_data(data)

    @property
    def deadline(self) -> float | None:
        """When the transport should give up waiting for bytes: HEAD_TIMEOUT after a request
        head started, IDLE_TIMEOUT after the last activity otherwise."""
        if self._head_started is not None:
            return self._head_started + HEAD_TIMEOUT
        if self._last_activity is not None:
            return self._last_activity + IDLE_TIMEOUT
        return None

    def start(self, now: float) -> None:
        """The connection was accepted at ``now`` (starts the idle clock)."""
        self._last_activity = now

    def next_request(self) -> Request | Wait:
        c = self._h11
        while True:
            if c.our_state is h11.DONE and c.their_state is h11.DONE:
                c.start_next_cycle()
            if c.our_state in (h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                return Wait.CLOSED
            try:
                event = c.next_event()
            except h11.RemoteProtocolError as exc:
                if self._eof:
                    # Complete heads are always taken before the transport reads on, so this
                    # is a partial head and then a hang-up: nobody to answer.
                    return Wait.CLOSED
                raise MalformedHttp(_h11_problem(exc), status=exc.error_status_hint) from None
            if event is h11.NEED_DATA:
                if self._buffered and self._head_started is None:
                    self._head_started = self._last_activity
                return Wait.NEED_DATA
            if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return Wait.CLOSED
            if isinstance(event, h11.Request):
                return self._accept(event)
            # EndOfMessage (or Data, never accepted: a body is refused before it is read)

    def _accept(self, event: h11.Request) -> Request:
        self._method = event.method
        rest = len(self._h11.trailing_data[0])
        head_len = self._buffered - rest
        head_start = self._consumed
        self._buffered = rest
        self._consumed += head_len
        self._head_started = None
        folded = [f for f in self._folds if head_start <= f < self._consumed]
        self._folds = [f for f in self._folds if f >= self._consumed]
        self._served += 1
        self._close_after = self._served >= MAX_REQUESTS_PER_CONNECTION
        if head_len > MAX_HEAD:
            raise MalformedHttp(f"{head_len} bytes; at most {MAX_HEAD}", status=431)
        if folded:
            raise MalformedHttp("obsolete line folding", field="headers")
        return _request(event)

    # -- output
    def response_head(
        self, status: int, headers: list[tuple[str, str]], *, date: float, close: bool = False
    ) -> bytes:
        """The status line and headers (Date of ``date``, wall-clock seconds; Server and
        Connection added)."""
        close = close or self._close_after
        out = self._h11.send(
            h11.Response(
                status_code=status,
                reason=REASONS.get(status, ""),
                headers=[
                    ("Date", http_date(date)),
                    ("Server", "cloudctl"),
                    *headers,
                    ("Connection", "close" if close else "keep-alive"),
                ],
            )
        )
        assert out is not None
        return out

    def body(self, data: bytes) -> bytes:
        """Body bytes as they go on the wire."""
        out = self._h11.send(h11.Data(data=data))
        assert out is not None
        return out

    def file_body(self, count: int) -> None:
        """Account for ``count`` body bytes the transport sends itself (sendfile)."""
        # h11 only takes len() of the data and hands the object back (its sendfile support)
        self._h11.send_with_data_passthrough(h11.Data(data=cast(bytes, _Placeholder(count))))

    def end(self, now: float) -> bool:
        """The response is complete. True if the connection stays open for another request."""
        self._h11.send(h11.EndOfMessage())
        self._last_activity = now
        self._method = b""
        return self._h11.our_state is h11.DONE

    def error(
        self, exc: HttpError | MalformedHttp, *, date: float, now: float
    ) -> tuple[bytes, bool]:
        """The whole error response to send (no body for HEAD), and whether the connection
        stays open. (b"", False) when no response can be sent any more (one is under way)."""
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b"", False
        status, headers, data = error_body(exc)
        out = self.response_head(status, headers, date=date, close=exc.close)
        if self._method != b"HEAD":
            out += self.body(data)
        keep = self.end(now)
        return out, keep


@functools.lru_cache(maxsize=4)
def _date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


def http_date(now: float) -> str:
    """IMF-fixdate (RFC 9110 §5.6.7) of ``now``, seconds since the epoch."""
    return _date(int(now))


def parse_head(data: bytes) -> Request:
    """Parse one complete request head (the request line up to and including the blank line).
    Raises MalformedHttp for a malformed or incomplete head."""
    conn = HttpConnection()
    conn.receive(data, 0.0)
    got = conn.next_request()
    if isinstance(got, Wait):
        raise MalformedHttp("incomplete request head")
    return got


# --------------------------------------------------------------------------- paths, ranges


def _unescape(m: re.Match[bytes]) -> bytes:
    return bytes((int(m.group(1), 16),))


def decode_path(target: str) -> list[str]:
    """Path segments of a request target, percent-decoded. Refuses traversal in any encoding.

    Accepts origin-form (``/a/b``) and absolute-form (``http://host/a/b``); the query is
    dropped. Refused with MalformedHttp (400): '..' or '.' segments (also as %2e%2e), encoded
    '/' or '\\' inside a segment, NUL and control bytes, non-UTF-8 names.
    """

    def bad(problem: str) -> MalformedHttp:
        return MalformedHttp(problem, packet="request line", field="target")

    path = target
    m = _ABSOLUTE_FORM.match(path)
    if m:
        path = m.group(1) or "/"
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise bad("must be an absolute path")
    segments: list[str] = []
    for raw in path.split("/")[1:]:
        if _BAD_PERCENT.search(raw):
            raise bad("malformed percent-encoding")
        try:
            seg = _PERCENT.sub(_unescape, raw.encode("utf-8")).decode("utf-8")
        except UnicodeDecodeError:
            raise bad("path is not UTF-8") from None
        if seg in (".", "..") or "/" in seg or "\\" in seg:
            raise bad("path traversal refused")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in seg):
            raise bad("control character in path")
        segments.append(seg)
    if any(s == "" for s in segments[:-1]):
        raise bad("empty path segment")
    return segments


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range a Range header asks for, as (first, last) inclusive.

    None means "send the whole representation" (no header, a syntactically invalid one, a unit
    other than bytes, or several ranges: RFC 9110 lets a server ignore Range). Raises
    RangeNotSatisfiable (416) when the one range is unsatisfiable.
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
            raise RangeNotSatisfiable("unsatisfiable suffix range", size)
        return max(0, size - suffix), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None  # invalid range-spec: ignore the header
    last = int(last_s) if last_s else size - 1
    if first >= size:
        raise RangeNotSatisfiable("range starts beyond the end", size)
    return first, min(last, size - 1)


def normalize_mac(text: str) -> str | None:
    """'52-54-00-AA-BB-CC' or '52:54:00:aa:bb:cc' -> '52:54:00:aa:bb:cc'; None if not a MAC."""
    if not _MAC_PATH.match(text):
        return None
    return text.lower().replace("-", ":")


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Body:
    """A response body in memory (scripts, configs, errors)."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class FileBody:
    """A response body in a file: an asset at ``path``, or ``tftp_parts`` under the TFTP root
    (lexically checked here; the transport resolves them confined to the root)."""

    content_type: str
    path: PurePath | None = None
    tftp_parts: tuple[str, ...] = ()


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


def check_method(request: Request) -> None:
    """Only GET and HEAD are served (405 otherwise; the connection stays usable)."""
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, f"method {request.method} not allowed", close=False)


def route(
    segments: list[str],
    *,
    assets: Mapping[str, PurePath],
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
        return Routed(FileBody("application/octet-stream", path=asset), mac, joined)
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
            parts = safe_parts("/".join(segments[1:]))
        except TftpProtocolError as exc:
            raise HttpError(404, exc.message, close=False) from None
        body = FileBody(_content_type(segments[-1]), tftp_parts=parts)
        return Routed(body, None, joined)
    raise HttpError(404, "not found", close=False)


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class Reply:
    """What to answer for a routed body of ``size`` bytes."""

    status: int
    headers: list[tuple[str, str]]
    offset: int
    count: int
    """Body bytes from ``offset`` to send (0 for HEAD)."""
    detail: str
    """For the http-sent event: method, status and range."""


def plan_response(request: Request, body: Body | FileBody, size: int) -> Reply:
    """Status and headers for ``body`` (``size`` bytes) as ``request`` asks for it (Range,
    HEAD). Raises RangeNotSatisfiable."""
    rng = parse_range(request.headers.get("range"), size)
    headers = [("Content-Type", body.content_type), ("Accept-Ranges", "bytes")]
    if rng is None:
        status, offset, count = 200, 0, size
    else:
        status, offset, count = 206, rng[0], rng[1] - rng[0] + 1
        headers.append(("Content-Range", f"bytes {rng[0]}-{rng[1]}/{size}"))
    headers.append(("Content-Length", str(count)))
    if isinstance(body, Body):
        headers.append(("Cache-Control", "no-store"))
    detail = f"{request.method} {status}"
    if rng is not None:
        detail += f" bytes {rng[0]}-{rng[1]}/{size}"
    if request.method == "HEAD":
        count = 0
    return Reply(status, headers, offset, count, detail)


def error_body(exc: HttpError | MalformedHttp) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and text body of an error response."""
    status = exc.status
    body = f"{status} {REASONS.get(status, 'Error')}: {exc.reason}\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
    ]
    if status == 405:
        headers.append(("Allow", "GET, HEAD"))
    if isinstance(exc, RangeNotSatisfiable):
        headers.append(("Content-Range", f"bytes */{exc.size}"))
    return status, headers, body
