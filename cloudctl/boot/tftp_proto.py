"""TFTP protocol core, sans-IO: packet codec, option negotiation, path policy, read transfer.

Implements the read side of RFC 1350 with option negotiation (RFC 2347), blksize (RFC 2348),
timeout and tsize (RFC 2349) and windowsize (RFC 7440). No sockets, no files and no clock
here: datagrams come in as bytes and go out as bytes, time is passed in (``now``) and the
transfer tells the caller when it next needs to be woken (``deadline``). The served file's
content comes from the transport as a ``BlockSource`` (``BytesSource`` here, or the pread-based
``cloudctl.boot.files.FileSource``); the request policy checks names lexically and leaves
looking them up under the root (``cloudctl.boot.files.resolve_under``) to the transport.

Malformed datagrams raise ``MalformedTftp`` (``cloudctl.boot.malformed``); refusals of
well-formed requests are ``TftpProtocolError``s carrying the TFTP error code.

Block numbers are 16 bits on the wire; the transfer counts blocks in absolute numbers and rolls
the wire number over 65535 -> 0 (what tftp-hpa, atftp, dnsmasq and iPXE expect), so files larger
than 65535 blocks work.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Protocol

from .malformed import MalformedTftp

OP_RRQ = 1
OP_WRQ = 2
OP_DATA = 3
OP_ACK = 4
OP_ERROR = 5
OP_OACK = 6

MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464
DEFAULT_BLKSIZE = 512
MAX_WINDOWSIZE = 64
MAX_PACKET = 65535

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")


class ErrorCode(enum.IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


class TftpProtocolError(Exception):
    """A well-formed request that is not allowed here; carries the TFTP error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- packets


@dataclass(frozen=True)
class Request:
    """RRQ or WRQ."""

    opcode: int
    filename: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)
    """Option names lower-cased, in request order."""

    @property
    def is_read(self) -> bool:
        return self.opcode == OP_RRQ


@dataclass(frozen=True)
class Data:
    block: int
    payload: bytes


@dataclass(frozen=True)
class Ack:
    block: int


@dataclass(frozen=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True)
class OptionAck:
    options: dict[str, str]


Packet = Request | Data | Ack | Error | OptionAck


_OP_NAMES = {OP_RRQ: "RRQ", OP_WRQ: "WRQ", OP_OACK: "OACK"}


def _split_strings(body: bytes, packet: str) -> list[str]:
    if not body.endswith(b"\0"):
        raise MalformedTftp("strings not NUL-terminated", packet=packet)
    try:
        return body[:-1].decode("ascii").split("\0")
    except UnicodeDecodeError:
        raise MalformedTftp("non-ASCII bytes", packet=packet) from None


def decode(data: bytes) -> Packet:
    """Decode one TFTP datagram. Raises MalformedTftp, naming the packet and field, on anything
    malformed."""
    if len(data) < 2:
        raise MalformedTftp(f"short packet ({len(data)} bytes)", packet="datagram")
    (op,) = _H.unpack_from(data)
    if op in (OP_RRQ, OP_WRQ):
        name = _OP_NAMES[op]
        parts = _split_strings(data[2:], name)
        if len(parts) < 2:
            raise MalformedTftp("missing", packet=name, field="mode")
        if len(parts) % 2:
            raise MalformedTftp(
                "option without a value", packet=name, field=f"option {parts[-1]!r}"
            )
        filename, mode = parts[0], parts[1].lower()
        if not filename:
            raise MalformedTftp("empty", packet=name, field="filename")
        if mode not in ("octet", "netascii", "mail"):
            raise MalformedTftp(f"unknown mode {parts[1]!r}", packet=name, field="mode")
        options: dict[str, str] = {}
        for i in range(2, len(parts), 2):
            opt = parts[i].lower()
            if not opt or opt in options:
                problem = "empty name" if not opt else "given twice"
                raise MalformedTftp(problem, packet=name, field=f"option {parts[i]!r}")
            options[opt] = parts[i + 1]
        return Request(op, filename, mode, options)
    if op == OP_DATA:
        if len(data) < 4:
            raise MalformedTftp(f"{len(data)} bytes, no block number", packet="DATA")
        return Data(_H.unpack_from(data, 2)[0], bytes(data[4:]))
    if op == OP_ACK:
        if len(data) != 4:
            raise MalformedTftp(f"{len(data)} bytes; an ACK is 4", packet="ACK")
        return Ack(_H.unpack_from(data, 2)[0])
    if op == OP_ERROR:
        if len(data) < 4:
            raise MalformedTftp(f"{len(data)} bytes, no error code", packet="ERROR")
        code = _H.unpack_from(data, 2)[0]
        msg = data[4:].split(b"\0", 1)[0].decode("ascii", "replace")
        return Error(code, msg)
    if op == OP_OACK:
        parts = _split_strings(data[2:], "OACK") if len(data) > 2 else []
        if len(parts) % 2:
            raise MalformedTftp(
                "option without a value", packet="OACK", field=f"option {parts[-1]!r}"
            )
        return OptionAck({parts[i].lower(): parts[i + 1] for i in range(0, len(parts), 2)})
    raise MalformedTftp(f"unknown opcode {op}", packet="datagram", field="opcode")


