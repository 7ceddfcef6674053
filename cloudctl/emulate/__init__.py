"""Rack emulators for CI and rehearsal: Talos nodes speaking the real API over real TLS."""

from .talos_node import EmulatedNode, Faults
from .talos_rack import Rack, loopback_alias

__all__ = ["EmulatedNode", "Faults", "Rack", "loopback_alias"]
