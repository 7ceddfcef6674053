"""Writing a render to disk atomically, and planning what a render would change.

The output directory belongs to cloudctl: it is replaced as a whole. ``write_tree`` renders into
a sibling temp directory, fsyncs it, then swaps it in (``renameat2(RENAME_EXCHANGE)`` where the
kernel has it, otherwise two renames with recovery on the next run), so a failed or interrupted
render leaves the previous tree intact. A directory that is not a cloudctl render (no marker
file) is never replaced.
"""

from __future__ import annotations

import ctypes
import difflib
import functools
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import RenderError
from .files import Files, RenderedFile

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


@dataclass
class _Entry:
    """One file found in an existing output directory; its content is read at most once."""

    path: Path
    st: os.stat_result  # lstat: a symlink is never reused
    _data: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = self.path.read_bytes()
        return self._data

    def reusable_as(self, new: RenderedFile) -> bool:
        """Whether this very file (inode) can stand for ``new`` in the next tree: a regular
        file of ours, linked nowhere else, with the mode and the bytes ``new`` would get."""
        st = self.st
        return (
            stat.S_ISREG(st.st_mode)
            and stat.S_IMODE(st.st_mode) == _file_mode(new)
            and st.st_nlink == 1
            and st.st_uid == os.geteuid()
            and st.st_size == len(new.data)
            and self.data == new.data
        )


@dataclass
class _Survey:
    """What an output directory holds: files (marker included) and directories by relative
    path, and whether anything else is there (a symlink, a fifo, a wrong directory mode)."""

    files: dict[str, _Entry] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    odd: bool = False


def _survey(out_dir: Path, dir_mode: int | None = None) -> _Survey:
    found = _Survey()
    if not out_dir.is_dir():
        return found
    stack = [(out_dir, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            for e in it:
                rel = prefix + e.name
                if e.is_dir(follow_symlinks=False):
                    found.dirs.add(rel)
                    mode = stat.S_IMODE(e.stat(follow_symlinks=False).st_mode)
                    if dir_mode is not None and mode != dir_mode:
                        found.odd = True
                    stack.append((Path(e.path), rel + "/"))
                elif e.is_file():  # a symlink to a file is listed (and read) as before
                    found.files[rel] = _Entry(Path(e.path), e.stat(follow_symlinks=False))
                    if e.is_symlink():
                        found.odd = True
                else:
                    found.odd = True
    return found


def _plan(files: Files, out_dir: Path, survey: _Survey) -> Plan:
    existing = {rel: e for rel, e in survey.files.items() if rel != MARKER}
    changes: list[Change] = []
    unchanged = 0
    for rel in sorted(set(files) | set(existing)):
        new = files.get(rel)
        entry = existing.get(rel)
        if new is not None and entry is None:
            changes.append(Change(rel, "added", _line_count(new.data), 0, new.secret))
            continue
        assert entry is not None
        old = entry.data
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


def plan_tree(files: Files, out_dir: Path) -> Plan:
    """What writing ``files`` to ``out_dir`` would change. Reads only; never prints content."""
    return _plan(files, out_dir, _survey(out_dir))


# --------------------------------------------------------------------------- write


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # the symbols of the running process (libc included) without ctypes.util.find_library,
    # which runs ldconfig in a subprocess
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False if unsupported."""
    libc = _libc()
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(rc == 0)


def _syncfs(path: Path) -> bool:
    """syncfs(2) on the filesystem holding ``path``: returns once every dirty page and inode
    of that filesystem is on disk (errors reported since Linux 5.8). False if unsupported."""
    libc = _libc()
    fn = getattr(libc, "syncfs", None)
    if fn is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_mode(f: RenderedFile) -> int:
    return 0o600 if f.secret else 0o644


def _dir_mode() -> int:
    """The mode ``mkdir(0o755)`` gives under the current umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o755 & ~mask


def _tree_dirs(files: Files) -> set[str]:
    dirs: set[str] = set()
    for rel in files:
        parent = rel.rpartition("/")[0]
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = parent.rpartition("/")[0]
    return dirs


def _write_files(root: Path, files: Files, reuse: dict[str, _Entry]) -> None:
    """Build the tree at ``root``: files in ``reuse`` are hard links to the existing file (same
    inode: bytes, mode and mtime kept, nothing rewritten), the others are written anew.

    Durability is batched: no fsync per file. The tree only becomes visible through the swap
    in ``write_tree``, so what must hold is "everything under ``root`` is on disk before the
    swap is": one syncfs(2) of the filesystem gives exactly that for the whole batch (files,
    links and directories) at a fraction of 1,000 fsyncs. Without syncfs, every written file
    and every directory is fsynced, as before. Reused files were made durable by the render
    that wrote them."""
    root.mkdir(mode=0o700)
    dirs = [root, *(root / d for d in sorted(_tree_dirs(files)))]
    for d in dirs[1:]:
        d.mkdir(mode=0o755)
    written: list[Path] = []
    for rel, f in files.items():
        target = root / rel
        entry = reuse.get(rel)
        if entry is not None:
            try:
                os.link(entry.path, target, follow_symlinks=False)
                continue
            except OSError:
                pass  # a filesystem without hard links: write the bytes
        mode = _file_mode(f)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(f.data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)
        written.append(target)
    if not _syncfs(root):
        for path in written:
            _fsync_file(path)
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


def write_tree(files: Files, out_dir: Path, cluster: str) -> Plan:
    """Atomically replace ``out_dir`` with exactly ``files`` (+ the marker); returns the plan
    of what changed.

    When ``out_dir`` already holds exactly this render (same files, bytes, modes, marker and
    directories, nothing else), nothing is written: the tree and its mtimes stay as they are.
    Otherwise the new tree is built beside it, unchanged files as hard links to the current
    ones (not rewritten), and swapped in."""
    for rel in files:
        _check_relpath(rel)
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
    dir_mode = _dir_mode()
    survey = _survey(out_dir, dir_mode)
    plan = _plan(files, out_dir, survey)
    all_files = dict(sorted(files.items()))
    all_files[MARKER] = RenderedFile(marker_for(files, cluster))
    reuse = {
        rel: entry
        for rel, entry in survey.files.items()
        if rel in all_files and entry.reusable_as(all_files[rel])
    }
    if (
        len(reuse) == len(all_files) == len(survey.files)
        and not survey.odd
        and survey.dirs == _tree_dirs(all_files)
        and stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    ):
        return plan
    tmp = _sibling(out_dir, "tmp")
    try:
        _write_files(tmp, all_files, reuse)
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
    return plan
