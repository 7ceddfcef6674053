"""DHCP for network boot: full (inventory MACs only) and proxy modes.

Public surface::

    decode(bytes) -> DhcpMessage; encode(DhcpMessage) -> bytes        # codec (lean, hot path)
    scapy_decode / scapy_encode                                       # reference codec (scapy)
    decide(msg, cfg, state, now, via=67, source=...) -> Decision      # policy (sans-IO)
    DhcpConfig, dhcp_config_from_inventory(inv, http_port, efi_binary)
    DhcpServer(cfg, on_event=...)  .start() / .stop()                 # asyncio transport
    probe(interface) / ensure_no_other_server(interface, force=...)   # rogue-DHCP probe
"""

from .codec import DhcpDecodeError, DhcpMessage, decode, encode, scapy_decode, scapy_encode
from .config import DhcpConfig, Reservation, dhcp_config_from_inventory
from .policy import Decision, LeaseState, LeaseUpdate, boot_choice, decide

__all__ = [
    "Decision",
    "DhcpConfig",
    "DhcpDecodeError",
    "DhcpMessage",
    "LeaseState",
    "LeaseUpdate",
    "Reservation",
    "boot_choice",
    "decide",
    "decode",
    "dhcp_config_from_inventory",
    "encode",
    "scapy_decode",
    "scapy_encode",
]
