"""The Talos disk image written by ``install-ssh``: a raw image, usually xz-compressed.

``inspect`` learns the raw size and SHA-256 by decompressing once and keeps the answer in a
sidecar file (``<image>.raw.json``, keyed by the compressed file's size and mtime), so later
installs know the size before streaming and the checksum to verify on the host. ``raw_chunks``
decompresses while reading; the bytes before a resume offset are decompressed and hashed but
not sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..atomic import write_atomic
from ..errors import InputError, Problem

CHUNK = 1 << 20
XZ_MAGIC = b"\xfd7zXZ\x00"


@dataclass(frozen=True)
class RawImage:
    path: Path
    """The file on disk (compressed or not)."""
    compressed: bool
    size: int
    """Bytes of raw disk content."""
    sha256: str
    """SHA-256 of the raw content."""


def _is_xz(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(XZ_MAGIC)) == XZ_MAGIC


def _open_raw(path: Path, compressed: bool) -> BinaryIO:
    return lzma.open(path, "rb") if compressed else path.open("rb")  # type: ignore[return-value]


def raw_chunks(image: RawImage, *, chunk: int = CHUNK) -> Iterator[bytes]:
    """The raw content, ``chunk`` bytes at a time (decompressed on the fly)."""
    try:
        with _open_raw(image.path, image.compressed) as f:
            while block := f.read(chunk):
                yield block
    except lzma.LZMAError as exc:
        raise InputError(Problem("image", f"{image.path}: corrupt xz data ({exc})")) from None


def prefix_sha256(image: RawImage, length: int) -> str:
    """SHA-256 of the first ``length`` raw bytes (to check what a host already has)."""
    h = hashlib.sha256()
    left = length
    for block in raw_chunks(image):
        if left <= 0:
            break
        h.update(block[:left])
        left -= len(block)
    return h.hexdigest()


def inspect(path: Path) -> RawImage:
    """Size and SHA-256 of the raw content of ``path`` (cached next to it)."""
    try:
        st = path.stat()
        compressed = _is_xz(path)
    except OSError as exc:
        raise InputError(Problem("image", f"{path}: {exc.strerror}")) from None
    sidecar = path.with_name(path.name + ".raw.json")
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        doc = json.loads(sidecar.read_text())
        if doc.get("source") == key:
            return RawImage(path, compressed, int(doc["raw_size"]), str(doc["raw_sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    h = hashlib.sha256()
    size = 0
    probe = RawImage(path, compressed, 0, "")
    for block in raw_chunks(probe):
        h.update(block)
        size += len(block)
    if size == 0:
        raise InputError(Problem("image", f"{path}: the image is empty"))
    image = RawImage(path, compressed, size, h.hexdigest())
    # a read-only cache still works; the next run decompresses again
    with contextlib.suppress(OSError):
        write_atomic(sidecar, json.dumps({"source": key, "raw_size": size,
                                          "raw_sha256": image.sha256}) + "\n", mode=0o644)
    return image
