"""Install-disk resolution as Talos does it (pure).

``machine.install.disk`` names a device path that must exist; ``machine.install.diskSelector``
picks the first disk (in the order the node lists them) on which every given field matches:
``size`` with an optional comparison (``>= 100GB``; units as go-humanize parses them: kB/MB/GB
are powers of 1000, KiB/MiB/GiB of 1024), ``type`` (ssd, hdd, nvme, sd), and glob patterns for
``model``, ``serial``, ``wwid``, ``name``, ``modalias``, ``uuid`` and ``busPath``. Read-only
and CD-ROM devices are never install targets.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from ..inventory.models import DiskSelector, Node
from .client import DiskInfo

_UNITS = {
    "": 1, "B": 1,
    "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4, "PB": 1000**5,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4, "PiB": 1024**5,
}
_SIZE_RE = re.compile(r"^\s*(>=|<=|>|<|==)?\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size_condition(text: str) -> tuple[str, int]:
    """'>= 100GB' -> ('>=', 100_000_000_000); no operator means '=='."""
    m = _SIZE_RE.match(text)
    if not m or m.group(3) not in _UNITS:
        raise ValueError(f"size {text!r} is not like '>= 100GB'")
    return m.group(1) or "==", int(float(m.group(2)) * _UNITS[m.group(3)])


def _size_ok(cond: str, size: int) -> bool:
    op, want = parse_size_condition(cond)
    return {
        "==": size == want, ">=": size >= want, "<=": size <= want, ">": size > want,
        "<": size < want,
    }[op]


_TYPE_NAMES = {"ssd": "SSD", "hdd": "HDD", "nvme": "NVME", "sd": "SD"}


def selector_matches(selector: DiskSelector, disk: DiskInfo) -> bool:
    """Whether every field the selector gives matches ``disk``."""
    if disk.readonly or disk.type == "CD":
        return False
    if selector.size is not None and not _size_ok(selector.size, disk.size):
        return False
    if selector.type is not None and disk.type != _TYPE_NAMES[selector.type]:
        return False
    globs = {
        "model": disk.model, "serial": disk.serial, "wwid": disk.wwid, "name": disk.name,
        "modalias": disk.modalias, "uuid": disk.uuid, "bus_path": disk.bus_path,
    }
    for attr, value in globs.items():
        pattern = getattr(selector, attr)
        if pattern is not None and not fnmatch.fnmatchcase(value, pattern):
            return False
    return True


def describe_selector(selector: DiskSelector) -> str:
    parts = [f"{k}={v!r}" for k, v in selector.model_dump(by_alias=True).items() if v is not None]
    return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True)
class DiskChoice:
    disk: DiskInfo | None
    problem: str | None


def resolve_install_disk(node: Node, disks: list[DiskInfo]) -> DiskChoice:
    """The disk Talos would install ``node`` on, or why there is none (names node and input)."""
    if node.install_disk:
        for d in disks:
            if d.device_name == node.install_disk:
                return DiskChoice(d, None)
        have = ", ".join(d.device_name for d in disks) or "none"
        return DiskChoice(None, f"node {node.name}: installDisk {node.install_disk} not found "
                                f"(disks: {have})")
    if node.install_disk_selector is not None:
        for d in disks:
            if selector_matches(node.install_disk_selector, d):
                return DiskChoice(d, None)
        have = "; ".join(
            f"{d.device_name} {d.type} {d.size} bytes model={d.model!r}" for d in disks
        ) or "none"
        return DiskChoice(None, f"node {node.name}: installDiskSelector "
                                f"{describe_selector(node.install_disk_selector)} matches no disk "
                                f"(disks: {have})")
    return DiskChoice(None, f"node {node.name}: neither installDisk nor installDiskSelector given")


def resolve_config_install_disk(
    install: dict[str, object], disks: list[DiskInfo]
) -> DiskInfo | None:
    """Same resolution from a machine config's ``machine.install`` section."""
    disk = install.get("disk")
    if isinstance(disk, str) and disk:
        return next((d for d in disks if d.device_name == disk), None)
    sel = install.get("diskSelector")
    if isinstance(sel, dict) and sel:
        selector = DiskSelector.model_validate(sel)
        return next((d for d in disks if selector_matches(selector, d)), None)
    return None
