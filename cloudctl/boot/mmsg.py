"""Batched UDP I/O on Linux: recvmmsg(2) and sendmmsg(2) through ctypes.

Python's socket module binds neither. A server answering many peers on one socket then makes
two system calls per batch of datagrams instead of two per datagram, and its peers' wake-ups
happen inside one call. The TFTP server uses this for every transfer's ACKs and DATA blocks.

All buffers are allocated once per ``Batch``. Received datagrams are read in place (``view``,
``lengths``, ``names``), without a Python object per datagram unless asked for (``data``).
Datagrams to send are queued with the bytes object itself (the send vector points into it and
keeps it alive) and the ``Destination`` of its peer; ``flush`` sends the queue and reports the
ones the kernel refused.
The structures follow the Linux ABI of 64-bit little- and big-endian targets (glibc and musl
agree on the layout of ``struct msghdr`` there).
"""

from __future__ import annotations

import ctypes
import errno
import socket
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Owner = TypeVar("Owner")


class _RecvIOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _SendIOVec(ctypes.Structure):
    # c_char_p: assigning a bytes object points into it and keeps a reference
    _fields_ = [("base", ctypes.c_char_p), ("len", ctypes.c_size_t)]


def _msghdr(iovec: type[ctypes.Structure]) -> tuple[type[ctypes.Structure], type[ctypes.Structure]]:
    class MsgHdr(ctypes.Structure):
        _fields_ = [
            ("name", ctypes.c_void_p),
            ("namelen", ctypes.c_uint32),
            ("iov", ctypes.POINTER(iovec)),
            ("iovlen", ctypes.c_size_t),
            ("control", ctypes.c_void_p),
            ("controllen", ctypes.c_size_t),
            ("flags", ctypes.c_int),
        ]

    class MMsgHdr(ctypes.Structure):
        _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]

    return MsgHdr, MMsgHdr


_RecvHdr, _RecvMMsg = _msghdr(_RecvIOVec)
_, _SendMMsg = _msghdr(_SendIOVec)
_MMSG_SIZE = ctypes.sizeof(_RecvMMsg)
_LEN_OFFSET: int = _RecvMMsg.len.offset  # type: ignore[attr-defined]
_FLAGS_OFFSET: int = _RecvMMsg.hdr.offset + _RecvHdr.flags.offset  # type: ignore[attr-defined]
LEN_STRIDE = _MMSG_SIZE >> 2
LEN_INDEX = _LEN_OFFSET >> 2
MSG_TRUNC = 0x20


def _libc_calls() -> tuple[Callable[..., int], Callable[..., int]] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recv.restype = ctypes.c_int
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    return recv, send


_CALLS = _libc_calls()
AVAILABLE = _CALLS is not None and _MMSG_SIZE == 64
"""recvmmsg/sendmmsg are callable here and the structures have the expected size."""


def name_size(family: int) -> int:
    return 28 if family == socket.AF_INET6 else 16


Address = tuple[Any, ...]
"""A socket-module address: (host, port), or (host, port, flowinfo, scope_id) for IPv6."""


def sockaddr(family: int, address: Address) -> bytes:
    """The ``struct sockaddr_in``/``sockaddr_in6`` bytes of a socket-module address."""
    port = int(address[1]).to_bytes(2, "big")
    fam = family.to_bytes(2, sys.byteorder)  # sa_family_t is in host order, the port is not
    if family == socket.AF_INET6:
        host = str(address[0]).split("%", 1)[0]  # recvfrom spells a link-local's scope so
        flow = int(address[2]) if len(address) > 2 else 0
        scope = int(address[3]) if len(address) > 3 else 0
        return (fam + port + flow.to_bytes(4, "big") + socket.inet_pton(family, host)
                + scope.to_bytes(4, sys.byteorder))
    return fam + port + socket.inet_pton(family, address[0]) + bytes(8)


def key_end(family: int) -> int:
    """``name[2:key_end]`` identifies a peer: port and address, and for IPv6 the flow label
    (0 unless a socket asks for IPV6_FLOWINFO) and scope; not the padding of sockaddr_in."""
    return 28 if family == socket.AF_INET6 else 8


def peer_key(name: bytes, family: int) -> bytes:
    return name[2 : key_end(family)]


class Destination:
    """A peer's sockaddr kept where sendmmsg can point at it: ``address`` is what ``queue``
    takes, valid as long as this object lives."""

    __slots__ = ("_buffer", "address")

    def __init__(self, family: int, peer: Address) -> None:
        name = sockaddr(family, peer)
        self._buffer = ctypes.create_string_buffer(name, len(name))
        self.address = ctypes.addressof(self._buffer)


def peer_address(name: bytes, family: int) -> Address:
    """The socket-module address of a sockaddr (IPv6 with its flow info and scope, which a
    link-local destination needs)."""
    port = int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET6:
        return (socket.inet_ntop(family, name[8:24]), port, int.from_bytes(name[4:8], "big"),
                int.from_bytes(name[24:28], sys.byteorder))
    return socket.inet_ntop(family, name[4:8]), port


