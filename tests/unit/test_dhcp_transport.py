"""DHCP transport without sockets: a receive batch's replies leave together, in order, after
the batch; a datagram handled outside a batch is answered at once; a failed send is counted."""

from __future__ import annotations

import ipaddress

from cloudctl.boot.dhcp import codec
from cloudctl.boot.dhcp.codec import DhcpMessage, decode, encode
from cloudctl.boot.dhcp.config import DhcpConfig
from cloudctl.boot.dhcp.transport import BATCH, DhcpServer

IP = ipaddress.IPv4Address
CFG = DhcpConfig(
    mode="full",
    interface="eth0",
    server_ip=IP("10.20.0.2"),
    subnet=ipaddress.IPv4Network("10.20.0.0/24"),
    dynamic_range=(IP("10.20.0.100"), IP("10.20.0.199")),
)


def discover(i: int) -> bytes:
    chaddr = bytes([2, 0, 0, 0, 0, i])
    return encode(DhcpMessage(op=1, xid=i, chaddr=chaddr, flags=0x8000, options=((53, b"\x01"),)))


class FakeSocket:
    """recvfrom from a queue (BlockingIOError when empty); sendto recorded with the number of
    datagrams received by then."""

    def __init__(self, datagrams: list[bytes], fail_sends: bool = False) -> None:
        self.queue = list(datagrams)
        self.received = 0
        self.sent: list[tuple[int, bytes, tuple[str, int]]] = []
        self.fail_sends = fail_sends

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        if not self.queue:
            raise BlockingIOError
        self.received += 1
        return self.queue.pop(0), ("0.0.0.0", 68)

    def sendto(self, data: bytes, dest: tuple[str, int]) -> int:
        if self.fail_sends:
            raise OSError("no buffer space")
        self.sent.append((self.received, data, dest))
        return len(data)


def server(sock: FakeSocket) -> DhcpServer:
    srv = DhcpServer(CFG)
    srv._socks[67] = sock  # type: ignore[assignment]
    return srv


def test_batch_replies_leave_after_the_batch_in_order():
    sock = FakeSocket([discover(i) for i in range(1, 6)])
    srv = server(sock)
    srv._readable(sock, 67)  # type: ignore[arg-type]
    assert [received for received, _, _ in sock.sent] == [5] * 5  # all after the last receive
    offers = [decode(data) for _, data, _ in sock.sent]
    assert [m.xid for m in offers] == [1, 2, 3, 4, 5]
    assert all(m.message_type == codec.OFFER for m in offers)
    assert {dest for _, _, dest in sock.sent} == {("255.255.255.255", 68)}
    assert srv.stats.received == srv.stats.replies == 5 and srv._outbox is None


def test_a_batch_is_at_most_batch_datagrams():
    sock = FakeSocket([discover(i % 250 + 1) for i in range(BATCH + 3)])
    srv = server(sock)
    srv._readable(sock, 67)  # type: ignore[arg-type]
    assert len(sock.sent) == BATCH and len(sock.queue) == 3
    srv._readable(sock, 67)  # type: ignore[arg-type]
    assert len(sock.sent) == BATCH + 3


def test_handle_outside_a_batch_answers_at_once():
    sock = FakeSocket([])
    srv = server(sock)
    decision = srv.handle(discover(7), ("0.0.0.0", 68), 67)
    assert decision is not None and decision.event == "dhcp-offer"
    assert len(sock.sent) == 1 and decode(sock.sent[0][1]).xid == 7


def test_failed_sends_are_counted_not_raised():
    sock = FakeSocket([discover(1), discover(2)], fail_sends=True)
    srv = server(sock)
    srv._readable(sock, 67)  # type: ignore[arg-type]
    assert srv.stats.send_errors == 2 and srv.stats.replies == 0
