"""Batched UDP I/O (recvmmsg/sendmmsg through ctypes) on real loopback sockets."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from cloudctl.boot import mmsg

pytestmark = pytest.mark.skipif(not mmsg.AVAILABLE, reason="needs recvmmsg/sendmmsg (Linux)")


def _udp(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(2)
    return s


@pytest.fixture()
def server() -> Iterator[socket.socket]:
    s = _udp()
    s.setblocking(False)
    yield s
    s.close()


def test_receive_reads_each_datagram_its_sender_and_length(server: socket.socket) -> None:
    a, b = _udp(), _udp()
    batch: mmsg.Batch[str] = mmsg.Batch(socket.AF_INET, size=8, slot=16)
    assert batch.receive(server.fileno()) == 0  # nothing waiting: 0, not an error
    sent = [(a, b"\x00\x04\x00\x01"), (b, b"hello"), (a, b"x" * 16), (b, b"y" * 40)]
    for sock, data in sent:
        sock.sendto(data, server.getsockname())
    n = batch.receive(server.fileno())
    assert n == 4
    names = batch.names(n)
    for i, (sock, data) in enumerate(sent):
        peer = sock.getsockname()
        assert batch.sender(i) == peer
        at = i * batch.name_size
        key = names[at + 2 : at + batch.key_end]
        assert key == batch.key(i) == mmsg.peer_key(mmsg.sockaddr(socket.AF_INET, peer),
                                                    socket.AF_INET)
        want = data[: batch.slot]
        assert batch.length(i) == len(want) and batch.data(i) == want
        assert batch.truncated(i) == (len(data) > batch.slot)
    assert batch.key(0) == batch.key(2) != batch.key(1)
    a.close()
    b.close()


def test_more_waiting_than_a_batch_comes_in_turns(server: socket.socket) -> None:
    c = _udp()
    for k in range(10):
        c.sendto(bytes([k]), server.getsockname())
    batch: mmsg.Batch[None] = mmsg.Batch(socket.AF_INET, size=4)
    got = []
    while n := batch.receive(server.fileno()):
        got += [batch.data(i) for i in range(n)]
    assert got == [bytes([k]) for k in range(10)]
    c.close()


def test_flush_sends_the_queue_in_order_to_each_destination(server: socket.socket) -> None:
    a, b = _udp(), _udp()
    na = mmsg.Destination(socket.AF_INET, a.getsockname())
    nb = mmsg.Destination(socket.AF_INET, b.getsockname())
    batch: mmsg.Batch[str] = mmsg.Batch(socket.AF_INET, size=3)
    full = [batch.queue(na.address, b"a1", "a"), batch.queue(nb.address, b"b1", "b")]
    full.append(batch.queue(na.address, bytes([7]) * 1000, "a"))
    assert full == [False, False, True]  # the third fills a batch of 3
    assert batch.flush(server.fileno()) == [] and batch.queued == 0
    assert batch.queue(na.address, b"a3", "a") is False
    assert batch.flush(server.fileno()) == []
    assert [a.recv(2000) for _ in range(3)] == [b"a1", bytes([7]) * 1000, b"a3"]
    assert b.recv(100) == b"b1"
    a.close()
    b.close()


def test_flush_names_the_refused_datagram_and_sends_the_rest(server: socket.socket) -> None:
    a = _udp()
    good = mmsg.Destination(socket.AF_INET, a.getsockname())
    bad = mmsg.Destination(socket.AF_INET, ("127.0.0.1", 0))
    batch: mmsg.Batch[str] = mmsg.Batch(socket.AF_INET, size=8)
    batch.queue(good.address, b"one", "first")
    batch.queue(bad.address, b"two", "to port 0")
    batch.queue(good.address, b"three", "third")
    assert batch.flush(server.fileno()) == [("to port 0", errno.EINVAL)]
    assert [a.recv(100), a.recv(100)] == [b"one", b"three"]
    a.close()


def test_ipv6_names_round_trip() -> None:
    try:
        s, c = _udp(socket.AF_INET6, "::1"), _udp(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    s.setblocking(False)
    c.sendto(b"six", s.getsockname())
    batch: mmsg.Batch[str] = mmsg.Batch(socket.AF_INET6, size=2)
    assert batch.receive(s.fileno()) == 1
    peer = c.getsockname()
    assert batch.sender(0) == peer and batch.data(0) == b"six"
    assert batch.key(0) == mmsg.peer_key(mmsg.sockaddr(socket.AF_INET6, peer), socket.AF_INET6)
    name = mmsg.Destination(socket.AF_INET6, peer)
    batch.queue(name.address, b"back", "c")
    assert batch.flush(s.fileno()) == [] and c.recv(10) == b"back"
    s.close()
    c.close()


@pytest.mark.parametrize(
    ("family", "addr", "back"),
    [
        (socket.AF_INET, ("10.20.0.11", 2070), None),
        (socket.AF_INET6, ("2001:db8::5", 69, 0, 0), None),
        (socket.AF_INET6, ("fe80::1", 69), ("fe80::1", 69, 0, 0)),
        # recvfrom spells a link-local peer with its scope: the scope id is what counts
        (socket.AF_INET6, ("fe80::1%lo", 1069, 0, 1), ("fe80::1", 1069, 0, 1)),
    ],
)
def test_sockaddr_and_peer_address_agree(family: int, addr: mmsg.Address,
                                         back: mmsg.Address | None) -> None:
    raw = mmsg.sockaddr(family, addr)
    assert len(raw) == mmsg.name_size(family)
    assert mmsg.peer_address(raw, family) == (back or addr)
