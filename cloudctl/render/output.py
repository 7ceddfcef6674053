"""Writing a render to disk atomically, and planning what a render would change.

The output directory belongs to cloudctl: it is replaced as a whole. ``write_tree`` renders into
a sibling temp directory, fsyncs it, then swaps it in (``renameat2(RENAME_EXCHANGE)`` where the
kernel has it, otherwise two renames with recovery on the next run), so a failed or interrupted
render leaves the previous tree intact. A directory that is not a cloudctl render (no marker
file) is never replaced.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import difflib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import RenderError
from .files import Files

MARKER = ".cloudctl-render.json"


def _check_relpath(rel: str) -> None:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or rel != p.as_posix():
        raise RenderError(f"renderer produced an unsafe path {rel!r}")


def marker_for(files: Files, cluster: str) -> bytes:
    index = {
        rel: {"sha256": hashlib.sha256(f.data).hexdigest(), "secret": f.secret}
        for rel, f in sorted(files.items())
    }
    return (
        json.dumps({"cluster": cluster, "files": index}, indent=2, sort_keys=True) + "\n"
    ).encode()


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Change:
    path: str
    kind: str  # "added" | "changed" | "removed"
    added_lines: int = 0
    removed_lines: int = 0
    secret: bool = False

    def summary(self) -> str:
        sign = {"added": "+", "changed": "~", "removed": "-"}[self.kind]
        detail = ""
        if self.kind == "changed":
            detail = f" (+{self.added_lines} -{self.removed_lines} lines)"
        elif self.kind == "added":
            detail = f" ({self.added_lines} lines)"
        elif self.kind == "removed":
            detail = f" ({self.removed_lines} lines)"
        tag = " [secret]" if self.secret else ""
        return f"{sign} {self.path}{detail}{tag}"


@dataclass(frozen=True)
class Plan:
    out_dir: Path
    changes: tuple[Change, ...] = field(default_factory=tuple)
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not self.changes

    def lines(self) -> list[str]:
        if self.empty:
            return [f"{self.out_dir}: up to date ({self.unchanged} files unchanged)"]
        counts = {
            k: sum(1 for c in self.changes if c.kind == k) for k in ("added", "changed", "removed")
        }
        head = (
            f"{self.out_dir}: {counts['added']} to add, {counts['changed']} to change, "
            f"{counts['removed']} to remove, {self.unchanged} unchanged"
        )
        return [head, *(c.summary() for c in self.changes)]


def _line_count(data: bytes) -> int:
    return len(data.splitlines())


def _existing_files(out_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if not out_dir.is_dir():
        return found
    for root, _dirs, names in os.walk(out_dir):
        for name in names:
            p = Path(root) / name
            rel = p.relative_to(out_dir).as_posix()
            if rel == MARKER:
                continue
            found[rel] = p
    return found


def plan_tree(files: Files, out_dir: Path) -> Plan:
    """What writing ``files`` to ``out_dir`` would change. Reads only; never prints content."""
    existing = _existing_files(out_dir)
    changes: list[Change] = []
    unchanged = 0
    for rel in sorted(set(files) | set(existing)):
        new = files.get(rel)
        old_path = existing.get(rel)
        if new is not None and old_path is None:
            changes.append(Change(rel, "added", _line_count(new.data), 0, new.secret))
            continue
        assert old_path is not None
        old = old_path.read_bytes()
        if new is None:
            changes.append(Change(rel, "removed", 0, _line_count(old), False))
            continue
        if old == new.data:
            unchanged += 1
            continue
        plus = minus = 0
        for line in difflib.unified_diff(
            old.decode("utf-8", "replace").splitlines(),
            new.data.decode("utf-8", "replace").splitlines(),
            lineterm="",
            n=0,
        ):
            if line.startswith("+") and not line.startswith("+++"):
                plus += 1
            elif line.startswith("-") and not line.startswith("---"):
                minus += 1
        changes.append(Change(rel, "changed", plus, minus, new.secret))
    return Plan(out_dir=out_dir, changes=tuple(changes), unchanged=unchanged)


# --------------------------------------------------------------------------- write


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_files(root: Path, files: Files) -> None:
    root.mkdir(mode=0o700)
    dirs: set[Path] = {root}
    for rel, f in sorted(files.items()):
        _check_relpath(rel)
        target = root / rel
        for parent in reversed(target.relative_to(root).parents[:-1]):
            d = root / parent
            if d not in dirs:
                d.mkdir(exist_ok=True, mode=0o755)
                dirs.add(d)
        mode = 0o600 if f.secret else 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(f.data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in dirs:
        _fsync_dir(d)
    # the root holds secret files: keep it private
    os.chmod(root, 0o700)


def _sibling(out_dir: Path, tag: str) -> Path:
    return out_dir.parent / f".{out_dir.name}.{tag}"


def recover(out_dir: Path) -> None:
    """Finish or undo an interrupted swap left by a crash between two renames."""
    old = _sibling(out_dir, "old")
    if not out_dir.exists() and old.is_dir():
        os.rename(old, out_dir)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)
    tmp = _sibling(out_dir, "tmp")
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)


def write_tree(files: Files, out_dir: Path, cluster: str) -> None:
    """Atomically replace ``out_dir`` with exactly ``files`` (+ the marker)."""
    out_dir = out_dir.absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise RenderError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
            raise RenderError(
                f"{out_dir} is not empty and was not written by cloudctl render "
                f"(no {MARKER}); refusing to replace it"
            )
    tmp = _sibling(out_dir, "tmp")
    all_files = dict(files)
    from .files import RenderedFile

    all_files[MARKER] = RenderedFile(marker_for(files, cluster))
    try:
        _write_files(tmp, all_files)
        if out_dir.exists():
            if _exchange(tmp, out_dir):
                shutil.rmtree(tmp)
            else:
                old = _sibling(out_dir, "old")
                os.rename(out_dir, old)
                os.rename(tmp, out_dir)
                shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
        _fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