class Batch(Generic[Owner]):
    """Receive and send vectors of ``size`` datagrams on one socket of ``family``."""

    def __init__(self, family: int, size: int = 64, slot: int = 1500) -> None:
        if _CALLS is None or not AVAILABLE:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        self._recvmmsg, self._sendmmsg = _CALLS
        self.family = family
        self.size = size
        self.slot = slot
        self._name_size = name_size(family)
        # receive side: one data buffer and one name buffer, cut into slots
        self._data = ctypes.create_string_buffer(size * slot)
        self._names = ctypes.create_string_buffer(size * self._name_size)
        self._riov = (_RecvIOVec * size)()
        self._rmsg = (_RecvMMsg * size)()
        data_at, names_at = ctypes.addressof(self._data), ctypes.addressof(self._names)
        for i in range(size):
            self._riov[i].base = data_at + i * slot
            self._riov[i].len = slot
            hdr = self._rmsg[i].hdr
            hdr.name = names_at + i * self._name_size
            hdr.namelen = self._name_size
            hdr.iov = ctypes.pointer(self._riov[i])
            hdr.iovlen = 1
        self.view = memoryview(self._data).cast("B")
        """The received bytes; datagram i starts at ``offset(i)``."""
        self._name_view = memoryview(self._names).cast("B")
        self.lengths = memoryview(self._rmsg).cast("B").cast("I")
        """``lengths[i * LEN_STRIDE + LEN_INDEX]``: bytes received in datagram i."""
        self.name_size = self._name_size
        self.key_end = key_end(family)
        # send side
        self._siov = (_SendIOVec * size)()
        self._smsg = (_SendMMsg * size)()
        self._siovs = [self._siov[i] for i in range(size)]
        self._shdrs = [self._smsg[i].hdr for i in range(size)]
        for i in range(size):
            self._shdrs[i].iov = ctypes.pointer(self._siov[i])
            self._shdrs[i].iovlen = 1
            self._shdrs[i].namelen = self._name_size
        self.owners: list[Owner | None] = [None] * size
        self.queued = 0

    # ------------------------------------------------------------------ receive

    def receive(self, fd: int) -> int:
        """Datagrams now waiting on ``fd`` (non-blocking), up to ``size``; 0 when none.
        Other errors raise OSError, as socket.recv would. (The kernel rewrites each
        ``msg_namelen``, always to the family's sockaddr size on a socket of one family: the
        values set once stay right.)"""
        n = self._recvmmsg(fd, self._rmsg, self.size, socket.MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")
        return n

    def names(self, n: int) -> bytes:
        """The senders' sockaddrs of the first n datagrams; datagram i's peer key is
        ``names[i * name_size + 2 : i * name_size + key_end]``."""
        return bytes(self._name_view[: n * self._name_size])

    def length(self, i: int) -> int:
        """Bytes received in datagram i (the slot size when it was cut: see ``truncated``)."""
        return self.lengths[i * LEN_STRIDE + LEN_INDEX]

    def truncated(self, i: int) -> bool:
        return bool(self.lengths[i * LEN_STRIDE + (_FLAGS_OFFSET >> 2)] & MSG_TRUNC)

    def data(self, i: int) -> bytes:
        at = i * self.slot
        return bytes(self.view[at : at + self.length(i)])

    def key(self, i: int) -> bytes:
        """``peer_key`` of datagram i's sender."""
        at = i * self._name_size
        return peer_key(bytes(self._name_view[at : at + self._name_size]), self.family)

    def sender(self, i: int) -> Address:
        at = i * self._name_size
        return peer_address(bytes(self._name_view[at : at + self._name_size]), self.family)

    # ------------------------------------------------------------------ send

    def queue(self, name: int, packet: bytes, owner: Owner) -> bool:
        """Queue ``packet`` to the ``Destination`` whose ``address`` is ``name``; True when the
        queue is full (``flush`` it before queueing more)."""
        j = self.queued
        iov = self._siovs[j]
        iov.base = packet
        iov.len = len(packet)
        self._shdrs[j].name = name
        self.owners[j] = owner
        self.queued = j + 1
        return j + 1 == self.size

    def flush(self, fd: int) -> list[tuple[Owner, int]]:
        """Send every queued datagram; the (owner, errno) of those the kernel refused. A full
        socket buffer drops the rest of the queue silently, like a lost datagram."""
        failed: list[tuple[Owner, int]] = []
        k, m = 0, self.queued
        while k < m:
            sent = self._sendmmsg(fd, ctypes.byref(self._smsg, k * _MMSG_SIZE), m - k, 0)
            if sent > 0:
                k += sent
                continue
            err = ctypes.get_errno() if sent < 0 else errno.EIO
            if err == errno.EINTR:
                continue
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                break
            owner = self.owners[k]
            if owner is not None:
                failed.append((owner, err))
            k += 1
        self.queued = 0
        return failed
