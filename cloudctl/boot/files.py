"""Served files, the I/O half of the boot servers' path policy (shared by TFTP and HTTP).

The protocol cores only check names lexically (``tftp_proto.safe_parts``, ``http_proto``'s
path decoding); here the checked parts are looked up under the served root with symlinks
resolved, so nothing outside the root is ever served, and files are read with pread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

__all__ = ["FileRefused", "FileSource", "resolve_under"]


class FileRefused(Exception):
    """A name that does not lead to a servable regular file under the root."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.message = message
        self.missing = missing
        """True: nothing servable is there (TFTP "file not found", HTTP 404). False: the name
        leads outside the root or is unreadable (TFTP "access violation")."""


def resolve_under(root: Path, parts: Sequence[str], *, name: str | None = None) -> Path:
    """The regular file ``root/parts...`` with symlinks resolved, or FileRefused.

    ``parts`` must already be lexically safe (no '', '.', '..', no separators). Refused:
    anything whose real path leaves the real root (a symlink pointing out), anything missing,
    and anything that is not a regular file. ``name`` is the requested name for messages.
    """
    shown = repr(name if name is not None else "/".join(parts))
    if not parts:
        raise FileRefused(f"path {shown} refused", missing=False)
    real_root = root.resolve()
    candidate = real_root.joinpath(*parts)
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise FileRefused(f"{shown} not found", missing=True) from None
    except (OSError, RuntimeError):
        raise FileRefused(f"{shown} unreadable", missing=False) from None
    if real != real_root and real_root not in real.parents:
        raise FileRefused(f"{shown} leaves the root", missing=False)
    try:
        st = real.stat()
    except OSError:
        raise FileRefused(f"{shown} not found", missing=True) from None
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{shown} is not a file", missing=True)
    return real


class FileSource:
    """A served file read with pread (no shared file position; safe for concurrent transfers).
    Satisfies ``tftp_proto.BlockSource``."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.size = os.fstat(self._fd).st_size

    @property
    def fileno(self) -> int:
        return self._fd

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
