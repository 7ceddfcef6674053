"""One error tree for malformed packets of the boot protocols (DHCP, TFTP, HTTP).

The sans-IO codecs raise these when bytes from the network cannot be decoded. Each names the
protocol, the packet (``datagram from 10.0.0.9:68``, ``RRQ``, ``request head``) and, where one
is to blame, the field (``mode``, ``Content-Length``). They are ``InputError``s (invalid input,
exit code 2, message in the usual ``<source>: invalid: <where>: <problem>`` form) and
``ValueError``s, so code that only knows the standard library can still catch them.

Transports catch them per packet or per connection: a malformed packet is answered (TFTP ERROR,
HTTP 4xx) or dropped (DHCP) and the server carries on.
"""

from __future__ import annotations

from ..errors import InputError, Problem

__all__ = ["MalformedDhcp", "MalformedHttp", "MalformedPacket", "MalformedTftp"]


class MalformedPacket(InputError, ValueError):
    """Bytes that are not a well-formed packet of ``protocol``."""

    protocol = "packet"

    def __init__(self, problem: str, *, packet: str = "packet", field: str | None = None) -> None:
        self.problem = problem
        self.packet = packet
        self.field = field
        where = f"{packet} {field}" if field else packet
        self.detail = f"{where}: {problem}"
        """Where and what, without the protocol prefix (for protocol error messages)."""
        super().__init__(Problem(where, problem), source=self.protocol)


class MalformedDhcp(MalformedPacket):
    """A datagram that is not a well-formed BOOTP/DHCP message."""

    protocol = "dhcp"

    def __init__(self, problem: str, *, packet: str = "datagram", field: str | None = None) -> None:
        super().__init__(problem, packet=packet, field=field)


class MalformedTftp(MalformedPacket):
    """A datagram that is not a well-formed TFTP packet. ``code`` is the TFTP error code to
    answer with (4, illegal operation, unless said otherwise)."""

    protocol = "tftp"

    def __init__(
        self, problem: str, *, packet: str = "packet", field: str | None = None, code: int = 4
    ) -> None:
        super().__init__(problem, packet=packet, field=field)
        self.code = code


class MalformedHttp(MalformedPacket):
    """A request that is not well-formed HTTP/1.1, or one this server does not accept (a body).
    ``status`` is the response status to answer with; the connection is closed afterwards."""

    protocol = "http"
    close = True

    def __init__(
        self,
        problem: str,
        *,
        status: int = 400,
        packet: str = "request head",
        field: str | None = None,
    ) -> None:
        super().__init__(problem, packet=packet, field=field)
        self.status = status

    @property
    def reason(self) -> str:
        """Text for the error response body and the event detail."""
        return self.detail
