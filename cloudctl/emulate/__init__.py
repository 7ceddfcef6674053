"""Rack emulators for CI and rehearsal: Talos nodes speaking the real API over real TLS."""

from .rack_control import RackInfo, read_rack, start_rack, stop_rack
from .talos_node import EmulatedNode, Faults
from .talos_rack import Rack, loopback_alias

__all__ = [
    "EmulatedNode",
    "Faults",
    "Rack",
    "RackInfo",
    "loopback_alias",
    "read_rack",
    "start_rack",
    "stop_rack",
]