def encode_request(req: Request) -> bytes:
    parts = [req.filename, req.mode]
    for k, v in req.options.items():
        parts += [k, v]
    return _H.pack(req.opcode) + b"".join(p.encode("ascii") + b"\0" for p in parts)


def encode_data(block: int, payload: bytes) -> bytes:
    return _HH.pack(OP_DATA, block & 0xFFFF) + payload


def encode_ack(block: int) -> bytes:
    return _HH.pack(OP_ACK, block & 0xFFFF)


def encode_error(code: int, message: str) -> bytes:
    return _HH.pack(OP_ERROR, code) + message.encode("ascii", "replace") + b"\0"


def encode_oack(options: dict[str, str]) -> bytes:
    return _H.pack(OP_OACK) + b"".join(
        k.encode("ascii") + b"\0" + v.encode("ascii") + b"\0" for k, v in options.items()
    )


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Negotiated:
    blksize: int = DEFAULT_BLKSIZE
    timeout: float = 1.0
    windowsize: int = 1
    oack: dict[str, str] = field(default_factory=dict)
    """Options to acknowledge; empty means no OACK (plain RFC 1350 transfer)."""


def _int_option(value: str) -> int | None:
    v = value.strip()
    return int(v) if v.isdigit() and len(v) <= 10 else None


def negotiate(
    options: dict[str, str],
    *,
    file_size: int,
    max_blksize: int,
    default_timeout: float,
    max_windowsize: int = MAX_WINDOWSIZE,
) -> Negotiated:
    """Options the server accepts, in the client's order. Invalid or unknown options are left out
    of the OACK (RFC 2347: the server may ignore what it does not accept); blksize and windowsize
    are clamped down to our limits, never up."""
    blksize, timeout, windowsize = DEFAULT_BLKSIZE, default_timeout, 1
    oack: dict[str, str] = {}
    for name, value in options.items():
        n = _int_option(value)
        if name == "blksize" and n is not None and n >= MIN_BLKSIZE:
            blksize = min(n, max_blksize, MAX_BLKSIZE)
            oack[name] = str(blksize)
        elif name == "tsize":
            # A reading client sends 0; the value means nothing on a read (atftp 0.8 even sends
            # "enable"), so any value gets the file size back.
            oack[name] = str(file_size)
        elif name == "timeout" and n is not None and 1 <= n <= 255:
            timeout = float(n)
            oack[name] = str(n)
        elif name == "windowsize" and n is not None and n >= 1:
            windowsize = min(n, max_windowsize)
            oack[name] = str(windowsize)
    return Negotiated(blksize, timeout, windowsize, oack)


# --------------------------------------------------------------------------- path policy


def safe_parts(filename: str) -> tuple[str, ...]:
    """The path components of a requested file name, checked lexically (no I/O), or
    TftpProtocolError(ACCESS_VIOLATION).

    Refused: NUL bytes, absolute paths, '..' components, backslash tricks, empty names. A single
    leading '/' is tolerated as many PXE ROMs send one ("/undionly.kpxe"); '\\' counts as '/'.
    The transport then looks the parts up under the root with symlinks resolved
    (``cloudctl.boot.files.resolve_under``), which refuses links that lead out of it.
    """
    if "\0" in filename:
        raise TftpProtocolError(ErrorCode.ACCESS_VIOLATION, "NUL byte in file name")
    name = filename.replace("\\", "/")
    if name.startswith("/") and not name.startswith("//"):
        name = name[1:]
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if name.startswith("/") or any(p == ".." for p in parts) or not parts:
        raise TftpProtocolError(ErrorCode.ACCESS_VIOLATION, f"path {filename!r} refused")
    return parts


# --------------------------------------------------------------------------- read transfer


