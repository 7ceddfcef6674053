"""Is the target disk safe to overwrite? Decided from ``lsblk -J`` and ``findmnt`` output.

Pure: the host's answers go in, a list of reasons to refuse comes out (empty: go ahead).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

LSBLK_COLUMNS = "NAME,PATH,TYPE,SIZE,RO,MOUNTPOINT,PKNAME"
"""Columns asked of ``lsblk -J -b``: MOUNTPOINT (one per device) exists in every util-linux
with JSON output; swap shows as ``[SWAP]``."""


@dataclass(frozen=True)
class BlockDevice:
    name: str
    path: str
    type: str
    size: int
    read_only: bool
    mountpoint: str | None
    children: tuple[BlockDevice, ...] = field(default=())

    def walk(self) -> Iterator[BlockDevice]:
        yield self
        for c in self.children:
            yield from c.walk()


class LsblkParseError(ValueError):
    pass


def _device(obj: Any) -> BlockDevice:
    if not isinstance(obj, dict) or "name" not in obj:
        raise LsblkParseError(f"unexpected lsblk entry {obj!r:.120}")
    ro = obj.get("ro")
    return BlockDevice(
        name=str(obj["name"]),
        path=str(obj.get("path") or f"/dev/{obj['name']}"),
        type=str(obj.get("type") or ""),
        size=int(obj.get("size") or 0),
        read_only=ro in (True, 1, "1", "true"),
        mountpoint=obj.get("mountpoint") or None,
        children=tuple(_device(c) for c in obj.get("children") or ()),
    )


def parse_lsblk(text: str) -> list[BlockDevice]:
    """The devices of ``lsblk -J -b -o LSBLK_COLUMNS`` (older lsblk print sizes and RO as
    strings; both forms are read)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise LsblkParseError(f"lsblk output is not JSON ({exc})") from None
    devices = doc.get("blockdevices") if isinstance(doc, dict) else None
    if not isinstance(devices, list):
        raise LsblkParseError("lsblk output has no 'blockdevices' list")
    return [_device(d) for d in devices]


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _base(source: str) -> str:
    """``/dev/sda2[/@rootfs]`` (findmnt's btrfs subvolume form) -> ``/dev/sda2``."""
    return source.split("[", 1)[0].strip()


def refusals(devices: list[BlockDevice], disk: str, need: int, root_source: str) -> list[str]:
    """Why ``disk`` must not be overwritten with an image of ``need`` bytes (empty: it may).

    ``devices`` is lsblk's answer for that disk (its partitions and holders as children);
    ``root_source`` what ``findmnt -n -o SOURCE /`` printed on the host."""
    target = next((d for d in devices if disk in (d.path, f"/dev/{d.name}")), None)
    if target is None:
        return [f"{disk} is not a block device on the host"]
    reasons: list[str] = []
    if target.type not in ("disk", "loop"):
        reasons.append(f"{disk} is a {target.type or 'device of unknown type'}, not a whole "
                       "disk")
    if target.read_only:
        reasons.append(f"{disk} is read-only")
    if target.size < need:
        reasons.append(f"{disk} is too small: {human_size(target.size)} ({target.size} bytes) "
                       f"< the image's {human_size(need)} ({need} bytes)")
    root = _base(root_source)
    for dev in target.walk():
        what = disk if dev is target else f"{dev.path} on {disk}"
        if root and root in (dev.path, f"/dev/{dev.name}"):
            reasons.append(f"{disk} holds the running root filesystem ({dev.path} is "
                           "mounted at /); boot a rescue system to install over it")
        elif dev.mountpoint == "[SWAP]":
            reasons.append(f"{what} is in use as swap")
        elif dev.mountpoint:
            reasons.append(f"{what} is mounted at {dev.mountpoint}")
    return reasons
