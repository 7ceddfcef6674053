"""The racks cloudctl drives: one interface (``Rack``), chosen once at the CLI edge."""

from __future__ import annotations

from pathlib import Path

from ..inventory.models import Inventory
from .base import BootOutcome, NodeNotify, Notify, Rack
from .emulated import EmulatedRack
from .lab import LabRack
from .metal import MetalRack

KINDS = ("metal", "emulated", "lab")


def rack_for(
    kind: str, inventory: Inventory, *, inventory_path: Path, cluster_dir: Path,
    secrets_dir: Path, assets_given: bool = False,
) -> Rack:
    """The rack of ``kind`` for this inventory and cluster directory. ``assets_given``: the
    kernel and initramfs come from the command line (metal and lab racks). A lab rack moves
    the process into the lab's network namespace (``LabRack.enter``)."""
    if kind == "emulated":
        return EmulatedRack(inventory, cluster_dir, inventory_path=inventory_path,
                            secrets_dir=secrets_dir)
    if kind == "metal":
        return MetalRack(inventory, cluster_dir, assets_given=assets_given)
    if kind == "lab":
        lab = LabRack(inventory, cluster_dir, assets_given=assets_given)
        lab.enter()
        return lab
    raise ValueError(f"unknown rack kind {kind!r} (known: {', '.join(KINDS)})")


__all__ = ["KINDS", "BootOutcome", "EmulatedRack", "LabRack", "MetalRack", "NodeNotify",
           "Notify", "Rack", "rack_for"]