class BlockSource(Protocol):
    """The served file's content as the transport provides it (bytes in memory, or pread)."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...


class BytesSource:
    """A served file held in memory (small boot files, or netascii-converted content)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self._packets: dict[int, list[bytes]] = {}

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    def packets(self, blksize: int) -> list[bytes]:
        """Every DATA packet of the file at ``blksize`` (index n-1 holds block n, its 16-bit
        number wrapped), built once and shared by every transfer of this content: a rack
        fetching the same boot file costs one copy, not one per block per client. At most two
        block sizes are kept per file."""
        got = self._packets.get(blksize)
        if got is None:
            data, last = self.data, self.size // blksize + 1
            got = [_HH.pack(OP_DATA, n & 0xFFFF) + data[(n - 1) * blksize : n * blksize]
                   for n in range(1, last + 1)]
            if len(self._packets) >= 2:
                self._packets.clear()
            self._packets[blksize] = got
        return got


class State(enum.Enum):
    WAIT_OACK_ACK = "wait-oack-ack"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Output:
    """What a transfer step wants the transport to do."""

    send: list[bytes] = field(default_factory=list)
    finished: bool = False
    error: str | None = None
    """Set when the transfer ended unsuccessfully (reason, for events/logs)."""


class ReadTransfer:
    """Server side of one read transfer.

    Call ``start(now)`` once, then ``receive(packet, now)`` for each datagram from the client's
    TID and ``on_timer(now)`` whenever ``deadline`` passes. Each returns an ``Output``.
    """

    def __init__(self, source: BlockSource, negotiated: Negotiated, *, retries: int = 5) -> None:
        self.source = source
        self.neg = negotiated
        self.blksize = negotiated.blksize
        self.window = negotiated.windowsize
        self.retries = retries
        self.size = source.size
        # Blocks are 1..last; a file that is a multiple of blksize ends with an empty block.
        self.last = self.size // self.blksize + 1
        self.acked = 0  # highest absolute block acknowledged
        self.sent_upto = 0  # highest absolute block sent in the current window
        self.state = State.SENDING
        self.deadline: float | None = None
        self.attempts = 0
        self._dup_resent = False
        self._packets = (source.packets(self.blksize) if isinstance(source, BytesSource)
                         else None)
        self._timeout = negotiated.timeout

    @property
    def bytes_sent(self) -> int:
        """Bytes the client has acknowledged."""
        return min(self.acked * self.blksize, self.size)

    # -- helpers
    def _block(self, n: int) -> bytes:
        if self._packets is not None:
            return self._packets[n - 1]
        return encode_data(n, self.source.read((n - 1) * self.blksize, self.blksize))

    def _send_window(self, now: float) -> list[bytes]:
        first = self.acked + 1
        upto = min(self.acked + self.window, self.last)
        self.sent_upto = upto
        self.deadline = now + self._timeout
        return [self._block(n) for n in range(first, upto + 1)]

    def _fail(self, reason: str, send: list[bytes] | None = None) -> Output:
        self.state = State.FAILED
        self.deadline = None
        return Output(send=send or [], finished=True, error=reason)

    # -- events
    def start(self, now: float) -> Output:
        if self.neg.oack:
            self.state = State.WAIT_OACK_ACK
            self.deadline = now + self.neg.timeout
            return Output(send=[encode_oack(self.neg.oack)])
        return Output(send=self._send_window(now))

    def receive(self, data: bytes, now: float) -> Output:
        if self.state in (State.DONE, State.FAILED):
            return Output(finished=True)
        try:
            pkt = decode(data)
        except MalformedTftp as exc:
            return self._fail(exc.detail, [encode_error(exc.code, exc.detail)])
        if isinstance(pkt, Error):
            return self._fail(f"client error {pkt.code}: {pkt.message}")
        if not isinstance(pkt, Ack):
            msg = "only ACK expected on a read transfer"
            return self._fail(msg, [encode_error(ErrorCode.ILLEGAL_OPERATION, msg)])
        if self.state is State.WAIT_OACK_ACK:
            if pkt.block != 0:
                return Output()  # stray; keep waiting (timer will resend the OACK)
            self.state = State.SENDING
            self.attempts = 0
            return Output(send=self._send_window(now))
        return self._on_ack(pkt.block, now)

    def _on_ack(self, wire: int, now: float) -> Output:
        send = self.on_ack(wire, now)
        return Output(send=send, finished=self.state is State.DONE)

    def on_ack(self, wire: int, now: float) -> list[bytes]:
        """Hot path for an ACK while in state SENDING: the packets to send next.
        The transfer is complete when ``state`` is DONE afterwards."""
        acked = self.acked
        # Map the 16-bit number to an absolute block in [acked, sent_upto].
        delta = (wire - acked) & 0xFFFF
        if delta > self.sent_upto - acked:
            return []  # older than anything outstanding: ignore
        if delta == 0:
            # Duplicate of the previous ACK. With windowsize 1 answering it would start the
            # sorcerer's apprentice cascade, so ignore it and let the timer retransmit. With a
            # window it means the first block of the window was lost: resend once per window.
            if self.window > 1 and not self._dup_resent:
                self._dup_resent = True
                return self._send_window(now)
            return []
        acked += delta
        self.acked = acked
        self.attempts = 0
        self._dup_resent = False
        if acked >= self.last:
            self.state = State.DONE
            self.deadline = None
            return []
        if self.window == 1:  # lockstep: the common case, kept lean
            n = acked + 1
            self.sent_upto = n
            self.deadline = now + self._timeout
            packets = self._packets
            if packets is not None:
                return [packets[acked]]  # block n = acked + 1
            return [self._block(n)]
        return self._send_window(now)

    def ack_lockstep(self, wire: int, now: float) -> bytes | None:
        """``on_ack`` for windowsize 1, the common case, without its list: the next packet, or
        None when there is nothing to send (then ``state`` says whether the transfer is DONE).

        In lockstep exactly one block is outstanding (``sent_upto == acked + 1``), so the
        only new ACK is the one for it; a duplicate or an older one is ignored, as
        ``on_ack`` does (answering a duplicate would start the sorcerer's apprentice
        cascade)."""
        acked = self.acked
        if (wire - acked) & 0xFFFF != 1:
            return None
        acked += 1
        self.acked = acked
        self.attempts = 0
        if acked >= self.last:
            self.state = State.DONE
            self.deadline = None
            return None
        self.sent_upto = acked + 1
        self.deadline = now + self._timeout
        packets = self._packets
        if packets is not None:
            return packets[acked]  # block acked + 1
        return self._block(acked + 1)

    def on_timer(self, now: float) -> Output:
        if self.deadline is None or now < self.deadline:
            return Output()
        if self.attempts >= self.retries:
            msg = f"timed out after {self.retries} retransmissions"
            return self._fail(msg, [encode_error(ErrorCode.NOT_DEFINED, msg)])
        self.attempts += 1
        if self.state is State.WAIT_OACK_ACK:
            self.deadline = now + self.neg.timeout
            return Output(send=[encode_oack(self.neg.oack)])
        return Output(send=self._send_window(now))


