"""The racks cloudctl drives: one interface (``Rack``), chosen once at the CLI edge."""

from __future__ import annotations

from pathlib import Path

from ..inventory.models import Inventory
from .base import BootOutcome, Notify, Rack
from .emulated import EmulatedRack
from .metal import MetalRack

KINDS = ("metal", "emulated")


def rack_for(
    kind: str, inventory: Inventory, *, inventory_path: Path, cluster_dir: Path,
    secrets_dir: Path,
) -> Rack:
    """The rack of ``kind`` for this inventory and cluster directory."""
    if kind == "emulated":
        return EmulatedRack(inventory, cluster_dir, inventory_path=inventory_path,
                            secrets_dir=secrets_dir)
    if kind == "metal":
        return MetalRack(inventory, cluster_dir)
    raise ValueError(f"unknown rack kind {kind!r} (known: {', '.join(KINDS)})")


__all__ = ["KINDS", "BootOutcome", "EmulatedRack", "MetalRack", "Notify", "Rack", "rack_for"]