def to_netascii(data: bytes) -> bytes:
    """RFC 764 NVT-ASCII as netascii mode requires: LF -> CR LF, a bare CR -> CR NUL."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class ReadRequest:
    """A read request that passed the policy; the transport now looks ``parts`` up under the
    root, then calls ``negotiate`` with the size it will serve (``to_netascii`` first when
    ``netascii``), or answers ``file_refused``."""

    request: Request
    parts: tuple[str, ...]

    @property
    def filename(self) -> str:
        return self.request.filename

    @property
    def netascii(self) -> bool:
        return self.request.mode == "netascii"


@dataclass(frozen=True)
class Refused:
    code: ErrorCode
    message: str
    filename: str | None = None

    def packet(self) -> bytes:
        return encode_error(self.code, self.message)


@dataclass(frozen=True)
class Ignored:
    """Nothing to answer."""

    reason: str


def handle_request(data: bytes) -> ReadRequest | Refused | Ignored:
    """Policy for a datagram arriving on the listening port: a read to serve, a refusal to
    send, or nothing to answer."""
    try:
        pkt = decode(data)
    except MalformedTftp as exc:
        return Refused(ErrorCode(exc.code), exc.detail)
    if not isinstance(pkt, Request):
        # ERRORs are never answered (RFC 1350); stray ACKs come from clients that just got an
        # ERROR from this port (tftp-hpa ACKs it). Answering either would start a ping-pong.
        return Ignored(f"{type(pkt).__name__} on the listening port")
    if not pkt.is_read:
        return Refused(ErrorCode.ACCESS_VIOLATION, "read-only server: writes refused", pkt.filename)
    if pkt.mode == "mail":
        return Refused(ErrorCode.ILLEGAL_OPERATION, "mail mode is not supported", pkt.filename)
    try:
        parts = safe_parts(pkt.filename)
    except TftpProtocolError as exc:
        return Refused(exc.code, exc.message, pkt.filename)
    return ReadRequest(pkt, parts)


def file_refused(read: ReadRequest, message: str, *, missing: bool) -> Refused:
    """The answer when the transport finds nothing servable under the root for ``read``:
    file not found when nothing is there, access violation when the name leads outside the
    root or cannot be read."""
    code = ErrorCode.FILE_NOT_FOUND if missing else ErrorCode.ACCESS_VIOLATION
    return Refused(code, message, read.filename)
